"""The BPF program cache (kernel/prog_cache.py): a warm start loads the very
programs a compile loads, and a cache anyone but root could have written, or
one the kernel rejects, means a compile."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import struct

import pytest
from exec_harness import exec_only_ebpf_dir

from pycontain.kernel import cgroup_attach, pins

BPF_OBJ_GET_INFO_BY_FD = 15


def prog_tag(fd: int) -> bytes:
    """The kernel's tag of a loaded program: a hash of the instructions it was
    given, map fds zeroed (kernel/bpf/core.c bpf_prog_calc_tag)."""
    info = ctypes.create_string_buffer(16)
    pins._bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, 16, ctypes.addressof(info)).ljust(16, b"\0"))
    return info.raw[8:16]


def loaded(cache_dir, monkeypatch):
    from pycontain.kernel.loader import Probes
    monkeypatch.setenv("PYCONTAIN_BPF_CACHE", str(cache_dir))
    p = Probes()
    p.load()
    return p


def tags(p) -> dict[bytes, bytes]:
    cgroup_attach.hook_status(p.bpf)          # loads every cgroup program
    return {name: prog_tag(fn.fd) for name, fn in p.bpf.funcs.items()}


def cache_file(d) -> str:
    files = [f for f in os.listdir(d) if f.endswith(".json")]
    assert len(files) == 1
    return os.path.join(d, files[0])


def test_warm_start_loads_the_programs_a_compile_loads(privileged, tmp_path, monkeypatch):
    d = tmp_path / "cache"
    cold = loaded(d, monkeypatch)
    try:
        assert not hasattr(cold.bpf, "pc_has_function")      # compiled
        cold_tags = tags(cold)
        cold_hooks = cold.hook_status()
    finally:
        cold.close()
    assert os.stat(cache_file(d)).st_mode & 0o777 == 0o600
    warm = loaded(d, monkeypatch)
    try:
        assert hasattr(warm.bpf, "pc_has_function")          # from the cache
        assert tags(warm) == cold_tags
        assert len(cold_tags) > 20
        assert warm.hook_status() == cold_hooks
        assert all(v.startswith("attached") for k, v in cold_hooks.items() if k.startswith(("sched:", "raw_tp:")))
    finally:
        warm.close()


@pytest.fixture
def exec_only(privileged, tmp_path, monkeypatch):
    monkeypatch.setenv("PYCONTAIN_EBPF_DIR", str(exec_only_ebpf_dir(tmp_path)))
    d = tmp_path / "cache"
    loaded(d, monkeypatch).close()                           # writes the cache
    return d


def test_a_cache_others_could_write_is_not_used(exec_only, monkeypatch, caplog):
    caplog.set_level("DEBUG", logger="pycontain.kernel.loader")
    os.chmod(cache_file(exec_only), 0o646)
    p = loaded(exec_only, monkeypatch)
    try:
        assert not hasattr(p.bpf, "pc_has_function")
        assert "may be written by others than root" in caplog.text
    finally:
        p.close()
    assert os.stat(cache_file(exec_only)).st_mode & 0o777 == 0o600   # rewritten by the compile


def test_a_program_the_kernel_rejects_means_a_compile(exec_only, monkeypatch, caplog):
    caplog.set_level("DEBUG", logger="pycontain.kernel.loader")
    path = cache_file(exec_only)
    with open(path) as fh:
        data = json.load(fh)
    for prog in data["programs"]:       # every program returns an uninitialised register
        prog["insns"] = base64.b64encode(struct.pack("<BBhi", 0x95, 0, 0, 0)).decode()
        prog["relocs"] = []
    with open(path, "w") as fh:
        json.dump(data, fh)
    p = loaded(exec_only, monkeypatch)
    try:
        assert not hasattr(p.bpf, "pc_has_function")
        assert "cached programs: Failed to load BPF program" in caplog.text
        assert p.hook_status()["sched:sched_process_exec"] == "attached"
    finally:
        p.close()
