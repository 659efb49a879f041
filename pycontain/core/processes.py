"""Process records built from the kernel stream, keyed by (pid, start_ns)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProcessInfo:
    pid: int
    start_ns: int
    agent: str
    filename: bytes = b""                 # from the last exec record (untrusted)
    argv: tuple[bytes, ...] = ()          # untrusted
    ppid: int = 0
    ancestors: tuple[tuple[int, bytes], ...] = ()  # (pid, filename) parent first
    exec_ts_ns: int = 0                   # boot ns of the last exec, 0 = unknown
    # boot ns of the first outbound connect/send by this process or an ancestor
    # to a destination the policy does not approve (not in allow lists), or None
    unapproved_connect_ns: int | None = None
