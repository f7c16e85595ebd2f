"""Simulator specs (clients, monitors) for each protocol."""
