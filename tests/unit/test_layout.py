"""ebpf/pycontain.h compiled by the host C compiler vs the ctypes mirrors."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from pycontain.core import events as ev

HEADER = Path(__file__).resolve().parents[2] / "ebpf" / "pycontain.h"


def _c_program() -> str:
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{HEADER}"', "int main(void) {"]
    for cname, struct in ev.C_STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in struct._fields_:
            lines.append(f'printf("{cname}.{fname} %zu %zu\\n", offsetof(struct {cname}, {fname}), '
                         f'sizeof(((struct {cname} *)0)->{fname}));')
    lines += ["return 0; }"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, tuple[int, ...]]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no host C compiler")
    d = tmp_path_factory.mktemp("layout")
    (d / "l.c").write_text(_c_program())
    subprocess.run([cc, "-o", str(d / "l"), str(d / "l.c")], check=True)
    out = subprocess.run([str(d / "l")], check=True, capture_output=True, text=True).stdout
    layout: dict[str, tuple[int, ...]] = {}
    for line in out.splitlines():
        name, *nums = line.split()
        layout[name] = tuple(int(n) for n in nums if n != "size")
    return layout


@pytest.mark.parametrize("cname", sorted(ev.C_STRUCTS))
def test_struct_matches_ctypes_mirror(c_layout, cname):
    struct = ev.C_STRUCTS[cname]
    assert c_layout[cname] == (ctypes.sizeof(struct),), cname
    for fname, *_ in struct._fields_:
        field = getattr(struct, fname)
        assert c_layout[f"{cname}.{fname}"] == (field.offset, field.size), f"{cname}.{fname}"


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
    e = ev.decode(_exec_record([b"sh", b"-c", b"echo hi"]))
    assert isinstance(e, ev.ExecEvent)
    assert e.argv == (b"sh", b"-c", b"echo hi") and e.filename == b"/bin/x" and e.h.pid == 42


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x63" + bytes(200), bytes([ev.EventType.FORK]) + bytes(10)])
def test_bad_or_short_records_raise_decode_error(data):
    with pytest.raises(ev.DecodeError):
        ev.decode(data)


def test_every_event_type_decodes_at_its_size():
    sizes = {ev.EventType.EXEC: ev.CExec, ev.EventType.FORK: ev.CFork, ev.EventType.EXIT: ev.CExit,
             ev.EventType.CONNECT: ev.CNet, ev.EventType.SEND: ev.CNet, ev.EventType.SOCKET: ev.CSocket,
             ev.EventType.TCP_STATE: ev.CTcpState, ev.EventType.STRATUM: ev.CStratum}
    for t, struct in sizes.items():
        raw = bytes([t]) + bytes(ctypes.sizeof(struct) - 1)
        assert ev.decode(raw).h.type == t
        with pytest.raises(ev.DecodeError):
            ev.decode(raw[:-1])


def test_header_unpack_reads_every_ctypes_field():
    """decode() reads pc_header with one struct.unpack: it must agree with CHeader."""
    assert ev._HEADER.size == ctypes.sizeof(ev.CHeader)
    c = ev.CHeader(type=4, verdict=1, flags=0x9, rule_id=0x11223344, pid=101, tid=102, ppid=103,
                   uid=104, agent_id=105, ts_ns=2**40 + 6, start_ns=2**41 + 7, cgroup_id=2**42 + 8,
                   comm=b"kworker/0:1")
    h = ev._header_at(bytes(c))
    for name, _t in ev.CHeader._fields_:
        if not name.startswith("_"):
            assert getattr(h, name) == getattr(c, name), name
