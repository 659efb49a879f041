"""Events and decisions as flat, JSON-ready records (pure).

One record shape serves the audit log, `pycontain trace --json` and
`pycontain replay`. Agent-supplied bytes (comm, filename, argv, payload) are
escaped and bounded with :func:`pycontain.core.text.safe_text`, so a record printed
raw to a terminal cannot carry an escape sequence, and invalid UTF-8 survives
as ``\\xNN``.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from .decisions import Decision
from .event_types import ARG_LIMIT, ARGV_LIMIT, BY_CLASS, Record, spec_of, tcp_state_name
from .events import (
    FLAG_FILELESS,
    FLAG_HELD,
    FLAG_KILLED,
    FLAG_LOOPBACK,
    FLAG_SCRIPT,
    FLAG_SOURCE_ROUTED,
    FLAG_SSH,
    FLAG_THREAD,
    FLAG_UNTRUSTED,
    FLAG_V4_MAPPED,
    Event,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    NetEvent,
    TcpStateEvent,
    Verdict,
)
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


def _cached(render: Callable[[bytes], str]) -> Callable[[bytes], str]:
    """``render``, remembered per value: agents repeat the same comms,
    commands and arguments (scripts/bench_records.py). Bounded: emptied
    when full, values over _CACHED_BYTES are not kept."""
    cache: dict[bytes, str] = {}

    def text(value: bytes) -> str:
        got = cache.get(value)
        if got is None:
            got = render(value)
            if len(value) <= _CACHED_BYTES:
                if len(cache) >= _CACHED_VALUES:
                    cache.clear()
                cache[value] = got
        return got
    return text


_CACHED_VALUES = 4096
_CACHED_BYTES = 256
_comm_text = _cached(lambda comm: safe_text(comm.split(b"\0", 1)[0], 64))
_comm_json = _cached(lambda comm: _json_str(_comm_text(comm)))
_arg_json = _cached(lambda arg: _json_str(safe_text(arg, ARG_LIMIT)))
_file_json = _cached(lambda filename: _json_str(safe_text(filename, 1024)))
_NET_FLAGS = ((FLAG_V4_MAPPED, ',"v4_mapped":true'), (FLAG_SOURCE_ROUTED, ',"source_routed":true'),
              (FLAG_LOOPBACK, ',"loopback":true'), (FLAG_SSH, ',"ssh":true'))
_NET_BITS = FLAG_V4_MAPPED | FLAG_SOURCE_ROUTED | FLAG_LOOPBACK | FLAG_SSH
_EXE_FLAGS = ((FLAG_HELD, ',"held":true'), (FLAG_FILELESS, ',"fileless":true'), (FLAG_UNTRUSTED, ',"untrusted":true'),
              (FLAG_SCRIPT, ',"script":true'))
_EXE_BITS = FLAG_HELD | FLAG_FILELESS | FLAG_UNTRUSTED | FLAG_SCRIPT


def _fork_text(ev: ForkEvent) -> str:
    return f',"child_pid":{ev.child_pid}' + (',"thread":true' if ev.h.flags & FLAG_THREAD else "")


def _exit_text(ev: ExitEvent) -> str:
    return f',"exit_code":{ev.exit_code}'


def _exec_text(ev: ExecEvent) -> str:
    """event_types._record_exec as JSON text."""
    argv = ev.argv
    out = f',"filename":{_file_json(ev.filename)},"argv":[{",".join(map(_arg_json, argv[:ARGV_LIMIT]))}],' \
          f'"argc":{ev.argc}'
    if (ev.args_truncated and not ev.full_argv) or len(argv) > ARGV_LIMIT:
        out += ',"argv_truncated":true'
    if ev.real_path:
        out += f',"real_path":{_json_str(safe_text(ev.real_path, 4096))}'
    exe = ev.exe
    if exe.known:
        out += (f',"exe":{{"name":{_json_str(safe_text(exe.name, 512))},"dev":{exe.dev},"ino":{exe.ino},'
                f'"nlink":{exe.nlink},"uid":{exe.uid},"mode":{exe.mode},"mtime":{exe.mtime_sec}}}')
    flags = ev.h.flags
    if flags & _EXE_BITS:
        out += "".join(text for bit, text in _EXE_FLAGS if flags & bit)
    return out


def _net_text(ev: NetEvent) -> str:
    """event_types._record_net as JSON text."""
    out = (f',"protocol":{_json_str(ev.proto_name)},"daddr":{_json_str(ev.daddr)},"dport":{ev.dport},'
           f'"saddr":{_json_str(ev.saddr)},"sport":{ev.sport}')
    flags = ev.h.flags
    if flags & _NET_BITS:
        out += "".join(text for bit, text in _NET_FLAGS if flags & bit)
    return out


def _tcp_state_text(ev: TcpStateEvent) -> str:
    """event_types._record_tcp_state as JSON text."""
    return (f',"daddr":{_json_str(ev.daddr)},"dport":{ev.dport},"saddr":{_json_str(ev.saddr)},"sport":{ev.sport},'
            f'"oldstate":{_json_str(tcp_state_name(ev.oldstate))},"newstate":{_json_str(tcp_state_name(ev.newstate))}')


# the event types whose routine lines are written straight from the event, by
# dataclass (exactly: a subclass such as StratumEvent has fields of its own)
_OWN_TEXT: dict[type[Event], Callable[[Any], str]] = {
    ForkEvent: _fork_text, ExitEvent: _exit_text, ExecEvent: _exec_text, NetEvent: _net_text,
    TcpStateEvent: _tcp_state_text,
}


_TS_FIXED_MAX = 2.0 ** 33    # below it a double's spacing is under a microsecond (see ts_text)


def ts_text(ts: float) -> str:
    """``repr(round(ts, 6))``, the audit line's ts, faster (~0.35 µs of
    ~0.7 a record: scripts/bench_records.py). ``format(ts, ".6f")`` is the
    same correctly rounded decimal D that round() converts back; below
    2**33 (the year 2242) two decimals of ≤ 6 places lie ≥ 1e-6 apart, more
    than a double's spacing there, so D (trailing zeros cut) is the only
    shortest string that reads back as round(ts, 6): what repr prints.
    Elsewhere (and under 1e-3, where repr turns to exponents) repr itself.
    tests/unit/test_records_audit.py holds the two equal."""
    if 1e-3 <= ts < _TS_FIXED_MAX:
        text = format(ts, ".6f").rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(ts, 6))


def routine_line(ev: Event, agent: str, ts: float, tail: str) -> str | None:
    """The audit line of a routine record (allowed, no rule nor kill: most
    records) written straight from the event: the JSON text ``event_record``
    plus the audit encoder would give, without the dict
    (scripts/bench_records.py; tests/unit/test_records_audit.py holds the
    two equal). ``tail``: what the audit log appends (AuditLog.line_tail).
    None: any other record (a verdict, a held exec, another event type), for
    the general path."""
    h = ev.h
    own = _OWN_TEXT.get(type(ev))
    if own is None or h.verdict != Verdict.ALLOW or h.rule_id or h.flags & FLAG_KILLED:
        return None
    if h.flags & FLAG_HELD and type(ev) is ExecEvent:
        return None
    return (f'{{"ts":{ts_text(ts)},"agent":{_json_str(agent)},"kind":"{ev.kind}","pid":{h.pid},'
            f'"start_ns":{h.start_ns},"tid":{h.tid},"ppid":{h.ppid},"uid":{h.uid},'
            f'"comm":{_comm_json(h.comm)},"cgroup_id":{h.cgroup_id},"verdict":"allow"'
            f'{own(ev)}{tail}')


CONNECTION_FIELDS = ("ts", "protocol", "daddr", "dport", "verdict", "pid", "comm")


def connection_entry(rec: Record) -> Record:
    """What the state API keeps of a connect/send record (an agent's recent connections)."""
    return {k: rec.get(k) for k in CONNECTION_FIELDS}


def routine_connection(ev: NetEvent, ts: float) -> Record:
    """connection_entry of a routine connect's record, built from the event
    (no record dict on the routine path; unit test holds the two equal)."""
    return {"ts": round(ts, 6), "protocol": ev.proto_name, "daddr": ev.daddr, "dport": ev.dport,
            "verdict": "allow", "pid": ev.h.pid, "comm": _comm_text(ev.h.comm)}


def decision_records(d: Decision, ts: float, result: str | None = None) -> list[Record]:
    """A decision becomes a violation record and, when it acts, an action record."""
    base = {"ts": round(ts, 6), "agent": d.agent, "pid": d.pid, "rule": d.rule}
    out = [dict(base, kind="violation", action=d.action.value, reason=d.reason,
                monitor=d.monitor, **({"start_ns": d.start_ns} if d.start_ns else {}),
                **({"result": result} if result is not None else {}))]
    if result is not None:
        out.append(dict(base, kind="action", action=d.action.value, result=result, monitor=d.monitor))
    return out
