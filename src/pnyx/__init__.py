"""pnyx: distributed-systems protocols as pure state machines, simulated and run for real."""

__version__ = "0.1.0"
