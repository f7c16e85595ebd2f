"""Every protocol pnyx knows, by name: one registration line each (imported lazily).

A protocol package exports :class:`~pnyx.sim.spec.ProtocolDef` values (its ``spec``
module); this catalog names them.  ``pnyx sim NAME`` runs any of them in the simulator;
``pnyx serve`` / ``pnyx cluster up --protocol NAME`` runs the :attr:`runnable
<pnyx.sim.spec.ProtocolDef.runnable>` ones as real processes.
"""

from __future__ import annotations

import importlib

from pnyx.sim.spec import ProtocolDef

# name -> "module:attribute" of a ProtocolDef
_PROTOCOLS: dict[str, str] = {
    "broadcast": "pnyx.protocols.broadcast.spec:BROADCAST",
    "broadcast-broken": "pnyx.protocols.broadcast.spec:BROADCAST_BROKEN",
    "2pc": "pnyx.protocols.commit.spec:TWO_PC",
    "3pc": "pnyx.protocols.commit.spec:THREE_PC",
    "tso": "pnyx.protocols.tso.spec:TSO",
    "causal-broadcast": "pnyx.protocols.crdt.spec_ops:CAUSAL_BROADCAST",
    "causal-broadcast-broken": "pnyx.protocols.crdt.spec_ops:CAUSAL_BROADCAST_BROKEN",
    "crdt-opcounter": "pnyx.protocols.crdt.spec_ops:CRDT_OPCOUNTER",
    "crdt-opset": "pnyx.protocols.crdt.spec_ops:CRDT_OPSET",
    "crdt-text": "pnyx.protocols.crdt.spec_ops:CRDT_TEXT",
    "crdt-counter": "pnyx.protocols.crdt.spec_state:CRDT_COUNTER",
    "crdt-counter-broken": "pnyx.protocols.crdt.spec_state:CRDT_COUNTER_BROKEN",
    "crdt-map": "pnyx.protocols.crdt.spec_state:CRDT_MAP",
    "crdt-set": "pnyx.protocols.crdt.spec_state:CRDT_SET",
    "crdt-set-broken": "pnyx.protocols.crdt.spec_state:CRDT_SET_BROKEN",
    "chain": "pnyx.protocols.chain.spec:CHAIN",
    "craq": "pnyx.protocols.chain.spec:CRAQ",
    "craq-broken": "pnyx.protocols.chain.spec:CRAQ_BROKEN",
    "chain-register": "pnyx.protocols.chain.spec:CHAIN_REGISTER",
    "craq-register": "pnyx.protocols.chain.spec:CRAQ_REGISTER",
    "craq-register-broken": "pnyx.protocols.chain.spec:CRAQ_REGISTER_BROKEN",
    "dynamo": "pnyx.protocols.dynamo.spec:DYNAMO",
    "dynamo-sloppy": "pnyx.protocols.dynamo.spec:DYNAMO_SLOPPY",
    "dynamo-weak": "pnyx.protocols.dynamo.spec:DYNAMO_WEAK",
    "dynamo-weak-norepair": "pnyx.protocols.dynamo.spec:DYNAMO_WEAK_NOREPAIR",
    "dynamo-sloppy-norepair": "pnyx.protocols.dynamo.spec:DYNAMO_SLOPPY_NOREPAIR",
    "dynamo-norepair-noae": "pnyx.protocols.dynamo.spec:DYNAMO_NOREPAIR_NOAE",
    "dynamo-r1w3": "pnyx.protocols.dynamo.spec:DYNAMO_R1W3",
    "etcd": "pnyx.protocols.etcd.spec:ETCD",
    "etcd-compact": "pnyx.protocols.etcd.spec:ETCD_COMPACT",
    "etcd-paxos": "pnyx.protocols.etcd.spec_consensus:ETCD_PAXOS",
    "etcd-vr": "pnyx.protocols.etcd.spec_consensus:ETCD_VR",
    "primary-backup": "pnyx.protocols.primary_backup.spec:PRIMARY_BACKUP",
    "primary-backup-broken": "pnyx.protocols.primary_backup.spec:PRIMARY_BACKUP_BROKEN",
    "primary-backup-register": "pnyx.protocols.primary_backup.spec:PRIMARY_BACKUP_REGISTER",
    "raft": "pnyx.protocols.raft.spec:RAFT",
    "multiraft": "pnyx.protocols.multiraft.spec:MULTIRAFT",
    "vr": "pnyx.protocols.vr.spec:VR",
    "vr-durable": "pnyx.protocols.vr.spec:VR_DURABLE",
    "paxos": "pnyx.protocols.paxos.spec:PAXOS",
    "fixed": "pnyx.protocols.membership.spec:FIXED",
    "phi": "pnyx.protocols.membership.spec:PHI",
    "swim": "pnyx.protocols.membership.spec:SWIM",
    "swim-broken": "pnyx.protocols.membership.spec:SWIM_BROKEN",
    "swim-lifeguard": "pnyx.protocols.membership.spec:SWIM_LIFEGUARD",
    "percolator": "pnyx.protocols.txn.spec:PERCOLATOR_SPEC",
    "percolator-async": "pnyx.protocols.txn.spec:PERCOLATOR_ASYNC",
    "percolator-1pc": "pnyx.protocols.txn.spec:PERCOLATOR_1PC",
    "txn-2pc": "pnyx.protocols.txn.spec:TXN_2PC",
    "txn": "pnyx.protocols.txn.runtime_def:TXN",
}


