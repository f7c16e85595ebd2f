"""pnyx.check: histories, models, linearizability and serializability checkers, reports.

Checking a history recorded by the simulator or a real client (``list[HistoryEvent]``)::

    from pnyx.check import History, KVModel, check_linearizable

    history = History.from_events(events)           # invoke/complete pairs; open ops -> info
    result = check_linearizable(history, KVModel(initial=None), timeout_s=10)
    if result.verdict == "not-linearizable":        # or "linearizable" / "unknown"
        print(result.explain())                      # longest linearizable prefix, stuck ops

Files: ``read_history(path, "jepsen" | "edn" | "jsonl")``; HTML timeline:
``write_html(result, history.operations, "out.html")``; transactions:
``check_serializable(history, kind="list-append")``. Depends only on ``pnyx.core``.
"""
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pnyx.check.formats import FORMATS, dumps_jsonl, parse_history, read_history, write_jsonl
    from pnyx.check.history import History, HistoryError, Operation, Outcome
    from pnyx.check.linearizability import (
        LinearizabilityResult,
        PartitionResult,
        Verdict,
        check_linearizable,
        check_partition,
    )
    from pnyx.check.models import (
        MODELS,
        CASRegisterModel,
        CounterModel,
        KeyedModel,
        KVModel,
        MapModel,
        Model,
        QueueModel,
        RegisterModel,
        SetModel,
        get_model,
    )
    from pnyx.check.report import explain_text, render_html, write_html
    from pnyx.check.serializability import Anomaly, SerializabilityResult, check_serializable

# Submodules are imported on first use (PEP 562): `pnyx check` starts faster.
_LAZY: dict[str, str] = {
    "FORMATS": "pnyx.check.formats",
    "dumps_jsonl": "pnyx.check.formats",
    "parse_history": "pnyx.check.formats",
    "read_history": "pnyx.check.formats",
    "write_jsonl": "pnyx.check.formats",
    "History": "pnyx.check.history",
    "HistoryError": "pnyx.check.history",
    "Operation": "pnyx.check.history",
    "Outcome": "pnyx.check.history",
    "LinearizabilityResult": "pnyx.check.linearizability",
    "PartitionResult": "pnyx.check.linearizability",
    "Verdict": "pnyx.check.linearizability",
    "check_linearizable": "pnyx.check.linearizability",
    "check_partition": "pnyx.check.linearizability",
    "MODELS": "pnyx.check.models",
    "CASRegisterModel": "pnyx.check.models",
    "CounterModel": "pnyx.check.models",
    "KeyedModel": "pnyx.check.models",
    "KVModel": "pnyx.check.models",
    "MapModel": "pnyx.check.models",
    "Model": "pnyx.check.models",
    "QueueModel": "pnyx.check.models",
    "RegisterModel": "pnyx.check.models",
    "SetModel": "pnyx.check.models",
    "get_model": "pnyx.check.models",
    "explain_text": "pnyx.check.report",
    "render_html": "pnyx.check.report",
    "write_html": "pnyx.check.report",
    "Anomaly": "pnyx.check.serializability",
    "SerializabilityResult": "pnyx.check.serializability",
    "check_serializable": "pnyx.check.serializability",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pnyx.check' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "FORMATS",
    "MODELS",
    "Anomaly",
    "CASRegisterModel",
    "CounterModel",
    "History",
    "HistoryError",
    "KVModel",
    "KeyedModel",
    "LinearizabilityResult",
    "MapModel",
    "Model",
    "Operation",
    "Outcome",
    "PartitionResult",
    "QueueModel",
    "RegisterModel",
    "SerializabilityResult",
    "SetModel",
    "Verdict",
    "check_linearizable",
    "check_partition",
    "check_serializable",
    "dumps_jsonl",
    "explain_text",
    "get_model",
    "parse_history",
    "read_history",
    "render_html",
    "write_html",
    "write_jsonl",
]
