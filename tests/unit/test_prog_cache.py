"""The BPF program cache's pure parts: map relocations, trust, file format."""

from __future__ import annotations

import os
import struct

import pytest

from pycontain.kernel import prog_cache
from pycontain.kernel.prog_cache import CacheMiss, Program


def insn(op: int, src: int = 0, dst: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def ld_map(fd: int, src: int = 1) -> bytes:
    """ld_imm64 r1, map fd: two instruction slots."""
    return insn(0x18, src=src, dst=1, imm=fd) + insn(0, imm=0)


EXIT = insn(0x95)
MOV0 = insn(0xb7, dst=0, imm=0)


def test_relocations_name_each_map_load_and_skip_the_second_slot():
    insns = MOV0 + ld_map(7) + ld_map(9, src=2) + insn(0x18, imm=7) + insn(0, imm=7) + EXIT
    assert prog_cache.map_relocations(insns, {7: "pc_a", 9: "pc_b"}) == ((1, "pc_a"), (3, "pc_b"))


def test_an_unknown_fd_or_pseudo_source_is_not_cached():
    with pytest.raises(CacheMiss, match="map fd 8"):
        prog_cache.map_relocations(ld_map(8), {7: "pc_a"})
    with pytest.raises(CacheMiss, match="source 4"):
        prog_cache.map_relocations(ld_map(7, src=4), {7: "pc_a"})


def test_relocate_points_each_load_at_this_modules_map():
    prog = Program(b"p", MOV0 + ld_map(7) + EXIT, ((1, "pc_a"),))
    out = prog_cache.relocate(prog, {"pc_a": 42})
    assert out == MOV0 + ld_map(42) + EXIT
    assert prog.insns == MOV0 + ld_map(7) + EXIT          # the cached copy is unchanged


def test_relocate_refuses_a_missing_map_or_a_moved_instruction():
    with pytest.raises(CacheMiss):
        prog_cache.relocate(Program(b"p", MOV0 + ld_map(7) + EXIT, ((1, "pc_gone"),)), {"pc_a": 3})
    with pytest.raises(CacheMiss):
        prog_cache.relocate(Program(b"p", MOV0 + ld_map(7) + EXIT, ((0, "pc_a"),)), {"pc_a": 3})


def test_maps_only_flags_hide_plain_programs_only():
    progs = [Program(b"tracepoint__sched__sched_process_exec", b"", ()),
             Program(b"raw_tracepoint__sys_enter", b"", ()), Program(b"pc_connect4", b"", ())]
    flags = prog_cache.maps_only_flags(progs)
    assert flags == ["-Dpc_connect4=pc_maps_only_decl_pc_connect4(void); "
                     "static __attribute__((unused)) int pc_maps_only_pc_connect4"]
    with pytest.raises(CacheMiss):
        prog_cache.maps_only_flags([Program(b"a b", b"", ())])


def test_a_cache_not_written_by_root_is_not_read(tmp_path):
    """A program read from a file someone other than root could write would be
    that someone's program: only root's files under root's directories count."""
    d = tmp_path / "cache"
    if os.geteuid() == 0:
        d.mkdir()
        os.chown(d, 65534, 65534)
    else:
        prog_cache.write(str(d), "k", [Program(b"pc_x", MOV0 + EXIT, ())])
    with pytest.raises(CacheMiss, match="others than root"):
        prog_cache.read(str(d), "k")


def test_root_owned_ancestors_are_trusted_and_sticky_ones_too():
    assert prog_cache._trusted_dirs("/")
    assert prog_cache._trusted_dirs("/usr/bin")
    assert prog_cache._trusted_dirs("/tmp")          # root's, sticky
    assert not prog_cache._trusted_dirs("/nonexistent/dir")


def test_cache_off(monkeypatch):
    monkeypatch.setenv("PYCONTAIN_BPF_CACHE", "off")
    assert prog_cache.cache_dir() is None
    with pytest.raises(CacheMiss):
        prog_cache.load("text", [])
    monkeypatch.setenv("PYCONTAIN_BPF_CACHE", "/some/dir")
    assert prog_cache.cache_dir() == "/some/dir"
    monkeypatch.delenv("PYCONTAIN_BPF_CACHE")
    assert prog_cache.cache_dir() == prog_cache.DEFAULT_DIR
