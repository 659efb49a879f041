"""GPU diversion end to end: `pycontain run` with the fake NVML driver.

The fake driver reports real processes (matched by comm) on a GPU; pycontain
samples it through the real pynvml, attributes the pids to the agent by
cgroup, and throttles / kills. Outcomes are checked from outside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.fake_nvml.build import env_for

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
# the agents run programs from pytest's root-only tmp_path: these tests are about GPU rules
AS_ROOT = ["run", "--user", "root"]
ROOT_RUN = PYCONTAIN + AS_ROOT



def records(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def prog(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    shutil.copy("/bin/sleep", p)
    return p


def test_sustained_sm_util_is_throttled_then_killed(privileged, tmp_path):
    burn = prog(tmp_path, "gpu-burn")
    scen = tmp_path / "scenario.txt"
    scen.write_text("device 0 name=H100 uuid=GPU-e2e\nprocess device=0 comm=gpu-burn mem=1000000 sm=95\n")
    pol = tmp_path / "gpu.yaml"
    pol.write_text("name: gpu-e2e\n"
                   "gpu:\n  sm_util: {max: 80, window: 2s}\n  sample_interval: 0.5s\n"
                   "  throttle: {duty_cycle: 0.3, period: 0.5s}\n"
                   "actions:\n  gpu_util: {ladder: [throttle, kill], grace: 2s}\n")
    audit = tmp_path / "audit.jsonl"
    # the same program outside the agent: reported on the GPU too, never touched
    outside = subprocess.Popen([str(burn), "60"])
    try:
        t0 = time.monotonic()
        r = subprocess.run(ROOT_RUN + ["--policy", str(pol), "--name", "gpu", "--audit-log", str(audit),
                                        "--", str(burn), "60"],
                           env=env_for(scen), capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 137, r.stderr          # the agent was killed (SIGKILL)
        assert took < 30
        recs = records(audit)
        viol = [x for x in recs if x["kind"] == "violation" and x["rule"] == "gpu.sm_util"]
        acts = [x["action"] for x in recs if x["kind"] == "action" and x["rule"] == "gpu.sm_util"]
        assert viol and acts[:1] == ["throttle"] and "kill" in acts, recs
        # which agent used which GPU, how much, through which program
        use = [x for x in recs if x["kind"] == "gpu-use"]
        assert use and use[0]["agent"] == "gpu" and use[0]["device"] == 0 and use[0]["uuid"] == "GPU-e2e"
        assert use[0]["filename"] == str(burn) and use[0]["memory_bytes"] == 1000000
        assert "GPU 0 (GPU-e2e) used by" in r.stderr
        assert outside.poll() is None, "a process outside the agent was touched"
    finally:
        outside.kill()
        outside.wait()


def test_unapproved_program_on_a_gpu_is_killed_at_once(privileged, tmp_path):
    miner = prog(tmp_path, "cuda-miner")
    scen = tmp_path / "scenario.txt"
    scen.write_text("device 0\nprocess device=0 comm=cuda-miner mem=1000 sm=5\n")
    pol = tmp_path / "gpu.yaml"
    pol.write_text("name: gpu-allow\ngpu:\n  allowed_programs: [python3, trainer]\n  sample_interval: 0.5s\n"
                   "actions:\n  gpu_program: kill-process\n")
    audit = tmp_path / "audit.jsonl"
    agent = f"{miner} 30; echo status=$?"
    t0 = time.monotonic()
    r = subprocess.run(ROOT_RUN + ["--policy", str(pol), "--audit-log", str(audit), "--", "sh", "-c", agent],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "status=137" in r.stdout                  # only the miner died; the agent went on
    assert time.monotonic() - t0 < 15
    v = [x for x in records(audit) if x["kind"] == "violation" and x["rule"] == "gpu.program"]
    assert v and "cuda-miner" in v[0]["reason"]


def test_required_gpu_without_driver_refuses_to_start(privileged, tmp_path):
    pol = tmp_path / "need.yaml"
    pol.write_text("name: need-gpu\ngpu: {required: true}\n")
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    r = subprocess.run(PYCONTAIN + ["run", "--policy", str(pol), "--", "true"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "requires GPU enforcement" in r.stderr and "--allow-no-gpu" in r.stderr
    r = subprocess.run(PYCONTAIN + ["run", "--allow-no-gpu", "--policy", str(pol), "--", "true"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_trace_says_which_agent_uses_which_gpu(privileged, tmp_path):
    from pycontain.actuate.cgroups import AgentCgroup
    from pycontain.actuate.launch import launch
    burn = prog(tmp_path, "gpu-burn")
    scen = tmp_path / "scenario.txt"
    scen.write_text("device 0 uuid=GPU-trace\nprocess device=0 comm=gpu-burn mem=4096 sm=42\n")
    cg = AgentCgroup.create("gputrace")
    p = subprocess.Popen(PYCONTAIN + ["trace", "--cgroup", cg.v2_path, "--json", "--duration", "5"],
                         env=env_for(scen), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        agent = launch([str(burn), "30"], cg)
        out, err = p.communicate(timeout=30)
        recs = [json.loads(l) for l in out.splitlines() if l.strip()]
        use = [r for r in recs if r["kind"] == "gpu-use"]
        assert use, err
        assert ((use[0]["pid"], use[0]["uuid"], use[0]["memory_bytes"], use[0]["sm_util"])
                == (agent.pid, "GPU-trace", 4096, 42.0))
        assert use[0]["filename"] == str(burn)
    finally:
        cg.remove()


SIGNATURE_POLICY = ("name: gpu-signature\ngpu:\n  sample_interval: 0.5s\n"
                    "  allowed_programs: [trainer]\n"           # the name check alone would let it run
                    "  signature: {int_min: 50, tensor_max: 5, window: 2s}\n"
                    "actions:\n  gpu_signature: kill-process\n")


def _run_named_trainer(tmp_path: Path, device_line: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """An agent whose GPU program is called `trainer` (an allowed name) and
    runs for 6 s; the fake driver's GPM counters say what it really does."""
    trainer = prog(tmp_path, "trainer")
    scen = tmp_path / "scenario.txt"
    scen.write_text(device_line + "\nprocess device=0 comm=trainer mem=1000 sm=90\n")
    pol = tmp_path / "sig.yaml"
    pol.write_text(SIGNATURE_POLICY)
    audit = tmp_path / "audit.jsonl"
    r = subprocess.run(ROOT_RUN + ["--policy", str(pol), "--audit-log", str(audit), "--",
                                    "sh", "-c", f"{trainer} 6; echo status=$?"],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    return r, records(audit)


def test_a_renamed_miner_is_known_by_its_gpu_signature(privileged, tmp_path):
    """Integer pipes busy, tensor cores idle for the whole window: killed
    although its name is on the GPU allow-list."""
    r, recs = _run_named_trainer(tmp_path, "device 0 uuid=GPU-sig gpm=1 int_util=92 tensor_util=0")
    assert r.returncode == 0, r.stderr
    assert "status=137" in r.stdout, r.stdout + r.stderr      # the miner died; the agent's shell went on
    v = [x for x in recs if x["kind"] == "violation" and x["rule"] == "gpu.signature"]
    assert v and "integer pipes 92%" in v[0]["reason"], recs


def test_tensor_heavy_training_is_left_alone_by_the_signature_rule(privileged, tmp_path):
    """The same program and counters, but the tensor cores busy: the shape of
    training, not of hashing. It runs to its end (the bare run of the move)."""
    r, recs = _run_named_trainer(tmp_path, "device 0 uuid=GPU-sig gpm=1 int_util=92 tensor_util=60")
    assert r.returncode == 0, r.stderr
    assert "status=0" in r.stdout, r.stdout + r.stderr
    assert not [x for x in recs if x["kind"] == "violation" and x["rule"] == "gpu.signature"]
