"""Events and decisions as flat, JSON-ready records (pure).

One record shape serves the audit log, `pycontain trace --json` and
`pycontain replay`. Agent-supplied bytes (comm, filename, argv, payload) are
escaped and bounded with :func:`pycontain.core.text.safe_text`, so a record printed
raw to a terminal cannot carry an escape sequence, and invalid UTF-8 survives
as ``\\xNN``.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _json_str

from .decisions import Decision
from .event_types import BY_CLASS, Record, spec_of
from .events import FLAG_KILLED, FLAG_THREAD, Event, ExitEvent, ForkEvent, Verdict
from .text import safe_text

_VERDICT_TEXT: dict[int, str] = {v: v.name.lower().replace("_", "-") for v in Verdict}


def event_record(ev: Event, agent: str, ts: float, rules: dict[int, str] | None = None) -> Record:
    """Flatten one kernel event. ``ts`` is wall-clock seconds."""
    h = ev.h
    rec: Record = {
        "ts": round(ts, 6), "agent": agent, "kind": ev.kind, "pid": h.pid,
        "start_ns": h.start_ns, "tid": h.tid, "ppid": h.ppid, "uid": h.uid,
        "comm": safe_text(h.comm.split(b"\0", 1)[0], 64),
        "cgroup_id": h.cgroup_id, "verdict": _VERDICT_TEXT[h.verdict],
    }
    if h.rule_id:
        rec["rule"] = (rules or {}).get(h.rule_id, f"kernel#{h.rule_id}")
    if h.flags & FLAG_KILLED:
        rec["killed"] = True
    spec = BY_CLASS.get(type(ev)) or spec_of(ev)
    if spec is not None:
        spec.record(ev, rec)   # the type's own fields (core.event_types)
    return rec


def process_line(ev: Event, agent: str, ts: float, tail: str) -> str | None:
    """The audit line of a routine fork or exit (no verdict, rule nor kill:
    most records), written straight from the event: the JSON text
    ``event_record`` plus the audit encoder would give, without the dict
    (scripts/bench_records.py; tests/unit/test_records_audit.py holds the
    two equal). ``tail``: what the audit log appends (AuditLog.line_tail).
    None: any other record, for the general path."""
    h = ev.h
    if h.verdict != Verdict.ALLOW or h.rule_id or h.flags & FLAG_KILLED:
        return None
    if type(ev) is ForkEvent:
        own = f',"child_pid":{ev.child_pid}' + (',"thread":true' if h.flags & FLAG_THREAD else "")
    elif type(ev) is ExitEvent:
        own = f',"exit_code":{ev.exit_code}'
    else:
        return None
    comm = _json_str(safe_text(h.comm.split(b"\0", 1)[0], 64))
    return (f'{{"ts":{round(ts, 6)!r},"agent":{_json_str(agent)},"kind":"{ev.kind}","pid":{h.pid},'
            f'"start_ns":{h.start_ns},"tid":{h.tid},"ppid":{h.ppid},"uid":{h.uid},'
            f'"comm":{comm},"cgroup_id":{h.cgroup_id},"verdict":"allow"{own}{tail}')


def decision_records(d: Decision, ts: float, result: str | None = None) -> list[Record]:
    """A decision becomes a violation record and, when it acts, an action record."""
    base = {"ts": round(ts, 6), "agent": d.agent, "pid": d.pid, "rule": d.rule}
    out = [dict(base, kind="violation", action=d.action.value, reason=d.reason,
                monitor=d.monitor, **({"start_ns": d.start_ns} if d.start_ns else {}),
                **({"result": result} if result is not None else {}))]
    if result is not None:
        out.append(dict(base, kind="action", action=d.action.value, result=result, monitor=d.monitor))
    return out
