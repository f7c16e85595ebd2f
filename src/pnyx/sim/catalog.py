"""The protocols the simulator knows, by name (imported lazily)."""

from __future__ import annotations

import importlib

from pnyx.sim.spec import ProtocolSpec

# name -> "module:attribute" of a ProtocolSpec
_SPECS: dict[str, str] = {
    "broadcast": "pnyx.sim.specs.broadcast:BROADCAST",
    "broadcast-broken": "pnyx.sim.specs.broadcast:BROADCAST_BROKEN",
    "raft": "pnyx.sim.specs.raft:RAFT",
}


def protocol_names() -> list[str]:
    """Names accepted by ``pnyx sim``."""
    return sorted(_SPECS)


def get_spec(name: str) -> ProtocolSpec:
    """The spec registered as ``name``; raises KeyError listing valid names otherwise."""
    try:
        target = _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}") from None
    module_name, attr = target.split(":")
    spec = getattr(importlib.import_module(module_name), attr)
    assert isinstance(spec, ProtocolSpec)
    return spec
