"""`pycontain replay AUDIT.jsonl --policy FILE`: what would this policy decide?

Every exec and connect/send record of a recorded audit log is judged again,
offline, by the kernel rules (emulated exactly: pycontain.core.kernel_rules.
exec_verdict, net_verdict) and by the engine's user-space rules, so a policy change can
be tested against real traffic before it is deployed. Records of other kinds
(violations, actions, lifecycle) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..core.engine import Engine
from ..core.errors import PycontainError
from ..core.event_types import spec_of_kind
from ..core.kernel_rules import compile_policy, exec_verdict, net_verdict
from ..core.text import safe_text


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


def _unescape(s: str) -> bytes:
    """Audit strings are safe_text()-escaped; undo the escapes for matching.
    An escape that does not decode (an agent's own backslash) stays as written."""
    if "\\" not in s:
        return s.encode("utf-8", "surrogateescape")
    try:
        return s.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("utf-8", "surrogateescape")
    except (UnicodeError, ValueError):
        return s.encode("utf-8", "surrogateescape")


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
    """Judge every exec/connect/send record of `audit_path` under `policy`.
    Host names in network rules match only through `resolved` (name ->
    addresses), as live; replay itself never queries DNS."""
    tables = compile_policy(policy, resolved)
    engine = Engine(policy, resolved)
    out: list[ReplayResult] = []
    records = []
    for n, line in _lines(audit_path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
                raise ValueError("not a pycontain audit object")
        except ValueError as e:
            raise ReplayError(f"{audit_path}:{n}: not an audit record ({e})",
                              "audit logs are JSON Lines written by pycontain --audit-log") from None
        records.append((n, rec))
    # what user space did after the fact (e.g. kill-process of an ssh -R),
    # so "recorded" reflects the whole recorded decision, not only the kernel's
    acted: dict[Any, str] = {rec.get("pid"): rec["action"] for _n, rec in records
             if rec["kind"] == "violation" and rec.get("action") in ("kill-process", "kill") and not rec.get("monitor")
             and isinstance(rec.get("pid"), (int, type(None)))}
    for n, rec in records:
        spec = spec_of_kind(rec["kind"])
        section = spec.replay_section if spec is not None else None
        judge = _JUDGES.get(section) if section is not None else None
        if judge is None:
            continue
        try:
            r = judge(n, rec, tables, engine)
        except (ValueError, TypeError, OverflowError, AttributeError) as e:
            raise ReplayError(f"{audit_path}:{n}: bad {rec['kind']} record ({e})",
                              "fields: daddr (an address), dport (0-65535), protocol, filename, argv (a list)") \
                from None
        if r.recorded == "allow" and isinstance(rec.get("pid"), (int, type(None))) and rec.get("pid") in acted \
                and section == "exec":
            r.recorded = acted[rec.get("pid")]
        out.append(r)
    return out


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
    what = safe_text(" ".join(argv) or (names[0] if names else ""), 200)
    if rec.get("fileless") and engine.policy.exec.fileless == "deny":
        return ReplayResult(**_base(n, rec, what), decision="deny", rule="exec.fileless")
    for name in names:
        rid = exec_verdict(tables, name, argv)
        if rid:
            return ReplayResult(**_base(n, rec, what), decision="deny", rule=tables.rules.get(rid))
    for name in names:
        hit = engine.user_exec_rule(_unescape(name), [_unescape(a) for a in argv])
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


def format_replay(results: list[ReplayResult], json: bool = False) -> str:
    import json as _json
    if json:
        return "\n".join(_json.dumps(dict(asdict(r), changed=r.changed)) for r in results)
    lines = [f"{'line':>5}  {'agent':12} {'kind':8} {'recorded':11} {'now':13} {'rule':28} what"]
    for r in results:
        mark = "*" if r.changed else " "
        lines.append(f"{r.line:>5}{mark} {r.agent[:12]:12} {r.kind:8} {r.recorded:11} {r.decision:13} "
                     f"{(r.rule or '-')[:28]:28} {r.what}")
    changed = sum(r.changed for r in results)
    lines.append(f"{len(results)} records judged, {changed} decided differently (*) than recorded")
    return "\n".join(lines)
