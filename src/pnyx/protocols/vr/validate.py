"""Input validation: peer messages no correct VR replica sends are refused before any
state changes (negative view or op numbers, an op-number that does not match the log it
comes with, a commit-number beyond it)."""

from __future__ import annotations

from pnyx.core import InvalidMessage, Message
from pnyx.protocols.vr.messages import (
    ENTRY_COMMAND,
    ENTRY_READ,
    ENTRY_RECONFIG,
    Checkpoint,
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
    base = _check_checkpoint(msg, getattr(msg, "checkpoint", None))
    if isinstance(msg, NewState) and msg.checkpoint is not None and msg.first_op != base + 1:
        raise _refuse(msg, f"first_op {msg.first_op} after a checkpoint at op {base}")
    if isinstance(msg, (DoViewChange, StartView)) and msg.op != base + len(msg.log):
        raise _refuse(msg, f"op {msg.op} but a checkpoint at {base} and {len(msg.log)} entries")
    if isinstance(msg, (DoViewChange, StartView)) and msg.commit > msg.op:
        raise _refuse(msg, f"commit {msg.commit} beyond op {msg.op}")
    if isinstance(msg, RecoveryResponse) and msg.log is not None:
        _check_recovery_log(msg, msg.log)


def _check_checkpoint(msg: Message, checkpoint: Checkpoint | None) -> int:
    """The op-number ``checkpoint`` covers (0 without one); InvalidMessage if malformed."""
    if checkpoint is None:
        return 0
    if type(checkpoint) is not Checkpoint or type(checkpoint.data) is not bytes:
        raise _refuse(msg, f"checkpoint {checkpoint!r} is not a Checkpoint of bytes")
    for name in ("op", "epoch", "epoch_op"):
        value = getattr(checkpoint, name)
        if type(value) is not int or value < 0:
            raise _refuse(msg, f"checkpoint {name} must be an int >= 0, not {value!r}")
    if checkpoint.op < 1 or checkpoint.epoch_op > checkpoint.op:
        raise _refuse(
            msg, f"checkpoint at op {checkpoint.op} (epoch started at {checkpoint.epoch_op})"
        )
    commit = getattr(msg, "commit", checkpoint.op)
    if checkpoint.op > commit:
        raise _refuse(msg, f"checkpoint at op {checkpoint.op} beyond commit {commit}")
    return checkpoint.op


def _check_recovery_log(msg: RecoveryResponse, log: tuple[VrEntry, ...]) -> None:
    base = msg.checkpoint.op if msg.checkpoint is not None else 0
    if msg.op != base + len(log) or msg.commit > msg.op:
        raise _refuse(msg, f"op {msg.op}, commit {msg.commit}, {len(log)} entries")


def _check_entries(msg: Message, entries: tuple[VrEntry, ...]) -> None:
    for entry in entries:
        if type(entry) is not VrEntry:
            raise _refuse(msg, f"entry {entry!r} is not a VrEntry")
        if type(entry.view) is not int or entry.view < 0:
            raise _refuse(msg, f"entry view {entry.view!r}")
        if entry.kind not in (ENTRY_COMMAND, ENTRY_READ, ENTRY_RECONFIG):
            raise _refuse(msg, f"entry kind {entry.kind!r}")
