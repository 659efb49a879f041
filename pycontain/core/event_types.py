"""The event-type registry (pure): everything that depends on an event's type, said once.

Each :class:`EventSpec` names, for one kernel event type, its code
(:class:`~pycontain.core.events.EventType`, hence its ``kind`` string), its C
struct (name in ebpf/pycontain.h and ctypes mirror), its decoder (record bytes
to frozen dataclass), its audit-record shape (the fields it adds to the common
header fields of :func:`pycontain.core.records.event_record`), the one-line
description of such a record, and the policy section replay judges it by.

:func:`decode`, ``records.event_record``, ``observe.report.describe``,
``cli.replay`` and tests/unit/test_layout.py dispatch through
:data:`EVENT_TYPES`: a new event type is one entry here (plus its struct and
dataclass in :mod:`pycontain.core.events`).
"""

from __future__ import annotations

import builtins
import ctypes as C
import socket
import struct
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, Generic, TypeAlias, TypeVar

from .events import (
    ARGS_LEN,
    CGPATH_LEN,
    EXE_NAME_LEN,
    FILENAME_LEN,
    FLAG_FILELESS,
    FLAG_HELD,
    FLAG_LOOPBACK,
    FLAG_OTHER_MOVER,
    FLAG_SCRIPT,
    FLAG_SOURCE_ROUTED,
    FLAG_SSH,
    FLAG_THREAD,
    FLAG_UNTRUSTED,
    FLAG_V4_MAPPED,
    HEADER_FORMAT,
    MAP_CALL_UNTRACKED,
    MAP_STRUCTS,
    PAYLOAD_LEN,
    UNIX_NAME_LEN,
    BoundaryEvent,
    CBoundary,
    CCgroupBirth,
    CExec,
    CExecMap,
    CExit,
    CFork,
    CgroupBirthEvent,
    CHeader,
    CNet,
    CSocket,
    CStratum,
    CTcpState,
    CUnix,
    DecodeError,
    Event,
    EventType,
    ExecEvent,
    ExecMapEvent,
    ExeIdentity,
    ExitEvent,
    ForkEvent,
    NetEvent,
    SocketEvent,
    StdioSocketEvent,
    StratumEvent,
    TcpStateEvent,
    UnixEvent,
    addr_text,
    from_record,
    header_at,
    header_of,
    net_fields,
)
from .text import safe_text

ARG_LIMIT = 512      # characters kept per argv entry in a record
ARGV_LIMIT = 64      # entries kept

_TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
_FAMILIES: dict[int, str] = {
    socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_PACKET: "packet", socket.AF_UNIX: "unix",
}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}


# An audit record: flat JSON-ready data (core.records), keyed by field name.
Record: TypeAlias = dict[str, Any]

_E = TypeVar("_E", bound=Event)
_N = TypeVar("_N", bound=NetEvent)


@dataclass(frozen=True)
class EventSpec(Generic[_E]):
    """One event type; ``_E`` is the dataclass its decoder returns and its record function takes."""

    # the field `type` shadows the builtin in this class body: builtins.type below
    type: EventType
    cname: str                                  # struct name in ebpf/pycontain.h
    cstruct: builtins.type[C.Structure]         # its ctypes mirror
    cls: builtins.type[_E]                      # the dataclass decode returns
    decode: Callable[[bytes], _E]               # raises DecodeError
    record: Callable[[_E, Record], None]        # adds the type's fields to a record
    describe: Callable[[Record, str], str] | None = None   # (record, "pid N") -> line; None: "<kind> pid N"
    replay_section: str | None = None           # policy section replay judges it by; None: not replayed

    @property
    def kind(self) -> str:
        return self.type.name.lower()


class RecordStruct:
    """A whole fixed-size record as one precompiled ``struct`` unpack: the
    pc_header fields first (header_of takes them), then the type's own.
    One unpack instead of a ctypes copy plus a header unpack per record
    (scripts/bench_records.py); tests/unit/test_layout.py checks each against
    its ctypes mirror."""

    def __init__(self, cstruct: builtins.type[C.Structure], tail: str, size: int | None = None):
        self.cstruct = cstruct
        self.struct = struct.Struct(HEADER_FORMAT + tail)
        # the kernel's record, trailing padding included; `size`: the least
        # the kernel queues of a record whose last member is cut (pc_exec)
        self.size = C.sizeof(cstruct) if size is None else size

    def unpack(self, data: bytes) -> tuple[Any, ...]:
        if len(data) < self.size:
            raise DecodeError(f"short {self.cstruct.__name__} record: {len(data)} < {self.size} bytes")
        return self.struct.unpack_from(data)


