"""mprotect(PROT_EXEC) of a file mapping is judged like an exec (issue 11).

The "payload" is a file named xmrig (a denied name) holding six bytes of
x86-64 code, `mov eax, 42; ret`. The helper maps it without PROT_EXEC, flips
the range executable by one of several routes (mprotect, pkey_mprotect, in a
forked child, in another thread, after mremap, a memfd, past the 64 tracked
mappings, and under the READ_IMPLIES_EXEC personality, where a readable
mapping or mprotect(PROT_READ) is executable), calls it, and writes its
sentinel only when the call returned 42: the sentinel proves that code from
the denied file ran. Each route runs bare first (the sentinel is written),
then as an agent (the sentinel is never written, the kernel's record names
the file). A JIT's pattern (anonymous memory made executable, also where a
tracked mapping used to be) and an allowed file stay untouched.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest
from exec_harness import agent, collector, compile_c, denying, exec_probes  # noqa: F401  (fixtures)
from exec_harness import run_with_sentinel as _run

from pycontain.core.events import MAP_CALL_UNTRACKED, RULE_FILELESS, Flag, Mode, Verdict
from pycontain.core.kernel_rules import KernelTables

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the payload is x86-64 code")

CODE = bytes([0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3])   # mov eax, 42; ret

HELPER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const unsigned char code[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};

static void ran(void *p) {
    if (((int (*)(void))p)() == 42) {
        const char *s = getenv("PC_SENTINEL");
        if (s) close(open(s, O_CREAT | O_WRONLY, 0644));
    }
}

static void *map_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) exit(3);
    void *p = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) exit(4);
    return p;
}

static void *map_memfd(void) {
    int fd = memfd_create("innocent", 0);
    if (fd < 0 || write(fd, code, sizeof code) != sizeof code || ftruncate(fd, 4096)) exit(3);
    void *p = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) exit(4);
    return p;
}

static void flip(void *p, size_t len) {
    if (mprotect(p, len, PROT_READ | PROT_EXEC)) exit(5);
}

static void *flip_and_run(void *p) { flip(p, 4096); ran(p); return 0; }

int main(int argc, char **argv) {
    const char *mode = argv[1], *path = argv[2];
    if (!strcmp(mode, "mprotect")) {
        void *p = map_file(path); flip(p, 4096); ran(p);
    } else if (!strcmp(mode, "pkey")) {
        void *p = map_file(path);
        if (syscall(SYS_pkey_mprotect, p, 4096, PROT_READ | PROT_EXEC, -1)) exit(5);
        ran(p);
    } else if (!strcmp(mode, "fork")) {      /* the child flips its copy of the parent's mapping */
        void *p = map_file(path);
        pid_t c = fork();
        if (c == 0) { flip(p, 4096); ran(p); _exit(0); }
        int st; waitpid(c, &st, 0);
    } else if (!strcmp(mode, "mremap")) {    /* moved first, then flipped where it landed */
        void *p = map_file(path);
        void *q = mremap(p, 4096, 8192, MREMAP_MAYMOVE);
        if (q == MAP_FAILED) exit(6);
        flip(q, 4096); ran(q);
    } else if (!strcmp(mode, "thread")) {    /* another thread of the address space flips it */
        void *p = map_file(path);
        pthread_t t;
        if (pthread_create(&t, 0, flip_and_run, p)) exit(9);
        pthread_join(t, 0);
    } else if (!strcmp(mode, "many")) {      /* more mappings than the kernel tracks, the last flipped */
        void *p = 0;
        for (int i = 0; i < 65; i++) p = map_file(path);
        flip(p, 4096); ran(p);
    } else if (!strcmp(mode, "compat")) {    /* 32-bit mmap2 by int 0x80: no syscall tracepoint sees it */
        int fd = open(path, O_RDONLY);
        long r;
        __asm__ volatile("push %%rbp\n\txor %%ebp, %%ebp\n\tint $0x80\n\tpop %%rbp"
                         : "=a"(r) : "a"(192L), "b"(0L), "c"(4096L), "d"(5L), "S"(2L), "D"((long)fd)
                         : "memory");
        if (r < 0 && r > -4096) exit(4);
        ran((void *)r);
    } else if (!strcmp(mode, "rie")) {       /* READ_IMPLIES_EXEC: a readable mapping is executable */
        personality(READ_IMPLIES_EXEC);
        ran(map_file(path));
    } else if (!strcmp(mode, "rie-mprotect")) {   /* ... and so is mprotect(PROT_READ) */
        int fd = open(path, O_RDONLY);
        void *p = mmap(0, 4096, PROT_NONE, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) exit(4);
        personality(READ_IMPLIES_EXEC);
        if (mprotect(p, 4096, PROT_READ)) exit(5);
        ran(p);
    } else if (!strcmp(mode, "memfd")) {
        void *p = map_memfd(); flip(p, 4096); ran(p);
    } else if (!strcmp(mode, "jit")) {       /* anonymous memory where the file's mapping was */
        void *p = map_file(path);
        if (munmap(p, 4096)) exit(7);
        void *q = mmap(p, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (q != p) exit(8);
        memcpy(q, code, sizeof code);
        flip(q, 4096); ran(q);
    } else return 2;
    return 0;
}
"""

ROUTES = ["mprotect", "pkey", "fork", "thread", "mremap", "memfd", "many", "rie", "rie-mprotect"]


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mprotect")
    compile_c(d, HELPER_C, "flipper", "-pthread")
    for name in ("xmrig", "innocent"):   # the same bytes, denied and allowed names
        (d / name).write_bytes(CODE)
        (d / name).chmod(0o644)
    os.chmod(d, 0o755)
    return d






