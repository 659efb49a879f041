"""ebpf/pycontain.h compiled by the host C compiler vs the Python mirrors:
struct sizes and offsets (core.event_types.C_STRUCTS) and constants
(kernel.abi.C_CONSTANTS)."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pycontain.core import event_types as et
from pycontain.core import events as ev
from pycontain.kernel.abi import C_CONSTANTS

EBPF = Path(__file__).resolve().parents[2] / "ebpf"
HEADER = EBPF / "pycontain.h"
_DEFINE = re.compile(r"\s*#\s*define\s+(\w+)\s")


def _c_program(body: list[str], prelude: tuple[str, ...] = ()) -> str:
    return "\n".join(['#include <stdio.h>', '#include <stddef.h>', f'#include "{HEADER}"', *prelude,
                      "int main(void) {", *body, "return 0; }"])


def _layout_lines() -> list[str]:
    lines = []
    for cname, struct in et.C_STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in struct._fields_:
            lines.append(f'printf("{cname}.{fname} %zu %zu\\n", offsetof(struct {cname}, {fname}), '
                         f'sizeof(((struct {cname} *)0)->{fname}));')
    return lines


def _bpf_only_defines(names) -> list[str]:
    """The #define lines of mirrored names that ebpf/ declares outside pycontain.h
    (BPF-only sources do not compile on the host: their lines are copied)."""
    in_header = {m.group(1) for line in HEADER.read_text().splitlines() if (m := _DEFINE.match(line))}
    out = []
    for src in sorted(EBPF.glob("*.[ch]")):
        for line in src.read_text().splitlines():
            m = _DEFINE.match(line)
            if m and m.group(1) in names and m.group(1) not in in_header and src != HEADER:
                out.append(line)
    return out


def _compile_and_run(d: Path, source: str) -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no host C compiler")
    (d / "p.c").write_text(source)
    built = subprocess.run([cc, "-o", str(d / "p"), str(d / "p.c")], capture_output=True, text=True, check=False)
    if built.returncode:
        pytest.fail(f"host compiler failed on the generated program:\n{built.stderr}")
    return subprocess.run([str(d / "p")], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, tuple[int, ...]]:
    out = _compile_and_run(tmp_path_factory.mktemp("layout"), _c_program(_layout_lines()))
    layout: dict[str, tuple[int, ...]] = {}
    for line in out.splitlines():
        name, *nums = line.split()
        layout[name] = tuple(int(n) for n in nums if n != "size")
    return layout


@pytest.fixture(scope="module")
def c_constants(tmp_path_factory) -> dict[str, int]:
    body = [f'printf("{n} %lld\\n", (long long)({n}));' for n in C_CONSTANTS]
    source = _c_program(body, tuple(_bpf_only_defines(C_CONSTANTS)))
    out = _compile_and_run(tmp_path_factory.mktemp("constants"), source)
    return {name: int(v) for name, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(et.C_STRUCTS))
def test_struct_matches_ctypes_mirror(c_layout, cname):
    struct = et.C_STRUCTS[cname]
    assert c_layout[cname] == (ctypes.sizeof(struct),), cname
    for fname, *_ in struct._fields_:
        field = getattr(struct, fname)
        assert c_layout[f"{cname}.{fname}"] == (field.offset, field.size), f"{cname}.{fname}"


@pytest.mark.parametrize("name", sorted(C_CONSTANTS))
def test_constant_matches_python_mirror(c_constants, name):
    assert c_constants[name] == C_CONSTANTS[name], f"{name}: C {c_constants[name]}, Python {C_CONSTANTS[name]}"


def test_every_enum_member_of_the_header_is_mirrored():
    """A new enum value in pycontain.h needs its Python mirror (and so a row in C_CONSTANTS)."""
    enums = re.findall(r"enum\s+\w+\s*\{(.*?)\}", HEADER.read_text(), re.DOTALL)
    members = {m for body in enums for m in re.findall(r"\b(PC_\w+)\s*=", body)}
    assert members and members <= set(C_CONSTANTS), sorted(members - set(C_CONSTANTS))


def test_registry_covers_every_event_type():
    assert set(et.EVENT_TYPES) == set(ev.EventType)
    for t, spec in et.EVENT_TYPES.items():
        assert spec.type is t and spec.kind == t.name.lower()
        assert et.BY_KIND[spec.kind] is spec and et.C_STRUCTS[spec.cname] is spec.cstruct


def _exec_record(argv: list[bytes], filename: bytes = b"/bin/x") -> bytes:
    c = ev.CExec()
    c.h.type = ev.EventType.EXEC
    c.h.pid = 42
    args = b"\0".join(argv) + b"\0"
    c.argc = len(argv)
    c.args_len = len(args)
    c.filename = filename
    c.filename_len = len(filename)
    raw = bytearray(bytes(c))
    raw[ev.CExec.args.offset: ev.CExec.args.offset + len(args)] = args
    return bytes(raw)


def test_decode_exec_keeps_every_argv_entry():
    e = et.decode(_exec_record([b"sh", b"-c", b"echo hi"]))
    assert isinstance(e, ev.ExecEvent)
    assert e.argv == (b"sh", b"-c", b"echo hi") and e.filename == b"/bin/x" and e.h.pid == 42


def test_an_exec_record_cut_after_its_argv_decodes_whole():
    """The kernel queues an exec record only up to its last argv byte
    (pc_exec_size in ebpf/exec.c): the cut record decodes as the whole one."""
    argv = [b"sh", b"-c", b"echo hi"]
    full = _exec_record(argv)
    used = len(b"\0".join(argv)) + 1
    cut = et.decode(full[: ev.CExec.args.offset + used])
    assert cut == et.decode(full)
    assert cut.argv == tuple(argv) and cut.filename == b"/bin/x"
    with pytest.raises(ev.DecodeError):
        et.decode(full[: ev.CExec.args.offset - 1])      # the fixed part is never cut


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x63" + bytes(200), bytes([ev.EventType.FORK]) + bytes(10)])
def test_bad_or_short_records_raise_decode_error(data):
    with pytest.raises(ev.DecodeError):
        et.decode(data)


def test_every_event_type_decodes_at_its_size():
    sizes = {ev.EventType.EXEC: ev.CExec, ev.EventType.FORK: ev.CFork, ev.EventType.EXIT: ev.CExit,
             ev.EventType.CONNECT: ev.CNet, ev.EventType.SEND: ev.CNet, ev.EventType.SOCKET: ev.CSocket,
             ev.EventType.TCP_STATE: ev.CTcpState, ev.EventType.STRATUM: ev.CStratum}
    for t, struct in sizes.items():
        # an exec record is queued up to its last argv byte: no argv, no args bytes
        size = ev.CExec.args.offset if struct is ev.CExec else ctypes.sizeof(struct)
        raw = bytes([t]) + bytes(size - 1)
        assert et.decode(raw).h.type == t
        with pytest.raises(ev.DecodeError):
            et.decode(raw[:-1])


def test_header_unpack_reads_every_ctypes_field():
    """decode() reads pc_header with one struct.unpack: it must agree with CHeader."""
    assert ev._HEADER.size == ctypes.sizeof(ev.CHeader)
    c = ev.CHeader(type=4, verdict=1, flags=0x9, rule_id=0x11223344, pid=101, tid=102, ppid=103,
                   uid=104, agent_id=105, ts_ns=2**40 + 6, start_ns=2**41 + 7, cgroup_id=2**42 + 8,
                   comm=b"kworker/0:1")
    h = ev.header_at(bytes(c))
    for name, _t in ev.CHeader._fields_:
        if not name.startswith("_"):
            assert getattr(h, name) == getattr(c, name), name


@pytest.mark.parametrize("cname", sorted(et.RECORD_STRUCTS))
def test_record_struct_reads_the_ctypes_fields(cname):
    """Fixed records are decoded with one precompiled struct.unpack each
    (event_types.RecordStruct): every field it reads must sit where the
    ctypes mirror (checked against C above) has it."""
    rs = et.RECORD_STRUCTS[cname]
    raw = bytes((i * 37 + 11) & 0xFF for i in range(ctypes.sizeof(rs.cstruct)))   # distinct bytes in every field
    c = rs.cstruct.from_buffer_copy(raw)
    tail = rs.struct.unpack_from(raw)[14:]
    skipped = {"exe"} if cname == "pc_exec" else set()     # read apart (_exe_at; test below)
    fields = [name for name, _t in rs.cstruct._fields_ if name != "h" and name not in skipped][: len(tail)]
    for name, got in zip(fields, tail, strict=True):
        want = getattr(c, name)
        if isinstance(want, ctypes.Array):
            want = bytes(want)
        elif isinstance(want, bytes):      # c_char arrays: compare the raw bytes
            off, size = getattr(rs.cstruct, name).offset, getattr(rs.cstruct, name).size
            want = raw[off: off + size]
        assert got == want, f"{cname}.{name}"
    last = getattr(rs.cstruct, fields[-1])
    assert rs.struct.size == last.offset + last.size <= rs.size


def test_exe_struct_reads_the_ctypes_fields():
    raw = bytes((i * 53 + 7) & 0xFF for i in range(ctypes.sizeof(ev.CExe)))
    c = ev.CExe.from_buffer_copy(raw)
    got = et._EXE.unpack_from(raw)
    assert et._EXE.size == ctypes.sizeof(ev.CExe)
    assert got[:7] == (c.dev, c.ino, c.mtime_sec, c.nlink, c.uid, c.mode, c.name_len)
    assert got[7] == raw[ev.CExe.name.offset:]


@pytest.mark.parametrize("etype", [ev.EventType.EXEC, ev.EventType.CONNECT, ev.EventType.TCP_STATE,
                                   ev.EventType.FORK, ev.EventType.STDIO_SOCKET])
def test_decoded_events_are_the_dataclasses_their_init_builds(etype):
    """Frequent records skip the frozen dataclass __init__ (event_types._builder):
    what decode returns must be the object that __init__ builds from the same
    fields (every field set, equal, same hash), and stay frozen."""
    import dataclasses

    spec = et.EVENT_TYPES[etype]
    raw = bytearray((i * 37 + 11) & 0xFF for i in range(ctypes.sizeof(spec.cstruct)))
    raw[0] = etype
    got = et.decode(bytes(raw))
    assert type(got) is spec.cls
    assert set(vars(got)) == {f.name for f in dataclasses.fields(spec.cls)}
    built = spec.cls(**{f.name: getattr(got, f.name) for f in dataclasses.fields(spec.cls)})
    assert got == built and hash(got) == hash(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.h = None
