"""Text and HTML counterexamples."""

from __future__ import annotations

from pnyx.check import (
    RegisterModel,
    check_linearizable,
    explain_text,
    get_model,
    read_history,
    render_html,
)
from tests.check.helpers import SHARED_HISTORIES, hist


def test_linearizable_history_has_no_explanation_and_a_plain_timeline() -> None:
    h = hist((0, "invoke", "write", 1), (0, "ok", "write", 1))
    result = check_linearizable(h, RegisterModel())
    assert explain_text(result) == ""
    page = render_html(result, h.operations)
    assert "The history is linearizable." in page and "<rect" in page


def test_long_prefix_is_shortened_in_text_but_complete_in_html() -> None:
    history = read_history(SHARED_HISTORIES / "etcd-jepsen" / "etcd_000.log", "jepsen")
    result = check_linearizable(history, get_model("cas-register"))
    (part,) = result.failures
    assert len(part.prefix) > 20
    text = explain_text(result, prefix_shown=5)
    assert f"... {len(part.prefix) - 5} earlier operations linearized" in text
    assert text.count(" => ") == 5
    page = render_html(result, history.operations)
    assert page.count("linearized #") == len(part.prefix)
    assert "g class='info'" in page, "info operations are drawn open-ended"
