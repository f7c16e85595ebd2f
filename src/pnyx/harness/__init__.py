"""Jepsen-style fault harness: real processes on separate network hosts (``pnyx test``)."""
