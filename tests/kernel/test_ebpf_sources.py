"""Every file in ebpf/ compiles on its own: each hook file includes the
headers it uses, nothing relies on another hook file having been compiled
before it, and no macro clashes (the loader passes no -Wno-macro-redefined).

Compiled with the loader's own cflags and include expansion, so the test and
the loader cannot drift; the cgroup programs of each hook file are loaded
(verified) from that file alone too.
"""

from __future__ import annotations

import pytest

from pycontain.kernel.cgroup_attach import PROGRAMS
from pycontain.kernel.loader import BASE_HEADERS, HOOK_FILES, Probes, ebpf_dir, expand_includes

HEADERS = (*BASE_HEADERS, "net.bpf.h", "detect.bpf.h")


# A header has no program of its own, and BCC emits BTF only for a file with
# one: without BTF the kernel refuses a bpf_sk_storage map (net.bpf.h's
# pc_sk_infos). The headers are compiled with this empty program after them.
HEADER_PROGRAM = "\nint pc_header_alone(struct __sk_buff *skb) { return 1; }\n"


def _compile_alone(name: str, extra: str = ""):
    from bcc import BPF

    text = expand_includes(f'#include "{name}"\n', ebpf_dir()) + extra
    return BPF(text=text.encode(), cflags=Probes(ringbuf_pages=16).cflags())


@pytest.mark.parametrize("name", HEADERS)
def test_header_compiles_alone(privileged, capfd, name):
    b = _compile_alone(name, HEADER_PROGRAM)
    try:
        err = capfd.readouterr().err
        assert "warning:" not in err and "error:" not in err, err
    finally:
        b.cleanup()


@pytest.mark.parametrize("name", HOOK_FILES)
def test_hook_file_compiles_and_loads_alone(privileged, capfd, name):
    """BPF() also verifies and attaches the file's tracepoint programs."""
    src = (ebpf_dir() / name).read_text()
    b = _compile_alone(name)
    try:
        err = capfd.readouterr().err
        assert "warning:" not in err and "error:" not in err, err
        progs = [p for p in PROGRAMS if f"int {p.function}(" in src]
        for p in progs:
            b.load_func(p.function.encode(), p.prog_type, attach_type=p.attach_type)
        if name in ("connect.c", "socket.c", "stratum.c"):
            assert progs, f"no cgroup program found in {name}"
    finally:
        b.cleanup()



def test_full_program_compiles_without_warnings(privileged, capfd):
    """The loader's text (all hook files, headers inlined once) is clean too."""
    from bcc import BPF

    p = Probes(ringbuf_pages=16)
    text, used = p.source()
    assert used == list(HOOK_FILES)
    b = BPF(text=text.encode(), cflags=p.cflags())
    try:
        err = capfd.readouterr().err
        assert "warning:" not in err and "error:" not in err, err
    finally:
        b.cleanup()
