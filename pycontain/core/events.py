"""Typed kernel events and their decoding.

The ctypes structures mirror ebpf/pycontain.h field by field (the layout test
compiles the header and compares sizes, offsets and constants). Which struct,
dataclass, decoder and record shape belong to which event type is said once,
in the registry (:mod:`pycontain.core.event_types`); its ``decode(data)``
dispatches on the first byte, the event type, and returns a frozen dataclass.
Strings from the kernel are agent-supplied: they are kept as bytes here and
rendered with :func:`pycontain.core.text.safe_text` wherever they are shown.
"""

from __future__ import annotations

import ctypes as C
import enum
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, TypeVar

COMM_LEN = 16
FILENAME_LEN = 256
ARGS_LEN = 1024
PAYLOAD_LEN = 64
NAME_LEN = 64
PATTERN_LEN = 32
MAX_PATTERNS = 64
MAX_LEVELS = 32
CGPATH_LEN = 256          # issue 10: cgroup v2 path kept in birth / boundary records
UNIX_NAME_LEN = 108       # issue 10: sun_path of a refused unix connect
BIRTH_AGENT_BASE = 0x80000000  # kernel-born agent ids: base | (cgroup id & 0x7fffffff)
EXE_NAME_LEN = 256
# rule ids of issue 11's kernel checks (PC_RULE_* of ebpf/pycontain.h)
RULE_HOLD = 0xFFFF
RULE_FILELESS = 0xFFFE
RULE_UNTRUSTED = 0xFFFD
# pc_exec_map.fd when the record is not an mmap of a descriptor (PC_MAP_CALL_*)
MAP_CALL_MPROTECT = 0xFFFFFFFF
MAP_CALL_MREMAP = 0xFFFFFFFE
MAP_CALL_UNTRACKED = 0xFFFFFFFD
MAP_CALLS = {MAP_CALL_MPROTECT: "mprotect", MAP_CALL_MREMAP: "mremap", MAP_CALL_UNTRACKED: "mprotect"}


class EventType(enum.IntEnum):
    EXEC = 1
    FORK = 2
    EXIT = 3
    CONNECT = 4
    SEND = 5
    SOCKET = 6
    TCP_STATE = 7
    STRATUM = 8
    CGROUP_BIRTH = 9    # issue 10
    BOUNDARY = 10       # issue 10
    UNIX = 11           # issue 10: a unix connect/sendmsg the local-services guard refused
    PACKET = 15      # issue 12: a packet denied by cgroup_skb egress (pc_net layout)
    EXEC_MAP = 12      # issue 11
    STDIO_SOCKET = 16  # issue 12: exec whose stdio is a socket to a remote peer (pc_net layout)


class Verdict(enum.IntEnum):
    ALLOW = 0
    DENY = 1
    WOULD_DENY = 2


class Flag(enum.IntFlag):
    ARGS_TRUNCATED = 1 << 0
    FILENAME_TRUNCATED = 1 << 1
    V4_MAPPED = 1 << 2
    KILLED = 1 << 3
    THREAD = 1 << 4
    OTHER_MOVER = 1 << 5    # issue 10: boundary escape made by another task
    SOURCE_ROUTED = 1 << 9   # issue 12: IPv4 source route / IPv6 routing header
    LOOPBACK = 1 << 10       # issue 12: the destination was judged as loopback
    HELD = 1 << 6          # issue 11: bits 6-8
    FILELESS = 1 << 7
    UNTRUSTED = 1 << 8
    SSH = 1 << 11            # issue 12: the stream opened with an SSH identification string
    SCRIPT = 1 << 12         # issue 11: a #! script under exec.trusted, held for its script's verdict


