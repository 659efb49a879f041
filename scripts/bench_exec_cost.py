#!/usr/bin/env python3
"""Kernel CPU per agent exec, per BPF program (issue 11; not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_exec_cost.py REPO

Loads the exec hooks of REPO (a checkout: run it for two checkouts to compare)
with the default policy, enables kernel.bpf_stats_enabled, runs 400
fork+exec of /bin/true in a tracked agent cgroup and prints each program's
runs and ns per run from its fdinfo (run_time_ns / run_cnt), and the load
time. Kernel-measured program time is far less noisy than loop rates on a
shared VM.
"""
import os
import re
import subprocess
import sys
import time

repo = sys.argv[1]
sys.path.insert(0, repo); sys.path.insert(0, repo + "/tests/kernel")
import tempfile
from pathlib import Path

from exec_harness import exec_only_ebpf_dir

os.environ["PYCONTAIN_EBPF_DIR"] = str(exec_only_ebpf_dir(Path(tempfile.mkdtemp())))
from pycontain.actuate.cgroups import AgentCgroup
from pycontain.core.kernel_rules import compile_policy
from pycontain.core.policy import builtin_policy
from pycontain.kernel.loader import Probes

p = Probes(ringbuf_pages=256); t=time.time(); p.load(); load_s=time.time()-t
p.set_tables(compile_policy(builtin_policy("default")))
cg = AgentCgroup.create("progcost"); p.track_cgroup(cg.v2_path, 7)
open("/proc/sys/kernel/bpf_stats_enabled","w").write("1")
def stats():
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try: txt = open(f"/proc/self/fdinfo/{fd}").read()
        except OSError: continue
        m = re.search(r"prog_tag:\s*(\w+)", txt)
        if m and "run_cnt" in txt:
            rt = int(re.search(r"run_time_ns:\s*(\d+)", txt).group(1)); rc = int(re.search(r"run_cnt:\s*(\d+)", txt).group(1))
            out[fd] = (rt, rc)
    return out
names = {}
s0 = stats()
code = "import os\nfor _ in range(400):\n    pid=os.fork()\n    if pid==0: os.execv('/bin/true',['/bin/true'])\n    os.waitpid(pid,0)\n"
def join():
    for f in cg.procs_files(): open(f,"w").write(str(os.getpid()))
subprocess.run([sys.executable, "-c", code], preexec_fn=join, check=True)
for _ in range(5): p.poll(10)
s1 = stats()
for fd in s1:
    rt = s1[fd][0]-s0.get(fd,(0,0))[0]; rc = s1[fd][1]-s0.get(fd,(0,0))[1]
    if rc: print(f"fd {fd}: runs {rc} ns/run {rt/rc:.0f}")
print("load_s", round(load_s,2))
open("/proc/sys/kernel/bpf_stats_enabled","w").write("0")
p.untrack_cgroup(cg.v2_path); cg.remove(); p.close()
