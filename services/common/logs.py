"""Logging set-up: one JSON object per line in containers, readable lines on a terminal."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from services.common import tracing


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the service name, and the trace and span id of the
    call it was logged in when traces are on (so a log line leads to its trace)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(service: str, *, log_format: str = "auto", level: str = "INFO") -> None:
    """Route every logger to stderr in the chosen format (``auto``: text on a terminal)."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    if use_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every start at INFO ("setup plugin ...", "Context impl ...", "Will
    # assume transactional DDL"), which buries what matters; services.common.migrations
    # logs what was migrated in one line instead. Its warnings stay; DEBUG shows it all.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    )
