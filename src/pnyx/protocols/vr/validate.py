"""Input validation: peer messages no correct VR replica sends are refused before any
state changes (negative view or op numbers, an op-number that does not match the log it
comes with, a commit-number beyond it)."""

from __future__ import annotations

from pnyx.core import InvalidMessage, Message
from pnyx.protocols.vr.messages import (
    ENTRY_COMMAND,
    ENTRY_READ,
    ENTRY_RECONFIG,
    DoViewChange,
    NewState,
    Prepare,
    RecoveryResponse,
    StartView,
    VrEntry,
)

_INT_FIELDS = ("view", "op", "commit", "first_op", "last_normal_view", "nonce", "epoch")
_MEMBER_FIELDS = ("members", "old_members", "new_members")


def _refuse(msg: Message, why: str) -> InvalidMessage:
    return InvalidMessage(f"{type(msg).__name__} refused: {why}")


def check_peer_message(msg: Message) -> None:
    """InvalidMessage unless ``msg``'s fields are ones a correct replica could send."""
    for name in _INT_FIELDS:
        value = getattr(msg, name, 0)
        if type(value) is not int or value < 0:
            raise _refuse(msg, f"{name} must be an int >= 0, not {value!r}")
    for name in _MEMBER_FIELDS:
        members = getattr(msg, name, ())
        if any(type(m) is not int or m <= 0 for m in members):
            raise _refuse(msg, f"{name} must be node ids > 0, not {members!r}")
    log = getattr(msg, "log", None)
    entries = getattr(msg, "entries", None)
    for group in (log, entries):
        if group is not None:
            _check_entries(msg, group)
    if isinstance(msg, (Prepare, NewState)) and msg.first_op < 1:
        raise _refuse(msg, f"first_op {msg.first_op} must be at least 1")
    if isinstance(msg, (DoViewChange, StartView)) and msg.op != len(msg.log):
        raise _refuse(msg, f"op {msg.op} but a log of {len(msg.log)} entries")
    if isinstance(msg, (DoViewChange, StartView)) and msg.commit > msg.op:
        raise _refuse(msg, f"commit {msg.commit} beyond op {msg.op}")
    if isinstance(msg, RecoveryResponse) and msg.log is not None:
        _check_recovery_log(msg, msg.log)


def _check_recovery_log(msg: RecoveryResponse, log: tuple[VrEntry, ...]) -> None:
    if msg.op != len(log) or msg.commit > msg.op:
        raise _refuse(msg, f"op {msg.op}, commit {msg.commit}, {len(log)} entries")


def _check_entries(msg: Message, entries: tuple[VrEntry, ...]) -> None:
    for entry in entries:
        if type(entry) is not VrEntry:
            raise _refuse(msg, f"entry {entry!r} is not a VrEntry")
        if type(entry.view) is not int or entry.view < 0:
            raise _refuse(msg, f"entry view {entry.view!r}")
        if entry.kind not in (ENTRY_COMMAND, ENTRY_READ, ENTRY_RECONFIG):
            raise _refuse(msg, f"entry kind {entry.kind!r}")