# Plain-int copies for the per-record path: `int & Flag.X` builds a Flag
# (~0.5 µs on Python 3.11), `int & FLAG_X` does not (scripts/bench_records.py).
FLAG_ARGS_TRUNCATED = int(Flag.ARGS_TRUNCATED)
FLAG_V4_MAPPED = int(Flag.V4_MAPPED)
FLAG_KILLED = int(Flag.KILLED)
FLAG_THREAD = int(Flag.THREAD)
FLAG_OTHER_MOVER = int(Flag.OTHER_MOVER)
FLAG_SOURCE_ROUTED = int(Flag.SOURCE_ROUTED)
FLAG_LOOPBACK = int(Flag.LOOPBACK)
FLAG_HELD = int(Flag.HELD)
FLAG_FILELESS = int(Flag.FILELESS)
FLAG_UNTRUSTED = int(Flag.UNTRUSTED)
FLAG_SSH = int(Flag.SSH)
FLAG_SCRIPT = int(Flag.SCRIPT)


class Mode(enum.IntEnum):
    ENFORCE = 0
    MONITOR = 1


class ConfigFlag(enum.IntFlag):
    NET_DEFAULT_DENY = 1 << 0
    DENY_RAW = 1 << 1
    DENY_PACKET = 1 << 2
    DETECT_STRATUM = 1 << 3
    TRACE_ALL = 1 << 4
    BIRTH = 1 << 5          # issue 10: new cgroups matched against the birth automaton
    LOCAL_GUARD = 1 << 6    # issue 10: loopback / unix destinations limited to own, listed, resolvers
    DENY_FAMILY = 1 << 7    # socket families no hook judges (vsock, rds, tipc...): killed at socket()
    EXEC_HOLD_ALL = 1 << 8      # issue 11: bits 8-10
    EXEC_FILELESS_DENY = 1 << 9
    EXEC_TRUSTED = 1 << 10
    SCAN = 1 << 11          # issue 12: scan detection in the kernel
    SSH = 1 << 12           # issue 12: SSH sessions only to network.ssh.allow
    INBOUND_LOOPBACK = 1 << 13  # issue 12: agent listeners reachable from loopback only
    INBOUND_DENY = 1 << 14  # issue 12: agent listeners reachable from nowhere
    STDIO_SOCKET = 1 << 15  # issue 12: kill an exec whose stdio is a socket to a remote peer


class PatternWhere(enum.IntEnum):
    BASENAME = 0
    ARGS = 1


# ---- ctypes mirrors of ebpf/pycontain.h ------------------------------------

class CHeader(C.Structure):
    _fields_ = [
        ("type", C.c_uint8), ("verdict", C.c_uint8), ("flags", C.c_uint16),
        ("rule_id", C.c_uint32), ("pid", C.c_uint32), ("tid", C.c_uint32),
        ("ppid", C.c_uint32), ("uid", C.c_uint32), ("agent_id", C.c_uint32),
        ("_pad0", C.c_uint32), ("ts_ns", C.c_uint64), ("start_ns", C.c_uint64),
        ("cgroup_id", C.c_uint64), ("comm", C.c_char * COMM_LEN),
    ]


class CExe(C.Structure):
    _fields_ = [
        ("dev", C.c_uint64), ("ino", C.c_uint64), ("mtime_sec", C.c_int64), ("nlink", C.c_uint32),
        ("uid", C.c_uint32), ("mode", C.c_uint32), ("name_len", C.c_uint32), ("name", C.c_char * EXE_NAME_LEN),
    ]


class CExec(C.Structure):
    _fields_ = [
        ("h", CHeader), ("argc", C.c_uint32), ("filename_len", C.c_uint16),
        ("args_len", C.c_uint16), ("exe", CExe), ("filename", C.c_char * FILENAME_LEN),
        ("args", C.c_char * ARGS_LEN),      # last: the kernel queues only args_len bytes of it
    ]


class CExecMap(C.Structure):
    _fields_ = [("h", CHeader), ("prot", C.c_uint32), ("fd", C.c_uint32), ("exe", CExe)]


class CDevIno(C.Structure):
    _fields_ = [("dev", C.c_uint64), ("ino", C.c_uint64)]


class CFork(C.Structure):
    _fields_ = [("h", CHeader), ("child_pid", C.c_uint32), ("_pad0", C.c_uint32)]


class CExit(C.Structure):
    _fields_ = [("h", CHeader), ("exit_code", C.c_int32), ("_pad0", C.c_uint32)]


