"""The protocols the simulator knows, by name (imported lazily)."""

from __future__ import annotations

import importlib

from pnyx.sim.spec import ProtocolSpec

# name -> "module:attribute" of a ProtocolSpec
_SPECS: dict[str, str] = {
    "broadcast": "pnyx.sim.specs.broadcast:BROADCAST",
    "broadcast-broken": "pnyx.sim.specs.broadcast:BROADCAST_BROKEN",
    "2pc": "pnyx.sim.specs.commit:TWO_PC",
    "3pc": "pnyx.sim.specs.commit:THREE_PC",
    "tso": "pnyx.sim.specs.tso:TSO",
    "causal-broadcast": "pnyx.sim.specs.crdt_ops:CAUSAL_BROADCAST",
    "causal-broadcast-broken": "pnyx.sim.specs.crdt_ops:CAUSAL_BROADCAST_BROKEN",
    "crdt-opcounter": "pnyx.sim.specs.crdt_ops:CRDT_OPCOUNTER",
    "crdt-opset": "pnyx.sim.specs.crdt_ops:CRDT_OPSET",
    "crdt-text": "pnyx.sim.specs.crdt_ops:CRDT_TEXT",
    "crdt-counter": "pnyx.sim.specs.crdt_state:CRDT_COUNTER",
    "crdt-counter-broken": "pnyx.sim.specs.crdt_state:CRDT_COUNTER_BROKEN",
    "crdt-map": "pnyx.sim.specs.crdt_state:CRDT_MAP",
    "crdt-set": "pnyx.sim.specs.crdt_state:CRDT_SET",
    "crdt-set-broken": "pnyx.sim.specs.crdt_state:CRDT_SET_BROKEN",
    "chain": "pnyx.sim.specs.chain:CHAIN",
    "craq": "pnyx.sim.specs.chain:CRAQ",
    "craq-broken": "pnyx.sim.specs.chain:CRAQ_BROKEN",
    "chain-register": "pnyx.sim.specs.chain:CHAIN_REGISTER",
    "craq-register": "pnyx.sim.specs.chain:CRAQ_REGISTER",
    "craq-register-broken": "pnyx.sim.specs.chain:CRAQ_REGISTER_BROKEN",
    "dynamo": "pnyx.sim.specs.dynamo:DYNAMO",
    "dynamo-sloppy": "pnyx.sim.specs.dynamo:DYNAMO_SLOPPY",
    "dynamo-weak": "pnyx.sim.specs.dynamo:DYNAMO_WEAK",
    "dynamo-weak-norepair": "pnyx.sim.specs.dynamo:DYNAMO_WEAK_NOREPAIR",
    "dynamo-sloppy-norepair": "pnyx.sim.specs.dynamo:DYNAMO_SLOPPY_NOREPAIR",
    "dynamo-norepair-noae": "pnyx.sim.specs.dynamo:DYNAMO_NOREPAIR_NOAE",
    "dynamo-r1w3": "pnyx.sim.specs.dynamo:DYNAMO_R1W3",
    "etcd": "pnyx.sim.specs.etcd:ETCD",
    "etcd-compact": "pnyx.sim.specs.etcd:ETCD_COMPACT",
    "primary-backup": "pnyx.sim.specs.primary_backup:PRIMARY_BACKUP",
    "primary-backup-broken": "pnyx.sim.specs.primary_backup:PRIMARY_BACKUP_BROKEN",
    "primary-backup-register": "pnyx.sim.specs.primary_backup:PRIMARY_BACKUP_REGISTER",
    "raft": "pnyx.sim.specs.raft:RAFT",
    "multiraft": "pnyx.sim.specs.multiraft:MULTIRAFT",
    "vr": "pnyx.sim.specs.vr:VR",
    "paxos": "pnyx.sim.specs.paxos:PAXOS",
    "fixed": "pnyx.sim.specs.membership:FIXED",
    "phi": "pnyx.sim.specs.membership:PHI",
    "swim": "pnyx.sim.specs.membership:SWIM",
    "swim-broken": "pnyx.sim.specs.membership:SWIM_BROKEN",
    "swim-lifeguard": "pnyx.sim.specs.membership:SWIM_LIFEGUARD",
}


