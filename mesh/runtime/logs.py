"""JSON log lines with the same keys in Python, Go and TypeScript (docs/runtime-contract.md).

Only entry points call `configure`; library modules just use `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "configure"]

SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}
# Attributes every LogRecord has; anything else passed with `extra=` is logged as a field.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service_name: str, instance_id: str) -> None:
        super().__init__()
        self._static = {"service.name": service_name, "service.instance.id": instance_id}

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        line: dict[str, Any] = {
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "severity": SEVERITY.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            **self._static,
            "logger": record.name,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            line["trace_id"] = format(span_context.trace_id, "032x")
            line["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(service_name: str, instance_id: str, level: str = "info") -> None:
    """Send every logger's records to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service_name, instance_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
