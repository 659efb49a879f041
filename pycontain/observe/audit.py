"""The audit log: JSON Lines, one object per event, violation and action.

Every line has at least ts, agent, kind and pid; violations also carry rule
and action. Routine event lines may be written with ``flush=False``: they
wait in the buffer until the next flushed line or :meth:`AuditLog.flush`,
which the controller calls after every poll (at most DRAIN_MS, 50 ms, of
routine lines are at risk in a crash). Decision lines (violations, actions,
denied events) are flushed as written, with everything queued before them,
so a crash never loses one. The file is opened in append mode with 0600
permissions (it holds what agents ran).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO

_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


class AuditLog:
    def __init__(self, path: str | None = None, stream: IO[str] | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._own = False
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._fh: IO[str] | None = os.fdopen(fd, "a", encoding="utf-8")
            self._own = True
        else:
            self._fh = stream

    def write(self, record: dict, flush: bool = True) -> None:
        if self._fh is None:
            return
        # ensure_ascii: control characters and non-ASCII become \uXXXX, so the
        # raw file is safe to cat to a terminal
        line = _ENCODE(record)
        with self._lock:
            self._fh.write(line + "\n")
            if flush:
                self._fh.flush()

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._own and self._fh:
                self._fh.close()
            self._fh = None


def open_audit(path: str | None) -> AuditLog:
    if path == "-":
        return AuditLog(stream=sys.stdout)
    return AuditLog(path)
