"""One entry point for every consistency model ``pnyx check --consistency`` offers.

``check_consistency(history, "causal")`` runs the checker for that model and returns a
``ConsistencyResult`` (verdict, minimal counterexamples, text via ``explain()``, HTML via
``render_consistency_html``). Linearizability and serializability keep their own result
types (``check_linearizable``, ``check_serializable``); see docs/CONSISTENCY.md for the
hierarchy of models, which checker decides which, and their cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pnyx.check.consistency_report import ConsistencyResult
from pnyx.check.history import History, Operation
from pnyx.check.session import GUARANTEES

__all__ = ["CONSISTENCY_MODELS", "REGISTER_MODELS", "TXN_CONSISTENCY", "check_consistency"]

REGISTER_MODELS = ("sequential", "causal", "session", *GUARANTEES, "convergent")
TXN_CONSISTENCY = ("snapshot-isolation",)
CONSISTENCY_MODELS = ("linearizable", *REGISTER_MODELS, "serializable", *TXN_CONSISTENCY)


def check_consistency(history: History | Sequence[Operation], model: str, *,
                      initial: Any = None, kind: Any = None, realtime: bool = False,
                      process: bool = False, timeout_s: float | None = None,
                      ) -> ConsistencyResult:
    """Check ``history`` against a model of ``REGISTER_MODELS`` or ``TXN_CONSISTENCY``.

    ``initial`` is the registers' initial value; ``kind`` (``list-append`` /
    ``rw-register``), ``realtime`` and ``process`` apply to snapshot isolation;
    ``timeout_s`` bounds the sequential search. Raises ``ValueError`` for an unknown model
    or a history the checker cannot read (the message names the offending operation).
    """
    if model == "sequential":
        from pnyx.check.sequential import check_sequential

        return check_sequential(history, initial=initial, timeout_s=timeout_s)
    if model == "causal":
        from pnyx.check.causal import check_causal

        return check_causal(history, initial=initial)
    if model == "session" or model in GUARANTEES:
        from pnyx.check.session import check_session

        wanted = GUARANTEES if model == "session" else (model,)
        return check_session(history, guarantees=wanted, initial=initial, model=model)
    if model == "convergent":
        from pnyx.check.convergence import check_convergence

        return check_convergence(history, initial=initial)
    if model == "snapshot-isolation":
        from pnyx.check.snapshot_isolation import check_snapshot_isolation

        return check_snapshot_isolation(history, kind=kind, realtime=realtime,
                                        process=process)
    raise ValueError(f"unknown consistency model {model!r}; choose one of "
                     f"{', '.join((*REGISTER_MODELS, *TXN_CONSISTENCY))} (linearizable and "
                     "serializable have their own checkers)")