def protocol_names() -> list[str]:
    """Names accepted by ``pnyx sim``."""
    return sorted(_PROTOCOLS)


def runnable_names() -> list[str]:
    """Names accepted by ``pnyx serve`` / ``pnyx cluster up --protocol``."""
    return [name for name in protocol_names() if get_protocol(name).runnable]


def get_runnable(name: str) -> ProtocolDef:
    """The protocol ``name`` if it runs as real processes; KeyError naming those otherwise."""
    definition = get_protocol(name) if name in _PROTOCOLS else None
    if definition is None or not definition.runnable:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(runnable_names())}")
    return definition


MUTANT_SEPARATOR = "+"
"""``raft+vote_not_persisted`` (or ``raft+a,b``): Raft with those mutants (bug catalogue);
``etcd+watch_gap``: etcd over Raft with its own mutants (or Raft's)."""


def get_protocol(name: str) -> ProtocolDef:
    """The definition registered as ``name``; raises KeyError listing valid names otherwise.

    ``BASE+MUTANT[,MUTANT...]`` (e.g. ``raft+vote_not_persisted``) is that protocol broken
    on purpose by the named mutants of its bug catalogue, so a seed that a mutant test
    reports replays with one ``pnyx sim`` command.
    """
    if MUTANT_SEPARATOR in name:
        return _mutant_definition(name)
    try:
        target = _PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}") from None
    module_name, attr = target.split(":")
    definition = getattr(importlib.import_module(module_name), attr)
    if not isinstance(definition, ProtocolDef):
        raise TypeError(f"{target} is a {type(definition).__name__}, not a ProtocolDef")
    return definition


# base name -> "module:function" building that protocol broken by a set of mutants; the
# function takes ``mutants`` (a non-empty frozenset of names) and ``name`` and raises
# KeyError naming the valid mutants when one is unknown
_MUTANT_SPECS: dict[str, str] = {
    "2pc": "pnyx.protocols.commit.spec:commit_mutant_spec",
    "3pc": "pnyx.protocols.commit.spec:commit_mutant_spec",
    "etcd": "pnyx.protocols.etcd.spec:etcd_mutant_spec",
    "etcd-paxos": "pnyx.protocols.etcd.spec_consensus:etcd_paxos_mutant_spec",
    "etcd-vr": "pnyx.protocols.etcd.spec_consensus:etcd_vr_mutant_spec",
    "multiraft": "pnyx.protocols.multiraft.spec:multiraft_mutant_spec",
    "paxos": "pnyx.protocols.paxos.spec:paxos_mutant_spec",
    "percolator": "pnyx.protocols.txn.spec:txn_mutant_spec",
    "percolator-async": "pnyx.protocols.txn.spec:txn_mutant_spec",
    "percolator-1pc": "pnyx.protocols.txn.spec:txn_mutant_spec",
    "txn-2pc": "pnyx.protocols.txn.spec:txn_mutant_spec",
    "raft": "pnyx.protocols.raft.spec:raft_mutant_spec",
    "tso": "pnyx.protocols.tso.spec:tso_mutant_spec",
    "vr": "pnyx.protocols.vr.spec:vr_mutant_spec",
}


def _mutant_definition(name: str) -> ProtocolDef:
    base, _, listed = name.partition(MUTANT_SEPARATOR)
    mutants = frozenset(m for m in listed.split(",") if m)
    if base not in _MUTANT_SPECS or not mutants:
        raise KeyError(
            f"unknown protocol {name!r}: BASE+MUTANT[,MUTANT] with BASE one of "
            f"{', '.join(sorted(_MUTANT_SPECS))}"
        )
    module_name, attr = _MUTANT_SPECS[base].split(":")
    definition = getattr(importlib.import_module(module_name), attr)(mutants=mutants, name=name)
    if not isinstance(definition, ProtocolDef):
        raise TypeError(f"{_MUTANT_SPECS[base]} built a {type(definition).__name__}")
    return definition