def _builder(cls: builtins.type[_E]) -> Callable[..., _E]:
    """``cls(**fields)`` for the dataclass of a frequent record, without
    the generated ``__init__`` of a frozen dataclass (one
    ``object.__setattr__`` per field, ~0.8 µs for 8 fields against ~0.35:
    scripts/bench_records.py): the instance's ``__dict__`` filled in two
    updates, defaults first. The same object (tests/unit/test_layout.py
    compares it with ``cls(...)``); only for plain frozen dataclasses whose
    defaults are immutable values."""
    assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"), cls
    defaults: dict[str, Any] = {}
    for f in fields(cls):
        if f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
            assert type(defaults[f.name]).__hash__ is not None, f.name    # immutable: one shared value
        elif f.default is not MISSING:
            defaults[f.name] = f.default
    new = object.__new__

    def build(**values: Any) -> _E:
        ev = new(cls)
        d = ev.__dict__
        d.update(defaults)
        d.update(values)
        return ev
    return build


_HEAD = 14    # unpacked pc_header fields at the front of every RecordStruct tuple
_FORK = RecordStruct(CFork, "I")
_EXIT = RecordStruct(CExit, "i")
_NET = RecordStruct(CNet, "BBHHH16s16s")
_SOCKET = RecordStruct(CSocket, "III")
_TCP_STATE = RecordStruct(CTcpState, "BBBBHH16s16s")
_EXE = struct.Struct(f"<QQqIIII{EXE_NAME_LEN}s")     # struct pc_exe
# up to the filename: argv follows, args_len bytes of it (pc_exec_size)
_EXEC_HEAD = RecordStruct(CExec, f"IHH{_EXE.size}x{FILENAME_LEN}s", size=CExec.args.offset)
RECORD_STRUCTS = {"pc_fork": _FORK, "pc_exit": _EXIT, "pc_net": _NET, "pc_socket": _SOCKET,
                  "pc_tcp_state": _TCP_STATE, "pc_exec": _EXEC_HEAD}


# ---- exec ----------------------------------------------------------------------

_ARGS_AT = CExec.args.offset
_EXE_AT = CExec.exe.offset
_NO_EXE = ExeIdentity()
_exec_event = _builder(ExecEvent)


def _exe_at(data: bytes, offset: int) -> ExeIdentity:
    dev, ino, mtime, nlink, uid, mode, name_len, name = _EXE.unpack_from(data, offset)
    if not (dev or ino or mtime or nlink or uid or mode or name_len):
        return _NO_EXE
    name = name[: min(name_len, EXE_NAME_LEN)].split(b"\0", 1)[0]
    return ExeIdentity(name=name, dev=dev, ino=ino, nlink=nlink, uid=uid, mode=mode, mtime_sec=mtime)


def _decode_exec(data: bytes) -> ExecEvent:
    f = _EXEC_HEAD.unpack(data)
    argc, filename_len, args_len, fname = f[_HEAD:]
    # raw slice: argv entries are NUL-separated
    args = data[_ARGS_AT: _ARGS_AT + min(args_len, ARGS_LEN)]
    argv = tuple(args.rstrip(b"\0").split(b"\0")) if args.strip(b"\0") else ()
    fname = fname[: min(filename_len, FILENAME_LEN)].split(b"\0", 1)[0]
    return _exec_event(h=header_of(f), filename=fname, argv=argv, argc=argc, exe=_exe_at(data, _EXE_AT))


_FILE_BITS = FLAG_HELD | FLAG_FILELESS | FLAG_UNTRUSTED | FLAG_SCRIPT
_FILE_FLAGS = ((FLAG_HELD, "held"), (FLAG_FILELESS, "fileless"), (FLAG_UNTRUSTED, "untrusted"),
               (FLAG_SCRIPT, "script"))


