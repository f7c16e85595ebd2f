"""The control API of a served replica: answer one :class:`DocRequest` with a :class:`DocReply`.

Requests (``op``):

* ``get`` — every field's value ``{name: {kind: value}}``, or with ``field`` (and ``kind``)
  the value of that one field;
* ``edit`` — ``kind``, ``field``, ``args = [action, *arguments]`` (see
  :func:`pnyx.services.crdt.kinds.apply_edit`); answered once the edit is durable, with the
  field's version;
* ``status`` — replica, peers, reachability, counters, every field's version;
* ``partition`` (``args`` = peer names) / ``heal`` — fault testing only, refused unless the
  replica was started with ``allow_test_partitions``.

Bad requests get ``ok=False`` and an error message naming the offending value; they never
disturb the replica.  A map keyed by int or bytes is answered as a list of ``[key, value]``
pairs (the wire takes only str keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pnyx.services.crdt.messages import DocReply, DocRequest

if TYPE_CHECKING:
    from pnyx.services.crdt.sync import DocSync

OPS = ("get", "edit", "status", "partition", "heal")


def handle_request(sync: DocSync, request: DocRequest) -> DocReply:
    """Carry out ``request`` on the replica behind ``sync``."""
    from pnyx.services.crdt.doc import DocError

    try:
        value = _dispatch(sync, request)
    except (DocError, ValueError, TypeError, IndexError, KeyError) as exc:
        return DocReply(request.request_id, False, None, f"{request.op}: {exc}")
    return DocReply(request.request_id, True, wire_safe(value))


def wire_safe(value: Any) -> Any:
    """``value`` with every dict that has a non-str key (a map keyed by int or bytes) as a
    list of ``[key, value]`` pairs: the wire encoding only takes str keys."""
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: wire_safe(v) for k, v in value.items()}
        return [[k, wire_safe(v)] for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [wire_safe(v) for v in value]
    return value


def _dispatch(sync: DocSync, request: DocRequest) -> Any:
    from pnyx.services.crdt.kinds import apply_edit

    doc = sync.doc
    if request.op == "get":
        return _get(sync, request)
    if request.op == "edit":
        apply_edit(doc, request.kind, request.field, request.args)
        return {"version": doc.field(request.field, request.kind).version()}
    if request.op == "status":
        return sync.status()
    if request.op in ("partition", "heal"):
        if not sync.config.allow_test_partitions:
            raise ValueError(
                "test partitions are off; start the replica with --test-partitions "
                "(fault testing only)"
            )
        if request.op == "heal":
            sync.heal()
            return {"partitioned_from": []}
        return {"partitioned_from": sync.partition(str(a) for a in request.args)}
    raise ValueError(f"unknown op {request.op!r}; ops are {list(OPS)}")


def _get(sync: DocSync, request: DocRequest) -> Any:
    doc = sync.doc
    if not request.field:
        return doc.value()
    kinds = [k for (n, k) in doc.fields() if n == request.field]
    if request.kind:
        kinds = [k for k in kinds if k == request.kind]
    if not kinds:
        return None
    if len(kinds) > 1:
        raise ValueError(f"field {request.field!r} exists as kinds {kinds}; name the kind")
    return doc.field(request.field, kinds[0]).value()
