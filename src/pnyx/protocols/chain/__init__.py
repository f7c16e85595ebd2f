"""Chain replication and CRAQ with a configuration master (see README.md)."""

from __future__ import annotations

from pnyx.protocols.chain.client import ChainClient
from pnyx.protocols.chain.master import ChainMaster
from pnyx.protocols.chain.node import ChainNode

__all__ = ["ChainClient", "ChainMaster", "ChainNode"]
