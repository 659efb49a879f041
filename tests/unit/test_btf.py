"""The BTF parser against a synthetic blob and the running kernel."""

from __future__ import annotations

import os
import struct

import pytest

from pycontain.kernel import btf


def _blob() -> bytes:
    """int; struct inner {int a; int b;}; struct outer {int x; bitfield y:3;
    union {struct inner; }; ...} encoded by hand per Documentation/bpf/btf.rst."""
    strings = b"\0int\0inner\0a\0b\0outer\0x\0y\0mm_like\0arg_start\0f\0"
    off = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in
           ("int", "inner", "a", "b", "outer", "x", "y", "mm_like", "arg_start", "f")}

    def t(name, kind, vlen, size_or_type, kflag=0):
        return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size_or_type)

    types = b""
    types += t(off["int"], btf.KIND_INT, 0, 4) + struct.pack("<I", 32)                 # 1 int
    types += t(0, btf.KIND_FUNC_PROTO, 1, 1) + struct.pack("<II", 0, 1)                  # 2 (skipped)
    types += t(off["inner"], btf.KIND_STRUCT, 2, 8)                                      # 3 inner
    types += struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", off["b"], 1, 32)
    types += t(0, btf.KIND_UNION, 1, 8) + struct.pack("<III", 0, 3, 0)                   # 4 anon union
    types += t(off["outer"], btf.KIND_STRUCT, 3, 24, kflag=1)                            # 5 outer
    types += struct.pack("<III", off["x"], 1, 0)
    types += struct.pack("<III", off["y"], 1, (3 << 24) | 33)                            # y:3 at bit 33
    types += struct.pack("<III", 0, 4, 64)                                              # anon at byte 8
    types += t(0, btf.KIND_CONST, 0, 5)                                                  # 6 const outer
    types += t(off["f"], btf.KIND_FUNC, 0, 2)                                            # 7 func f
    types += t(off["mm_like"], btf.KIND_STRUCT, 1, 64) + struct.pack("<III", off["arg_start"], 1, 384)
    hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_synthetic_offsets_and_anonymous_members():
    b = btf.Btf(_blob())
    assert b.member_offset("inner", "b") == 4
    assert b.member_offset("outer", "x") == 0
    assert b.member_offset("outer", "a") == 8        # through the anonymous union
    assert b.member_offset("outer", "b") == 12
    assert b.member_offset("mm_like", "arg_start") == 48
    assert b.funcs["f"] == 7


def test_synthetic_errors():
    b = btf.Btf(_blob())
    with pytest.raises(btf.BtfError, match="bitfield"):
        b.member_offset("outer", "y")
    with pytest.raises(btf.BtfError, match="not in BTF"):
        b.member_offset("outer", "nope")
    with pytest.raises(btf.BtfError, match="not in BTF"):
        b.member_offset("nostruct", "x")
    with pytest.raises(btf.BtfError, match="magic"):
        btf.Btf(b"\0" * 40)
    with pytest.raises(btf.BtfError):
        btf.Btf(_blob()[:30])


@pytest.mark.skipif(not os.access(btf.VMLINUX_BTF, os.R_OK), reason="no readable kernel BTF")
def test_live_kernel_offsets_are_plausible():
    offs = btf.kernel_offsets()
    assert set(offs) == set(btf.NEEDED)
    # tgid follows pid in task_struct (both pid_t); arg_end follows arg_start
    assert offs["PC_OFF_TASK_TGID"] == offs["PC_OFF_TASK_PID"] + 4
    assert offs["PC_OFF_MM_ARG_END"] == offs["PC_OFF_MM_ARG_START"] + 8
    assert all(v % 4 == 0 for v in offs.values())
    assert btf.kernel_offsets() is offs            # cached per process


@pytest.mark.skipif(not os.access(btf.VMLINUX_BTF, os.R_OK), reason="no readable kernel BTF")
def test_live_kernel_file_offsets_follow_nested_members():
    """issue 11: dotted members walk into named nested structs (file.f_path.dentry)."""
    b = btf.kernel_btf()
    offs = btf.file_offsets(b)
    assert set(offs) == set(btf.FILE_NEEDED)
    assert offs["PC_OFF_FILE_DENTRY"] == b.member_offset("file", "f_path") + b.member_offset("path", "dentry")
    assert offs["PC_OFF_DENTRY_NAME_PTR"] == b.member_offset("dentry", "d_name") + b.member_offset("qstr", "name")