class CNet(C.Structure):
    _fields_ = [
        ("h", CHeader), ("family", C.c_uint8), ("protocol", C.c_uint8),
        ("dport", C.c_uint16), ("sport", C.c_uint16), ("_pad0", C.c_uint16),
        ("daddr", C.c_uint8 * 16), ("saddr", C.c_uint8 * 16),
    ]


class CSocket(C.Structure):
    _fields_ = [
        ("h", CHeader), ("family", C.c_uint32), ("type", C.c_uint32),
        ("protocol", C.c_uint32), ("_pad0", C.c_uint32),
    ]


class CTcpState(C.Structure):
    _fields_ = [
        ("h", CHeader), ("family", C.c_uint8), ("oldstate", C.c_uint8),
        ("newstate", C.c_uint8), ("_pad0", C.c_uint8), ("sport", C.c_uint16),
        ("dport", C.c_uint16), ("saddr", C.c_uint8 * 16), ("daddr", C.c_uint8 * 16),
    ]


class CStratum(C.Structure):
    _fields_ = [
        ("n", CNet), ("payload_len", C.c_uint16), ("_pad0", C.c_uint16 * 3),
        ("payload", C.c_char * PAYLOAD_LEN),
    ]


class CConfig(C.Structure):
    _fields_ = [("mode", C.c_uint32), ("flags", C.c_uint32),
                ("tracked_levels", C.c_uint32), ("_pad0", C.c_uint32),
                ("birth_levels", C.c_uint32), ("_pad1", C.c_uint32)]     # issue 10


class CCgroupBirth(C.Structure):
    _fields_ = [("h", CHeader), ("cgroup_id", C.c_uint64), ("selector", C.c_uint32), ("level", C.c_uint32),
                ("path_len", C.c_uint16), ("_pad0", C.c_uint16 * 3), ("path", C.c_char * CGPATH_LEN)]


class CBoundary(C.Structure):
    _fields_ = [("h", CHeader), ("dst_cgroup_id", C.c_uint64), ("moved_pid", C.c_uint32),
                ("dst_agent", C.c_uint32), ("path_len", C.c_uint16), ("_pad0", C.c_uint16 * 3),
                ("path", C.c_char * CGPATH_LEN)]


class CUnix(C.Structure):
    _fields_ = [("h", CHeader), ("len", C.c_uint32), ("_pad0", C.c_uint32), ("path", C.c_char * UNIX_NAME_LEN),
                ("_pad1", C.c_uint32)]


class CCgPath(C.Structure):
    _fields_ = [("path", C.c_char * CGPATH_LEN)]


class CPortRule(C.Structure):
    _fields_ = [("tcp_rule", C.c_uint32), ("udp_rule", C.c_uint32)]


class CLpm4(C.Structure):
    _fields_ = [("prefixlen", C.c_uint32), ("addr", C.c_uint8 * 4)]


class CLpm6(C.Structure):
    _fields_ = [("prefixlen", C.c_uint32), ("addr", C.c_uint8 * 16)]


class CNameKey(C.Structure):
    _fields_ = [("name", C.c_char * NAME_LEN)]


class CPattern(C.Structure):
    _fields_ = [("rule_id", C.c_uint32), ("len", C.c_uint16), ("where", C.c_uint8),
                ("_pad0", C.c_uint8), ("pat", C.c_char * PATTERN_LEN)]


# The structs of the maps the controller writes, by their C name. The event
# structs are named by the registry (event_types.EVENT_TYPES); C_STRUCTS there
# is the union the layout test walks.
MAP_STRUCTS: dict[str, type[C.Structure]] = {
    "pc_config": CConfig, "pc_port_rule": CPortRule, "pc_lpm4": CLpm4, "pc_lpm6": CLpm6,
    "pc_name_key": CNameKey, "pc_pattern": CPattern, "pc_cg_path": CCgPath,
    "pc_exe": CExe, "pc_dev_ino": CDevIno,
}


# ---- typed events ------------------------------------------------------------