def _record_exe(exe: ExeIdentity, flags: int, rec: Record) -> None:
    """The file that ran (issue 11): the audit record names it by its own
    identity, next to the name the caller used."""
    if exe.known:
        rec["exe"] = {"name": safe_text(exe.name, 512), "dev": exe.dev, "ino": exe.ino, "nlink": exe.nlink,
                      "uid": exe.uid, "mode": exe.mode, "mtime": exe.mtime_sec}
    if flags & _FILE_BITS:
        for bit, key in _FILE_FLAGS:
            if flags & bit:
                rec[key] = True


def _record_exec(ev: ExecEvent, rec: Record) -> None:
    rec["filename"] = safe_text(ev.filename, 1024)
    rec["argv"] = [safe_text(a, ARG_LIMIT) for a in ev.argv[:ARGV_LIMIT]]
    rec["argc"] = ev.argc
    if (ev.args_truncated and not ev.full_argv) or len(ev.argv) > ARGV_LIMIT:
        rec["argv_truncated"] = True
    if ev.real_path:
        rec["real_path"] = safe_text(ev.real_path, 4096)
    _record_exe(ev.exe, ev.h.flags, rec)


def _describe_exec(rec: Record, who: str) -> str:
    argv = " ".join(rec.get("argv") or []) or rec.get("filename", "")
    return f"exec {rec.get('filename')} [{argv}] {who}"


def _decode_exec_map(data: bytes) -> ExecMapEvent:
    c = from_record(CExecMap, data)
    return ExecMapEvent(h=header_at(data), prot=c.prot, fd=c.fd, exe=_exe_at(data, CExecMap.exe.offset))


def _record_exec_map(ev: ExecMapEvent, rec: Record) -> None:
    rec["call"] = ev.call
    rec["prot"] = ev.prot
    if ev.call == "mmap":
        rec["fd"] = ev.fd
    elif ev.fd == MAP_CALL_UNTRACKED:
        rec["untracked"] = True   # more denied mappings than the kernel tracks: refused whole
    _record_exe(ev.exe, ev.h.flags, rec)


def _describe_exec_map(rec: Record, who: str) -> str:
    return f"exec-map ({rec.get('call', 'mmap')}) {(rec.get('exe') or {}).get('name', '?')} {who}"


# ---- fork / exit ---------------------------------------------------------------

def _decode_fork(data: bytes) -> ForkEvent:
    f = _FORK.unpack(data)
    return ForkEvent(h=header_of(f), child_pid=f[_HEAD])


def _record_fork(ev: ForkEvent, rec: Record) -> None:
    rec["child_pid"] = ev.child_pid
    if ev.h.flags & FLAG_THREAD:
        rec["thread"] = True


def _decode_exit(data: bytes) -> ExitEvent:
    f = _EXIT.unpack(data)
    return ExitEvent(h=header_of(f), exit_code=f[_HEAD])


def _record_exit(ev: ExitEvent, rec: Record) -> None:
    rec["exit_code"] = ev.exit_code


# ---- connect / send / stratum --------------------------------------------------

def _net_event(cls: Callable[..., _N], data: bytes) -> _N:
    f = _NET.unpack(data)
    family, protocol, dport, sport, _pad, daddr, saddr = f[_HEAD:]
    return cls(h=header_of(f), family=family, protocol=protocol, daddr=addr_text(family, daddr), dport=dport,
               saddr=addr_text(family, saddr), sport=sport)


_new_net_event = _builder(NetEvent)


def _decode_net(data: bytes) -> NetEvent:
    return _net_event(_new_net_event, data)


def _record_net(ev: NetEvent, rec: Record) -> None:
    rec.update(protocol=ev.proto_name, daddr=ev.daddr, dport=ev.dport, saddr=ev.saddr, sport=ev.sport)
    if ev.h.flags & FLAG_V4_MAPPED:
        rec["v4_mapped"] = True
    if ev.h.flags & FLAG_SOURCE_ROUTED:
        rec["source_routed"] = True
    if ev.h.flags & FLAG_LOOPBACK:
        rec["loopback"] = True
    if ev.h.flags & FLAG_SSH:
        rec["ssh"] = True


def _decode_stdio(data: bytes) -> StdioSocketEvent:
    return _net_event(StdioSocketEvent, data)


def _describe_net(rec: Record, who: str) -> str:
    return f"{rec.get('kind')} {rec.get('protocol', '')} {rec.get('daddr')}:{rec.get('dport')} {who}"


