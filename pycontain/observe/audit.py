"""The audit log: JSON Lines, one object per event, violation and action.

Every line has at least ts, agent, kind and pid; violations also carry rule
and action. Lines are flushed as written so a crash loses nothing that was
logged, and the file is opened in append mode with 0600 permissions (it holds
what agents ran).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO


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

    def write(self, record: dict) -> None:
        if self._fh is None:
            return
        # ensure_ascii: control characters and non-ASCII become \uXXXX, so the
        # raw file is safe to cat to a terminal
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)
        with self._lock:
            self._fh.write(line + "\n")
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