def protocol_names() -> list[str]:
    """Names accepted by ``pnyx sim``."""
    return sorted(_SPECS)


MUTANT_SEPARATOR = "+"
"""``raft+vote_not_persisted`` (or ``raft+a,b``): Raft with those mutants (bug catalogue);
``etcd+watch_gap``: etcd over Raft with its own mutants (or Raft's)."""


def get_spec(name: str) -> ProtocolSpec:
    """The spec registered as ``name``; raises KeyError listing valid names otherwise.

    ``raft+MUTANT[,MUTANT...]`` is Raft broken on purpose by the named mutants, so a seed
    that a mutant test reports replays with one ``pnyx sim`` command; ``etcd+MUTANT`` the
    same for etcd (its mutants and Raft's).
    """
    if MUTANT_SEPARATOR in name:
        return _mutant_spec(name)
    try:
        target = _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}") from None
    module_name, attr = target.split(":")
    spec = getattr(importlib.import_module(module_name), attr)
    assert isinstance(spec, ProtocolSpec)
    return spec


# base name -> "module:function" building that protocol broken by a set of mutants; the
# function takes ``mutants`` (a frozenset of names) and ``name`` and raises KeyError naming
# the valid mutants when one is unknown.  Raft's and etcd's are below.
_MUTANT_SPECS: dict[str, str] = {
    "paxos": "pnyx.sim.specs.paxos:paxos_mutant_spec",
    "vr": "pnyx.sim.specs.vr:vr_mutant_spec",
    "2pc": "pnyx.sim.specs.commit:commit_mutant_spec",
    "3pc": "pnyx.sim.specs.commit:commit_mutant_spec",
    "tso": "pnyx.sim.specs.tso:tso_mutant_spec",
    "multiraft": "pnyx.sim.specs.multiraft:multiraft_mutant_spec",
}


def _mutant_spec(name: str) -> ProtocolSpec:
    base, _, listed = name.partition(MUTANT_SEPARATOR)
    mutants = frozenset(m for m in listed.split(",") if m)
    if base in _MUTANT_SPECS:
        if not mutants:
            raise KeyError(f"unknown protocol {name!r}: {base}+MUTANT[,MUTANT] needs a mutant")
        module_name, attr = _MUTANT_SPECS[base].split(":")
        spec = getattr(importlib.import_module(module_name), attr)(mutants=mutants, name=name)
        assert isinstance(spec, ProtocolSpec)
        return spec
    return _raft_or_etcd_mutant_spec(name)


def _raft_or_etcd_mutant_spec(name: str) -> ProtocolSpec:
    base, _, listed = name.partition(MUTANT_SEPARATOR)
    if base == "etcd":
        return _etcd_mutant_spec(name, listed)
    from pnyx.protocols.raft.config import MUTANTS
    from pnyx.sim.specs.raft import raft_spec

    mutants = frozenset(m for m in listed.split(",") if m)
    unknown = sorted(mutants - MUTANTS)
    if base != "raft" or not mutants or unknown:
        raise KeyError(
            f"unknown protocol {name!r}: mutants exist for "
            f"{', '.join(sorted({'raft', 'etcd', *_MUTANT_SPECS}))} (BASE+NAME[,NAME]); "
            f"unknown raft mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    return raft_spec(mutants=mutants, name=name)


def _etcd_mutant_spec(name: str, listed: str) -> ProtocolSpec:
    from pnyx.sim.specs.etcd import MUTANTS, etcd_spec

    mutants = frozenset(m for m in listed.split(",") if m)
    unknown = sorted(mutants - MUTANTS)
    if not mutants or unknown:
        raise KeyError(
            f"unknown protocol {name!r}: etcd+NAME[,NAME]; unknown mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    return etcd_spec(mutants=mutants, name=name)
