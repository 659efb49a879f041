"""`pycontain replay AUDIT.jsonl --policy FILE`: what would this policy decide?

Every exec and connect/send record of a recorded audit log is judged again,
offline, by the kernel rules (emulated exactly: pycontain.core.kernel_rules.
exec_verdict, net_verdict) and by the engine's user-space rules, so a policy change can
be tested against real traffic before it is deployed. Records of other kinds
(violations, actions, lifecycle) are skipped.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..core.engine import Engine
from ..core.errors import PycontainError
from ..core.event_types import spec_of_kind
from ..core.kernel_rules import compile_policy, exec_verdict, net_verdict
from ..core.text import safe_text, unescape_bytes


class ReplayError(PycontainError):
    exit_code = 2


@dataclass
class ReplayResult:
    line: int
    ts: float
    agent: str
    kind: str
    pid: int | None
    what: str
    recorded: str          # verdict in the log: allow / deny / would-deny
    decision: str          # what the policy decides now: allow / deny (kernel) / kill-process (user space)
    rule: str | None

    @property
    def changed(self) -> bool:
        was = self.recorded != "allow"
        now = self.decision != "allow"
        return was != now


# a kill-process/kill violation follows its exec record within one poll; an
# exec result waits this many records for it, then is emitted (constant memory)
WINDOW = 4096


def _lines(audit_path: str):
    """(line number, text) of a log file, '-' (stdin) or a gzip file, read
    as a stream; bytes that are not UTF-8 are an error naming the line."""
    import gzip
    import sys
    try:
        if audit_path == "-":
            fh = sys.stdin.buffer
        else:
            fh = open(audit_path, "rb")
            if fh.peek(2)[:2] == b"\x1f\x8b":
                fh = gzip.open(fh)
    except OSError as e:
        raise ReplayError(f"{audit_path}: cannot read the audit log: {e.strerror}") from None
    n = 0
    try:
        for n, raw in enumerate(fh, start=1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ReplayError(f"{audit_path}:{n}: not UTF-8 text",
                                  "audit logs are JSON Lines written by pycontain --audit-log") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ReplayError(f"{audit_path}:{n + 1}: cannot read: {e}") from None
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def replay(audit_path: str, policy, resolved: Mapping[str, list[str]] | None = None) -> list[ReplayResult]:
    """Judge every exec/connect/send record of `audit_path` under `policy`
    (all results at once; see iter_replay for the stream)."""
    return list(iter_replay(audit_path, policy, resolved))


def _record(audit_path: str, n: int, line: str) -> dict:
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            raise ValueError("not a pycontain audit object")
    except ValueError as e:
        raise ReplayError(f"{audit_path}:{n}: not an audit record ({e})",
                          "audit logs are JSON Lines written by pycontain --audit-log") from None
    return rec


def _kill_of(rec: dict) -> tuple[Any, str] | None:
    """(pid, action) of a violation that killed what it names (user space acted
    after the kernel allowed the exec, e.g. kill-process of an ssh -R)."""
    if rec["kind"] == "violation" and rec.get("action") in ("kill-process", "kill") and not rec.get("monitor") \
            and isinstance(rec.get("pid"), (int, type(None))):
        return rec.get("pid"), str(rec["action"])
    return None


def iter_replay(audit_path: str, policy, resolved: Mapping[str, list[str]] | None = None,
                window: int = WINDOW) -> Iterator[ReplayResult]:
    """The results in file order, as the log is read: memory stays constant
    whatever the log's size (an exec result waits at most WINDOW records for
    the kill that may follow it, so "recorded" is the whole recorded decision).
    Host names in network rules match only through `resolved` (name ->
    addresses), as live; replay itself never queries DNS."""
    tables = compile_policy(policy, resolved)
    engine = Engine(policy, resolved)
    pending: deque[tuple[int, ReplayResult, Any]] = deque()     # (line, result, exec pid or _NO_PID)
    for n, line in _lines(audit_path):
        if not line.strip():
            continue
        rec = _record(audit_path, n, line)
        kill = _kill_of(rec)
        if kill is not None:
            for _ln, earlier, pid in pending:
                if pid == kill[0] and earlier.recorded == "allow":
                    earlier.recorded = kill[1]
        r = _judge(audit_path, n, rec, tables, engine)
        if r is not None:
            pid = rec.get("pid") if r.kind == "exec" and isinstance(rec.get("pid"), (int, type(None))) else _NO_PID
            pending.append((n, r, pid))
        while pending and (pending[0][2] is _NO_PID or n - pending[0][0] >= window):
            yield pending.popleft()[1]
    while pending:
        yield pending.popleft()[1]


_NO_PID = object()


def _judge(audit_path: str, n: int, rec: dict, tables, engine: Engine) -> ReplayResult | None:
    spec = spec_of_kind(rec["kind"])
    section = spec.replay_section if spec is not None else None
    judge = _JUDGES.get(section) if section is not None else None
    if judge is None:
        return None
    try:
        return judge(n, rec, tables, engine)
    except (ValueError, TypeError, OverflowError, AttributeError) as e:
        raise ReplayError(f"{audit_path}:{n}: bad {rec['kind']} record ({e})",
                          "fields: daddr (an address), dport (0-65535), protocol, filename, argv (a list)") from None


def _base(n: int, rec: dict, what: str) -> dict:
    return dict(line=n, ts=float(rec.get("ts") or 0), agent=str(rec.get("agent", "")), kind=rec["kind"],
                pid=rec.get("pid"), what=what, recorded=str(rec.get("verdict", "allow")))


def _exec(n: int, rec: dict, tables, engine: Engine) -> ReplayResult:
    """An exec or an executable mapping (`exec_map`, issue 11), judged like
    the live path: on the name used, then on the file that ran (`real_path`,
    `exe.name`); a fileless file by `exec.fileless`."""
    filename = str(rec.get("filename", ""))
    raw_argv = rec.get("argv") or []
    if not isinstance(raw_argv, list):
        raise TypeError("argv is not a list")
    argv = [str(a) for a in raw_argv]
    raw_exe = rec.get("exe")
    exe: dict = raw_exe if isinstance(raw_exe, dict) else {}
    names = list(dict.fromkeys(x for x in (filename, str(rec.get("real_path") or ""), str(exe.get("name") or ""))
                               if x))
    what = safe_text(" ".join(argv) or (names[0] if names else ""), 200)     # already escaped: shown as recorded
    if rec.get("fileless") and engine.policy.exec.fileless == "deny":
        return ReplayResult(**_base(n, rec, what), decision="deny", rule="exec.fileless")
    raw_argv = [unescape_bytes(a) for a in argv]
    for name in names:
        rid = exec_verdict(tables, unescape_bytes(name), raw_argv)
        if rid:
            return ReplayResult(**_base(n, rec, what), decision="deny", rule=tables.rules.get(rid))
    for name in names:
        hit = engine.user_exec_rule(unescape_bytes(name), raw_argv)
        if hit:
            return ReplayResult(**_base(n, rec, what), decision="kill-process", rule=hit[0])
    return ReplayResult(**_base(n, rec, what), decision="allow", rule=None)


def _net(n: int, rec: dict, tables, engine: Engine) -> ReplayResult:
    proto, daddr, dport = str(rec.get("protocol", "tcp")), str(rec.get("daddr", "")), int(rec.get("dport") or 0)
    if not 0 <= dport <= 65535:
        raise ValueError(f"dport {dport} out of range")
    what = f"{daddr}:{dport}/{proto}"
    rid = net_verdict(tables, daddr, dport, proto)
    if rid:
        return ReplayResult(**_base(n, rec, what), decision="deny", rule=tables.rules.get(rid))
    hit = engine.user_net_rule(daddr, dport, proto)
    if hit:
        return ReplayResult(**_base(n, rec, what), decision="kill-process", rule=hit[0])
    return ReplayResult(**_base(n, rec, what), decision="allow", rule=None)


# policy section (core.event_types: EventSpec.replay_section) -> how a record is judged
_JUDGES = {"exec": _exec, "network": _net}


def format_replay(results: Iterable[ReplayResult], json: bool = False) -> str:
    return "\n".join(replay_lines(results, json))


def replay_lines(results: Iterable[ReplayResult], json: bool = False) -> Iterator[str]:
    """The report, one line at a time, as the results come (streams)."""
    import json as _json
    total = changed = 0
    if not json:
        yield f"{'line':>5}  {'agent':12} {'kind':8} {'recorded':11} {'now':13} {'rule':28} what"
    for r in results:
        total += 1
        changed += r.changed
        if json:
            yield _json.dumps(dict(asdict(r), changed=r.changed))
            continue
        mark = "*" if r.changed else " "
        yield (f"{r.line:>5}{mark} {r.agent[:12]:12} {r.kind:8} {r.recorded:11} {r.decision:13} "
               f"{(r.rule or '-')[:28]:28} {r.what}")
    if not json:
        yield f"{total} records judged, {changed} decided differently (*) than recorded"