class Header(NamedTuple):
    """struct pc_header, decoded. A named tuple rather than a frozen
    dataclass: every record builds one, and a tuple is built in one step
    (a frozen dataclass sets its 13 fields one by one; scripts/bench_records.py).
    ``flags`` is a plain int of Flag bits: test it with the FLAG_* ints below
    (``int & Flag.X`` builds a Flag, ~0.5 µs)."""

    type: EventType
    verdict: Verdict
    flags: int
    rule_id: int
    pid: int
    tid: int
    ppid: int
    uid: int
    agent_id: int
    ts_ns: int
    start_ns: int
    cgroup_id: int
    comm: bytes

    @property
    def key(self) -> tuple[int, int]:
        """Processes are keyed by pid plus start time: pids are reused."""
        return (self.pid, self.start_ns)


# kind strings by type, computed once: `kind` is read several times per record
_KINDS: dict[int, str] = {t: t.name.lower() for t in EventType}


@dataclass(frozen=True)
class Event:
    h: Header

    @property
    def kind(self) -> str:
        return _KINDS[self.h.type]


@dataclass(frozen=True)
class ExeIdentity:
    """The file the kernel runs (issue 11): its own name, never the caller's."""

    name: bytes = b""       # dentry name of the file (links resolved)
    dev: int = 0            # kernel encoding: major << 20 | minor
    ino: int = 0
    nlink: int = 0
    uid: int = 0
    mode: int = 0
    mtime_sec: int = 0

    @property
    def known(self) -> bool:
        return bool(self.ino)


@dataclass(frozen=True)
class ExecEvent(Event):
    filename: bytes
    argv: tuple[bytes, ...]
    argc: int
    exe: ExeIdentity = field(default_factory=ExeIdentity)
    # filled by the controller while the process is held (never by the kernel)
    real_path: bytes = b""          # readlink /proc/PID/exe
    full_argv: bool = False         # argv was read whole from /proc/PID/cmdline
    ssh_forward: str = ""           # a held ssh's forwarding, judged on its effective config (issue 12)
    untrusted_script: str = ""      # why exec.trusted does not admit a held #! script (issue 11)

    @property
    def args_truncated(self) -> bool:
        return bool(self.h.flags & FLAG_ARGS_TRUNCATED) or len(self.argv) < self.argc


@dataclass(frozen=True)
class ExecMapEvent(Event):
    """A file mapped executable by an agent (issue 11), judged like an exec."""

    prot: int
    fd: int
    exe: ExeIdentity

    @property
    def call(self) -> str:
        """The call judged: "mmap" of fd, or "mprotect" / "mremap" of a
        tracked mapping of a file the agent may not execute."""
        return MAP_CALLS.get(self.fd, "mmap")


def exe_identity(c: CExe) -> ExeIdentity:
    name = bytes(c.name)[: min(c.name_len, EXE_NAME_LEN)].split(b"\0", 1)[0]
    return ExeIdentity(name=name, dev=c.dev, ino=c.ino, nlink=c.nlink, uid=c.uid, mode=c.mode,
                       mtime_sec=c.mtime_sec)


@dataclass(frozen=True)
class ForkEvent(Event):
    child_pid: int


@dataclass(frozen=True)
class ExitEvent(Event):
    exit_code: int


@dataclass(frozen=True)
class NetEvent(Event):
    """CONNECT or SEND."""

    family: int
    protocol: int
    daddr: str
    dport: int
    saddr: str
    sport: int

    @property
    def proto_name(self) -> str:
        return _PROTO_NAMES.get(self.protocol) or str(self.protocol)


@dataclass(frozen=True)
class StdioSocketEvent(NetEvent):
    """Issue 12: an exec whose stdin/stdout/stderr is a socket connected to
    daddr:dport (a reverse shell), judged at the end of execve (ebpf/stdio.c)."""


@dataclass(frozen=True)
class SocketEvent(Event):
    family: int
    sock_type: int
    protocol: int


@dataclass(frozen=True)
class TcpStateEvent(Event):
    family: int
    oldstate: int
    newstate: int
    saddr: str
    sport: int
    daddr: str
    dport: int


