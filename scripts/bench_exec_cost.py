#!/usr/bin/env python3
"""Kernel CPU per agent exec, per BPF program (issue 11; not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_exec_cost.py REPO [POLICY]

Loads the exec hooks of REPO (a checkout: run it for two checkouts to compare)
with the default policy, enables kernel.bpf_stats_enabled, runs 400
fork+exec of /bin/true in a tracked agent cgroup and prints each program's
runs and ns per run from its fdinfo (run_time_ns / run_cnt), and the load
time. Kernel-measured program time is far less noisy than loop rates on a
shared VM.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATS = "/proc/sys/kernel/bpf_stats_enabled"
LOOP = """import os
for _ in range(400):
    pid = os.fork()
    if pid == 0:
        os.execv('/bin/true', ['/bin/true'])
    os.waitpid(pid, 0)
"""


def prog_stats() -> dict[str, tuple[int, int]]:
    """fd -> (run_time_ns, run_cnt) of every BPF program this process holds."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                txt = fh.read()
        except OSError:
            continue
        rt = re.search(r"run_time_ns:\s*(\d+)", txt)
        rc = re.search(r"run_cnt:\s*(\d+)", txt)
        if "prog_tag" in txt and rt and rc:
            out[fd] = (int(rt.group(1)), int(rc.group(1)))
    return out


def main() -> int:
    repo = sys.argv[1]
    sys.path[:0] = [repo, repo + "/tests/kernel"]
    from exec_harness import exec_only_ebpf_dir

    from pycontain.actuate.cgroups import AgentCgroup
    from pycontain.core.kernel_rules import compile_policy
    from pycontain.core.policy import builtin_policy
    from pycontain.kernel.loader import Probes

    os.environ["PYCONTAIN_EBPF_DIR"] = str(exec_only_ebpf_dir(Path(tempfile.mkdtemp())))
    probes = Probes(ringbuf_pages=256)
    t0 = time.time()
    probes.load()
    load_s = time.time() - t0
    probes.set_tables(compile_policy(builtin_policy(sys.argv[2] if len(sys.argv) > 2 else "default")))
    cg = AgentCgroup.create("progcost")
    probes.track_cgroup(cg.v2_path, 7)

    def join() -> None:
        for f in cg.procs_files():
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))

    with open(STATS, "w") as fh:
        fh.write("1")
    try:
        before = prog_stats()
        # the loop from a file: a `-c` argv this long is held (argv-length hold)
        # and nothing here releases holds
        loop = Path(tempfile.mkdtemp()) / "loop.py"
        loop.write_text(LOOP)
        subprocess.run([sys.executable, str(loop)], preexec_fn=join, check=True, timeout=120)
        for _ in range(5):
            probes.poll(10)
        after = prog_stats()
    finally:
        with open(STATS, "w") as fh:
            fh.write("0")
        probes.untrack_cgroup(cg.v2_path)
        cg.remove()
        probes.close()
    for fd, (rt, rc) in after.items():
        rt0, rc0 = before.get(fd, (0, 0))
        if rc > rc0:
            print(f"prog fd {fd}: runs {rc - rc0} ns/run {(rt - rt0) / (rc - rc0):.0f}")
    print(f"load_s {load_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