def _sentinels(tmp_path: Path) -> tuple[Path, Path]:
    os.chmod(tmp_path, 0o755)
    return tmp_path / "bare", tmp_path / "contained"


@pytest.mark.parametrize("route", ROUTES)
def test_route_runs_bare_and_never_under_pycontain(route, tools, denying, agent, collector, tmp_path):
    bare, contained = _sentinels(tmp_path)
    argv = [str(tools / "flipper"), route, str(tools / "xmrig")]
    assert _run(argv, bare) == 0
    assert bare.exists(), f"{route}: code from the file does not run even without pycontain"

    _run(argv, contained, agent)
    collector.drain(0.3)
    assert not contained.exists(), f"{route}: code from a denied file ran under pycontain"
    denied = [e for e in collector.events if e.kind == "exec_map" and e.h.verdict == Verdict.DENY]
    assert denied and all(e.h.flags & Flag.KILLED for e in denied)
    if route == "memfd":
        assert denied[0].h.rule_id == RULE_FILELESS and denied[0].h.flags & Flag.FILELESS
    elif route == "many":   # the 65th mapping found no slot: every later flip in the process is refused
        assert denied[0].h.rule_id == 1 and denied[0].fd == MAP_CALL_UNTRACKED
    else:
        assert denied[0].h.rule_id == 1 and denied[0].exe.name == b"xmrig"
    assert denied[0].call == {"mremap": "mremap", "rie": "mmap"}.get(route, "mprotect")


@pytest.mark.parametrize("case", [("jit", "xmrig"), ("mprotect", "innocent")])
def test_anonymous_code_and_allowed_files_run(case, tools, denying, agent, collector, tmp_path):
    """A JIT's anonymous code (even where a denied file's mapping was) and
    an allowed file's mapping made executable run under pycontain."""
    route, name = case
    _, contained = _sentinels(tmp_path)
    assert _run([str(tools / "flipper"), route, str(tools / name)], contained, agent) == 0
    assert contained.exists()
    collector.drain(0.2)
    assert not [e for e in collector.events if e.kind == "exec_map" and e.h.verdict != Verdict.ALLOW]


def test_monitor_mode_records_and_lets_it_run(tools, exec_probes, agent, collector, tmp_path):
    exec_probes.set_tables(KernelTables(rules={1: "exec.deny[0]"}, exec_names={"xmrig": 1}, mode=Mode.MONITOR))
    try:
        _, contained = _sentinels(tmp_path)
        assert _run([str(tools / "flipper"), "mprotect", str(tools / "xmrig")], contained, agent) == 0
        assert contained.exists()
        hits = collector.wait_for(lambda e: e.kind == "exec_map" and e.call == "mprotect")
        assert hits and hits[0].h.verdict == Verdict.WOULD_DENY and not hits[0].h.flags & Flag.KILLED
    finally:
        exec_probes.set_tables(KernelTables())


def test_a_file_judged_clean_is_judged_again_once_it_changes(tools, exec_probes, agent, collector, tmp_path):
    """The kernel caches files judged clean (exe.bpf.h, pc_exec_allowed). A
    hard link under a denied name added afterwards (the inode's ctime moves)
    and a policy that now denies the file (the loader bumps pc_exec_gen)
    each make the next mapping of the same file judged again, and refused."""
    d = tmp_path / "files"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    payload = d / "payload"
    payload.write_bytes(CODE)
    flip = [str(tools / "flipper"), "mprotect", str(payload)]
    exec_probes.set_tables(KernelTables(rules={1: "exec.deny[0]"}, exec_names={"xmrig": 1}))
    try:
        assert _run(flip, tmp_path / "first", agent) == 0 and (tmp_path / "first").exists()
        time.sleep(0.05)   # past the coarse clock tick filesystems stamp ctime with (exe.bpf.h)
        os.link(payload, d / "xmrig")             # the same inode, now also a denied name
        _run(flip, tmp_path / "linked", agent)
        assert not (tmp_path / "linked").exists(), "a cached verdict outlived a new hard link"
        os.unlink(d / "xmrig")
        assert _run(flip, tmp_path / "unlinked", agent) == 0 and (tmp_path / "unlinked").exists()
        exec_probes.set_tables(KernelTables(rules={1: "exec.deny[0]"}, exec_names={"payload": 1}))
        _run(flip, tmp_path / "reloaded", agent)
        assert not (tmp_path / "reloaded").exists(), "a cached verdict outlived a policy change"
    finally:
        exec_probes.set_tables(KernelTables())


def test_compat_system_calls_are_refused_under_run(tools, denying, agent, collector, tmp_path):
    """int 0x80 from a 64-bit process takes the 32-bit system-call table,
    which the syscalls:* tracepoints do not report (the kernel skips compat
    calls there): an mmap2(PROT_EXEC) of a denied file that way is unseen by
    exec_map.c. What closes it for agents `run` starts is its seccomp filter:
    a system call of another architecture kills the process (SIGSYS)."""
    bare, contained = _sentinels(tmp_path)
    argv = [str(tools / "flipper"), "compat", str(tools / "xmrig")]
    assert _run(argv, bare) == 0 and bare.exists(), "the compat mapping does not run even without pycontain"
    assert _run(argv, contained, agent) == -31    # SIGSYS: seccomp's bad-architecture action
    assert not contained.exists()
