"""The audit log: JSON Lines, one object per event, violation and action.

Every line has at least ts, host, agent, kind and pid; violations also carry
rule, severity and tags (core/rule_ids.py); lines of an agent whose cgroup
path names a Kubernetes pod or a Slurm job carry that identity
(core/orchestrator.py). Routine event lines may be written with
``flush=False``: they wait in the buffer until the next flushed line or
:meth:`AuditLog.flush`, which the controller calls after every poll (at most
DRAIN_MS, 50 ms, of routine lines are at risk in a crash). Decision lines
(violations, actions, denied events) are flushed as written, with everything
queued before them, so a crash never loses one. The file is opened in append
mode with 0600 permissions (it holds what agents ran).

Rotation: by size (``max_bytes``, keeping ``keep`` old files audit.log.1 …
audit.log.N), and on request (:meth:`reopen`, SIGUSR1 in the daemon, for
logrotate's move-then-signal). Both happen under the write lock between two
lines, after a flush, so every line lands in exactly one file. Hand-written
rather than logging.handlers.RotatingFileHandler: that one flushes every
record (the routine-line batching above is what keeps the per-record cost
down, docs/benchmarks.md), creates files with the umask's permissions, and
does not reopen on request.
"""

from __future__ import annotations

import json
import json.encoder
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from ..core.orchestrator import orchestrator_identity
from ..core.rule_ids import RuleMeta

_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


def _line_encoder() -> Callable[[dict[str, Any]], str]:
    """``_ENCODE`` without its per-call set-up: JSONEncoder.encode builds a
    new C encoder for every object (~0.7 µs of a ~2.5 µs line,
    scripts/bench_records.py); this builds it once, with the same settings
    (no circular check: records are flat dicts built here). Falls back to
    ``_ENCODE`` where the C accelerator is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODE
    try:
        chunks = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    except TypeError:        # another CPython's signature
        return _ENCODE

    def encode(record: dict[str, Any]) -> str:
        return "".join(chunks(record, 0))
    return encode


_ENCODE_LINE = _line_encoder()
_RULE_KINDS = ("violation", "action")


class AuditLog:
    def __init__(self, path: str | None = None, stream: IO[str] | None = None, *,
                 max_bytes: int | None = None, keep: int = 5, host: str | None = None):
        self.path = path
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.host = host or socket.gethostname()
        self.rule_meta: Mapping[str, RuleMeta] = {}      # rule id -> severity, tags (set by the controller)
        self._identity: dict[str, dict[str, str]] = {}   # agent -> orchestrator identity fields
        self._tails: dict[str, str] = {}                 # agent -> line_tail
        self._lock = threading.Lock()
        self._own = False
        self._reopen = False
        self._size = 0
        if path:
            self._fh: IO[str] | None = self._open()
            self._own = True
        else:
            self._fh = stream

    def _open(self) -> IO[str]:
        assert self.path
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(fd).st_size
        return os.fdopen(fd, "a", encoding="utf-8")

    # ---- what the records carry ----------------------------------------------

    def set_agent(self, name: str, cgroup_path: str) -> None:
        """The orchestrator identity of ``name``'s lines, from its cgroup path."""
        ident = orchestrator_identity(cgroup_path)
        with self._lock:
            self._tails.pop(name, None)
            if ident:
                self._identity[name] = ident
            else:
                self._identity.pop(name, None)

    def forget_agent(self, name: str) -> None:
        with self._lock:
            self._identity.pop(name, None)
            self._tails.pop(name, None)

    def line_tail(self, agent: str) -> str:
        """What _enrich adds to an event line of ``agent`` (host, then its
        orchestrator identity), as JSON text closing the object: for lines
        written whole (core/records.routine_line, write_line)."""
        tail = self._tails.get(agent)
        if tail is None:
            with self._lock:
                fields = {"host": self.host, **self._identity.get(agent, {})}
                tail = self._tails[agent] = "".join(f",{_ENCODE(k)}:{_ENCODE(v)}" for k, v in fields.items()) + "}"
        return tail

    def _enrich(self, record: dict) -> None:
        record.setdefault("host", self.host)
        ident = self._identity.get(record.get("agent", "")) if self._identity else None
        if ident:
            for k, v in ident.items():
                record.setdefault(k, v)
        if record.get("kind") not in _RULE_KINDS:
            return
        rule = record.get("rule")
        if rule is not None:
            meta = self.rule_meta.get(rule)
            if meta is not None:
                record.setdefault("severity", meta.severity)
                if meta.tags:
                    record.setdefault("tags", list(meta.tags))

    # ---- writing ---------------------------------------------------------------

    def write(self, record: dict, flush: bool = True) -> None:
        if self._fh is None:
            return
        # ensure_ascii: control characters and non-ASCII become \uXXXX, so the
        # raw file is safe to cat to a terminal
        with self._lock:
            self._enrich(record)
            line = _ENCODE_LINE(record) + "\n"
            if self._own and (self._reopen or self.max_bytes):
                self._maybe_rotate(len(line))
            assert self._fh is not None
            self._fh.write(line)
            self._size += len(line)
            if flush:
                self._fh.flush()

    def write_line(self, line: str) -> None:
        """A routine event line already encoded (its tail from line_tail),
        not flushed: as write(record, flush=False)."""
        if self._fh is None:
            return
        line += "\n"
        with self._lock:
            if self._own and (self._reopen or self.max_bytes):
                self._maybe_rotate(len(line))
            assert self._fh is not None
            self._fh.write(line)
            self._size += len(line)

    def _maybe_rotate(self, incoming: int) -> None:
        """(lock held) Reopen on request, or rotate when the next line would
        pass max_bytes (a file holds at least one line)."""
        if self._reopen:
            self._reopen = False
            self._swap(rotate=False)
        elif self.max_bytes and self._size and self._size + incoming > self.max_bytes:
            self._swap(rotate=True)

    def _swap(self, rotate: bool) -> None:
        assert self._fh is not None and self.path
        self._fh.flush()
        self._fh.close()
        if rotate:
            for i in range(self.keep - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._fh = self._open()

    def reopen(self) -> None:
        """Open the path anew before the next line (logrotate moved the file;
        SIGUSR1). Safe to call from a signal handler: it only sets a flag."""
        self._reopen = True

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._own and self._fh:
                self._fh.close()
            self._fh = None


def open_audit(path: str | None, max_bytes: int | None = None, keep: int = 5) -> AuditLog:
    if path == "-":
        return AuditLog(stream=sys.stdout)
    return AuditLog(path, max_bytes=max_bytes, keep=keep)