def _decode_stratum(data: bytes) -> StratumEvent:
    c = from_record(CStratum, data)
    off = CStratum.payload.offset
    return StratumEvent(**net_fields(c.n, data), payload=data[off: off + min(c.payload_len, PAYLOAD_LEN)])


def _record_stratum(ev: StratumEvent, rec: Record) -> None:
    _record_net(ev, rec)
    rec["payload"] = safe_text(ev.payload, 128)


# ---- socket / tcp state --------------------------------------------------------

def _decode_socket(data: bytes) -> SocketEvent:
    f = _SOCKET.unpack(data)
    return SocketEvent(h=header_of(f), family=f[_HEAD], sock_type=f[_HEAD + 1], protocol=f[_HEAD + 2])


def _record_socket(ev: SocketEvent, rec: Record) -> None:
    rec.update(family=_FAMILIES.get(ev.family, str(ev.family)),
               type=_SOCK_TYPES.get(ev.sock_type & 0xF, str(ev.sock_type)), protocol=ev.protocol)


def _describe_socket(rec: Record, who: str) -> str:
    return f"socket {rec.get('family')}/{rec.get('type')} {who}"


def _decode_tcp_state(data: bytes) -> TcpStateEvent:
    f = _TCP_STATE.unpack(data)
    family, oldstate, newstate, _pad, sport, dport, saddr, daddr = f[_HEAD:]
    return _tcp_state_event(h=header_of(f), family=family, oldstate=oldstate, newstate=newstate,
                            saddr=addr_text(family, saddr), sport=sport, daddr=addr_text(family, daddr), dport=dport)


_tcp_state_event = _builder(TcpStateEvent)


def tcp_state_name(state: int) -> str:
    return _TCP_STATES.get(state) or str(state)


def _record_tcp_state(ev: TcpStateEvent, rec: Record) -> None:
    rec.update(daddr=ev.daddr, dport=ev.dport, saddr=ev.saddr, sport=ev.sport,
               oldstate=tcp_state_name(ev.oldstate), newstate=tcp_state_name(ev.newstate))


# ---- cgroup birth / boundary (issue 10) ------------------------------------------

def _path(c: CCgroupBirth | CBoundary, data: bytes) -> bytes:
    off = type(c).path.offset
    return data[off: off + min(c.path_len, CGPATH_LEN)].split(b"\0", 1)[0]


def _decode_birth(data: bytes) -> CgroupBirthEvent:
    c = from_record(CCgroupBirth, data)
    return CgroupBirthEvent(h=header_at(data), cgroup_id=c.cgroup_id, selector=c.selector, level=c.level,
                            path=_path(c, data))


def _record_birth(ev: CgroupBirthEvent, rec: Record) -> None:
    rec.update(cgroup=safe_text(ev.path, 512), new_cgroup_id=ev.cgroup_id, selector=ev.selector)


def _describe_birth(rec: Record, who: str) -> str:
    return f"cgroup {rec.get('cgroup')} born an agent (selector {rec.get('selector')}) {who}"


def _decode_boundary(data: bytes) -> BoundaryEvent:
    c = from_record(CBoundary, data)
    return BoundaryEvent(h=header_at(data), dst_cgroup_id=c.dst_cgroup_id, moved_pid=c.moved_pid,
                         dst_agent=c.dst_agent, path=_path(c, data))


def _record_boundary(ev: BoundaryEvent, rec: Record) -> None:
    rec.update(moved_pid=ev.moved_pid, dst_cgroup=safe_text(ev.path, 512), dst_cgroup_id=ev.dst_cgroup_id)
    if ev.h.flags & FLAG_OTHER_MOVER:
        rec["other_mover"] = True


def _describe_boundary(rec: Record, who: str) -> str:
    return f"boundary escape: pid {rec.get('moved_pid')} moved to {rec.get('dst_cgroup')} {who}"


def _decode_unix(data: bytes) -> UnixEvent:
    c = from_record(CUnix, data)
    off = CUnix.path.offset
    raw = data[off: off + UNIX_NAME_LEN]
    if c.len:                                   # abstract: exactly len bytes after the leading NUL
        return UnixEvent(h=header_at(data), name=raw[1: min(c.len, UNIX_NAME_LEN)], abstract=True)
    return UnixEvent(h=header_at(data), name=raw.split(b"\0", 1)[0], abstract=False)


