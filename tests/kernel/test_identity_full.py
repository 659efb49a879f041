"""A full identity map fails closed (ebpf/common.bpf.h pc_identity_fork).

An agent task's identity (pc_agent_tasks, node-wide) is what tells the
boundary hook who moves a task out of the agent's cgroup. A child whose
identity cannot be stored is held at birth and dies before its first
instruction. The map is made small for the test (PYCONTAIN_AGENT_TASKS_MAX);
bare, every child runs and writes its sentinel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PY = "/usr/bin/python3"
CHILDREN = 40

# each child writes a sentinel, then lives on so its identity stays stored
FORKER = ("import os,sys,time\n"
          "for i in range(int(sys.argv[2])):\n"
          " if os.fork()==0:\n"
          "  open(os.path.join(sys.argv[1],str(i)),'w').close(); time.sleep(20); os._exit(0)\n"
          "time.sleep(1.5)\n")


def test_children_the_identity_map_cannot_hold_die_at_birth(privileged):
    bare_dir, inside_dir = (Path(tempfile.mkdtemp(prefix="pc-ident-")) for _ in range(2))
    for d in (bare_dir, inside_dir):
        os.chmod(d, 0o777)
    bare = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", FORKER,
                             str(bare_dir), str(CHILDREN)], start_new_session=True)
    try:
        bare.wait(timeout=60)
        assert len(os.listdir(bare_dir)) == CHILDREN              # bare: every child ran
    finally:
        os.killpg(bare.pid, 9)
    env = dict(os.environ, PYCONTAIN_AGENT_TASKS_MAX="16")
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "run", "--no-daemon", "--", PY, "-c", FORKER,
                        str(inside_dir), str(CHILDREN)], capture_output=True, text=True, timeout=180, env=env,
                       cwd="/tmp")
    ran = len(os.listdir(inside_dir))
    for d in (bare_dir, inside_dir):
        shutil.rmtree(d, ignore_errors=True)
    assert 0 < ran < 16, (ran, r.stdout, r.stderr[-2000:])          # checked from outside
