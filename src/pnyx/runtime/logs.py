"""Logging setup for runtime processes: ``event key=value ...`` lines, or JSON lines.

Runtime modules log through stdlib ``logging`` with messages shaped ``event k=v k=v``;
:func:`configure_logging` picks how they are rendered (``pnyx serve --log-json``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, the k=v fields, node."""

    def __init__(self, node_id: int | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        if self.node_id is not None:
            line["node"] = self.node_id
        for field in rest.split(" "):
            key, sep, value = field.partition("=")
            if sep and key.isidentifier():
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(
    level: int = logging.INFO,
    *,
    json_lines: bool = False,
    node_id: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route ``pnyx`` loggers to ``stream`` (stderr) as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLineFormatter(node_id))
    else:
        prefix = f"node={node_id} " if node_id is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s {prefix}%(message)s")
        )
    root = logging.getLogger("pnyx")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