def _record_unix(ev: UnixEvent, rec: Record) -> None:
    rec["unix"] = safe_text(ev.shown, 256) if ev.name or ev.abstract else "?"


def _describe_unix(rec: Record, who: str) -> str:
    return f"unix connect to {rec.get('unix')} {who}"


# ---- the registry --------------------------------------------------------------

# the registry holds specs of different event dataclasses: each entry is
# checked where it is built, and dispatch (spec_of, decode) pairs them again
AnySpec: TypeAlias = EventSpec[Any]

EVENT_TYPES: dict[EventType, AnySpec] = {s.type: s for s in (
    EventSpec(EventType.EXEC, "pc_exec", CExec, ExecEvent, _decode_exec, _record_exec, _describe_exec, "exec"),
    EventSpec(EventType.FORK, "pc_fork", CFork, ForkEvent, _decode_fork, _record_fork),
    EventSpec(EventType.EXIT, "pc_exit", CExit, ExitEvent, _decode_exit, _record_exit),
    EventSpec(EventType.CONNECT, "pc_net", CNet, NetEvent, _decode_net, _record_net, _describe_net, "network"),
    EventSpec(EventType.SEND, "pc_net", CNet, NetEvent, _decode_net, _record_net, _describe_net, "network"),
    EventSpec(EventType.PACKET, "pc_net", CNet, NetEvent, _decode_net, _record_net, _describe_net, "network"),
    EventSpec(EventType.STDIO_SOCKET, "pc_net", CNet, StdioSocketEvent, _decode_stdio, _record_net,
              _describe_net),   # issue 12
    EventSpec(EventType.SOCKET, "pc_socket", CSocket, SocketEvent, _decode_socket, _record_socket, _describe_socket),
    EventSpec(EventType.TCP_STATE, "pc_tcp_state", CTcpState, TcpStateEvent, _decode_tcp_state, _record_tcp_state),
    EventSpec(EventType.STRATUM, "pc_stratum", CStratum, StratumEvent, _decode_stratum, _record_stratum, _describe_net),
    EventSpec(EventType.CGROUP_BIRTH, "pc_cgroup_birth", CCgroupBirth, CgroupBirthEvent, _decode_birth,
              _record_birth, _describe_birth),
    EventSpec(EventType.BOUNDARY, "pc_boundary", CBoundary, BoundaryEvent, _decode_boundary, _record_boundary,
              _describe_boundary),
    EventSpec(EventType.UNIX, "pc_unix", CUnix, UnixEvent, _decode_unix, _record_unix, _describe_unix),
    EventSpec(EventType.EXEC_MAP, "pc_exec_map", CExecMap, ExecMapEvent, _decode_exec_map, _record_exec_map,
              _describe_exec_map, "exec"),
)}

BY_KIND: dict[str, AnySpec] = {s.kind: s for s in EVENT_TYPES.values()}
# records dispatch on the dataclass (CONNECT and SEND share NetEvent and its shape)
BY_CLASS: dict[type[Event], AnySpec] = {}
for _s in EVENT_TYPES.values():
    BY_CLASS.setdefault(_s.cls, _s)
del _s

# Every mirrored struct, by its C name: the layout test walks this table.
C_STRUCTS: dict[str, type[C.Structure]] = {
    "pc_header": CHeader, **{s.cname: s.cstruct for s in EVENT_TYPES.values()}, **MAP_STRUCTS,
}

_DECODERS: dict[int, Callable[[bytes], Event]] = {t.value: s.decode for t, s in EVENT_TYPES.items()}


def spec_of(ev: Event) -> AnySpec | None:
    """The entry of an event's dataclass, or of its nearest registered base."""
    for cls in type(ev).__mro__:
        spec = BY_CLASS.get(cls)
        if spec is not None:
            return spec
    return None


def spec_of_kind(kind: object) -> AnySpec | None:
    """The event type of a record's ``kind``, or None (not an event record, or not a string)."""
    return BY_KIND.get(kind) if isinstance(kind, str) else None


def decode(data: bytes) -> Event:
    """Decode one ring-buffer record. Raises DecodeError on malformed input."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty record")
    dec = _DECODERS.get(data[0])
    if dec is None:
        raise DecodeError(f"unknown event type {data[0]}")
    return dec(data)
