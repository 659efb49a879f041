"""Shared pieces of the exec-hook kernel tests: a loaded Probes, tracked
agent cgroups, event collection, and scripts that leave a sentinel file.

The exec tests compile only the exec hooks from a private copy of ebpf/
holding exec.c and the headers it includes (common.bpf.h, pycontain.h): the
loader builds its program from `#include "exec.c"` alone, so they test the
exec pipeline on its own; test_loader.py loads the full program.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycontain.actuate.cgroups import AgentCgroup
from pycontain.core.events import Event, ExecEvent
from pycontain.core.kernel_rules import KernelTables

REPO = Path(__file__).resolve().parents[2]


def exec_only_ebpf_dir(tmp: Path) -> Path:
    d = tmp / "ebpf"
    d.mkdir()
    for name in ("exec.c", "exec_map.c", "exe.bpf.h", "common.bpf.h", "pycontain.h"):   # the exec hooks, their headers
        shutil.copy(REPO / "ebpf" / name, d / name)
    return d


@dataclass
class Collector:
    probes: object
    events: list[Event] = field(default_factory=list)

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def wait_for(self, pred, timeout: float = 5.0) -> list[Event]:
        """Poll until some collected event satisfies pred; return those that do."""
        deadline = time.monotonic() + timeout
        while True:
            self.probes.poll(50)
            hits = [e for e in self.events if pred(e)]
            if hits or time.monotonic() > deadline:
                return hits

    def drain(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.probes.poll(50)


@pytest.fixture(scope="module")
def exec_probes(privileged, tmp_path_factory):
    from pycontain.kernel.loader import Probes

    src = exec_only_ebpf_dir(tmp_path_factory.mktemp("ebpf"))
    old = os.environ.get("PYCONTAIN_EBPF_DIR")
    os.environ["PYCONTAIN_EBPF_DIR"] = str(src)
    p = Probes(ringbuf_pages=256)
    try:
        p.load()
    finally:
        if old is None:
            os.environ.pop("PYCONTAIN_EBPF_DIR", None)
        else:
            os.environ["PYCONTAIN_EBPF_DIR"] = old
    yield p
    p.close()


@pytest.fixture
def collector(exec_probes):
    c = Collector(exec_probes)
    exec_probes.on_event = c
    exec_probes.poll(0)
    c.events.clear()
    yield c
    exec_probes.on_event = None


_agent_ids = iter(range(100, 10_000))


@pytest.fixture
def agent(exec_probes):
    """A fresh agent cgroup tracked by the probes; removed afterwards."""
    cg = AgentCgroup.create("exectest")
    agent_id = next(_agent_ids)
    exec_probes.track_cgroup(cg.v2_path, agent_id)
    cg.agent_id = agent_id
    yield cg
    exec_probes.untrack_cgroup(cg.v2_path)
    cg.remove()


@pytest.fixture
def denying(exec_probes):
    """exec.deny [xmrig] and exec.fileless: deny, as the kernel tables."""
    from pycontain.core.events import ConfigFlag

    exec_probes.set_tables(KernelTables(rules={1: "exec.deny[0]"}, exec_names={"xmrig": 1},
                                        flags=ConfigFlag.EXEC_FILELESS_DENY))
    yield exec_probes
    exec_probes.set_tables(KernelTables())


def run_with_sentinel(argv: list[str], sentinel: Path, cg=None) -> int:
    """argv bare (cg None) or launched as an agent in cg, with $PC_SENTINEL
    naming the file it writes if the forbidden code ran; its exit status."""
    from pycontain.actuate.launch import launch

    env = dict(os.environ, PC_SENTINEL=str(sentinel))
    p = launch(argv, cg, env=env) if cg is not None else subprocess.Popen(argv, env=env)
    try:
        return p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()


def deny_tables(**kw) -> KernelTables:
    from pycontain.core.events import PatternWhere

    return KernelTables(
        rules={1: "no-xmrig", 2: "no-stratum"},
        exec_names={"xmrig": 1},
        exec_patterns=[("stratum+tcp://", PatternWhere.ARGS, 2)],
        **kw,
    )


def sentinel_script(directory: Path, name: str) -> tuple[Path, Path]:
    """A shell script called `name` that creates a sentinel file when it runs."""
    sentinel = directory / f"{name}.ran"
    script = directory / name
    script.write_text(f"#!/bin/sh\ntouch '{sentinel}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script, sentinel


def execs_of(events: list[Event], pid: int) -> list[ExecEvent]:
    return [e for e in events if isinstance(e, ExecEvent) and e.h.pid == pid]


def compile_c(d: Path, source: str, name: str, *flags: str) -> Path:
    """`source` compiled as d/name (gcc from scripts/install-test-tools.sh)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.fail("no C compiler (scripts/install-test-tools.sh installs gcc)")
    (d / f"{name}.c").write_text(source)
    subprocess.run([cc, "-O1", *flags, "-o", str(d / name), str(d / f"{name}.c")], check=True)
    return d / name


def ssh_and_innocent(d: Path, source: str) -> Path:
    """Compile `source` in `d` as `ssh` (a name user-space exec rules hold) and
    copy it as `innocent` (the same bytes under a name nothing holds)."""
    compile_c(d, source, "ssh")
    shutil.copy(d / "ssh", d / "innocent")
    return d
