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