@dataclass(frozen=True)
class CgroupBirthEvent(Event):
    """A new cgroup matched a selector and was marked an agent in the kernel."""

    cgroup_id: int
    selector: int
    level: int
    path: bytes       # relative to the cgroup2 root, leading '/'


@dataclass(frozen=True)
class BoundaryEvent(Event):
    """An agent task moved to a cgroup outside its agent (h.agent_id: its agent)."""

    dst_cgroup_id: int
    moved_pid: int
    dst_agent: int
    path: bytes


@dataclass(frozen=True)
class UnixEvent(Event):
    """A unix connect/sendmsg the kernel refused (issue 10): the socket is
    neither the agent's own nor listed in network.local_services."""

    name: bytes          # a path, or an abstract name (shown with a leading "@")
    abstract: bool

    @property
    def shown(self) -> bytes:
        return (b"@" + self.name) if self.abstract else self.name


@dataclass(frozen=True)
class StratumEvent(NetEvent):
    payload: bytes = field(default=b"")


_PROTO_NAMES = {6: "tcp", 17: "udp"}
_ADDR_TEXT: dict[tuple[int, bytes], str] = {}   # agents talk to few addresses: text remembered
_ADDR_TEXT_MAX = 4096


def addr_text(family: int, raw: bytes | C.Array[C.c_uint8]) -> str:
    b = bytes(raw)
    key = (family, b)
    got = _ADDR_TEXT.get(key)
    if got is None:
        if len(_ADDR_TEXT) >= _ADDR_TEXT_MAX:
            _ADDR_TEXT.clear()
        got = _ADDR_TEXT[key] = _addr_text(family, b)
    return got


def _addr_text(family: int, b: bytes) -> str:
    if family == 2:
        return socket.inet_ntop(socket.AF_INET, b[:4])
    if family == 10:
        a = ipaddress.IPv6Address(b[:16])
        return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)
    return ""


# struct pc_header as one unpack (the layout test checks it against CHeader):
# every record starts with it, so decoding it is the hot path
HEADER_FORMAT = f"<BBH7I3Q{COMM_LEN}s"
_HEADER = struct.Struct(HEADER_FORMAT)
_TYPES = {t.value: t for t in EventType}
_VERDICTS = {v.value: v for v in Verdict}
_new_header = tuple.__new__


def header_of(fields: tuple[Any, ...]) -> Header:
    """A Header from the 14 unpacked pc_header fields (``_pad0`` included),
    as the first 14 items of a record's one ``struct`` unpack."""
    (etype, verdict, flags, rule_id, pid, tid, ppid, uid, agent_id, _pad,
     ts_ns, start_ns, cgroup_id, comm) = fields[:14]
    nul = comm.find(b"\0")
    return _new_header(Header, (_TYPES[etype], _VERDICTS.get(verdict, Verdict.ALLOW), flags, rule_id, pid, tid,
                                ppid, uid, agent_id, ts_ns, start_ns, cgroup_id, comm if nul < 0 else comm[:nul]))


def header_at(data: bytes, offset: int = 0) -> Header:
    return header_of(_HEADER.unpack_from(data, offset))


class NetFields(TypedDict):
    """The NetEvent fields of a pc_net, as keyword arguments of NetEvent."""

    h: Header
    family: int
    protocol: int
    daddr: str
    dport: int
    saddr: str
    sport: int


def net_fields(c: CNet, data: bytes) -> NetFields:
    """The NetEvent fields of a pc_net (connect, send, and the head of a stratum record)."""
    return NetFields(h=header_at(data), family=c.family, protocol=c.protocol,
                daddr=addr_text(c.family, c.daddr), dport=c.dport,
                saddr=addr_text(c.family, c.saddr), sport=c.sport)


class DecodeError(ValueError):
    pass


_S = TypeVar("_S", bound=C.Structure)


def from_record(struct: type[_S], data: bytes) -> _S:
    """`struct` read from the front of `data`; DecodeError if `data` is shorter."""
    if len(data) < C.sizeof(struct):
        raise DecodeError(f"short {struct.__name__} record: {len(data)} < {C.sizeof(struct)} bytes")
    return struct.from_buffer_copy(data[: C.sizeof(struct)])

