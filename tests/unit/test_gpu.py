"""GPU: the NVML wrapper against the fake driver (real pynvml calls), attribution,
and the pure GPU rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycontain.core.errors import GpuUnavailable
from pycontain.core.gpu_rules import AttributedGpuProcess, GpuRules, program_allowed
from pycontain.core.samples import GpuProcessSample, GpuSample
from pycontain.gpu.attribution import agent_of, attribute
from pycontain.gpu.nvml import _comm as nvml_comm
from pycontain.gpu.sampler import check_gpu_requirement
from tests.fake_nvml.build import env_for

PROBE = textwrap.dedent("""
    import json, time
    from pycontain.gpu.nvml import Nvml
    from pycontain.gpu.sampler import GpuSampler
    n = Nvml()
    s = GpuSampler(n).sample(time.monotonic())
    print(json.dumps({"available": n.available, "status": s.status,
                      "devices": [vars(d) for d in s.devices],
                      "processes": [vars(p) for p in s.processes]}))
""")


def sample_with(tmp_path, scenario: str, pid_comm: str | None = None) -> dict:
    scen = tmp_path / "scenario.txt"
    scen.write_text(scenario)
    helper = None
    if pid_comm:
        # a real process with the scripted comm, so the driver "sees" it on the GPU
        exe = tmp_path / pid_comm
        exe.write_bytes(open("/bin/sleep", "rb").read())
        exe.chmod(0o755)
        helper = subprocess.Popen([str(exe), "30"])
    try:
        r = subprocess.run([sys.executable, "-c", PROBE], env=env_for(scen), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        if helper:
            out["helper_pid"] = helper.pid
        return out
    finally:
        if helper:
            helper.kill()
            helper.wait()


def test_devices_and_processes_through_real_pynvml(tmp_path):
    out = sample_with(tmp_path, "device 0 name=H100 uuid=GPU-a mem_total=1000 util=60 power_mw=250000\n"
                                "process device=0 comm=gpu-burn mem=400 sm=95\n", pid_comm="gpu-burn")
    assert out["available"] and out["status"].startswith("ok")
    d = out["devices"][0]
    assert ((d["name"], d["uuid"], d["util_gpu"], d["memory_total_bytes"], d["power_watts"])
            == ("H100", "GPU-a", 60.0, 1000, 250.0))
    assert out["processes"] == [{"pid": out["helper_pid"], "device": 0, "used_memory_bytes": 400, "sm_util": 95.0}]


def test_mig_makes_per_process_util_unavailable_and_says_so(tmp_path):
    out = sample_with(tmp_path, "device 0 mig=1\nprocess device=0 pid=4242 mem=10 sm=90\n")
    assert out["processes"][0]["sm_util"] is None and out["processes"][0]["used_memory_bytes"] == 10
    assert out["status"].startswith("degraded: MIG on GPU 0")


def test_not_supported_becomes_unavailable(tmp_path):
    out = sample_with(tmp_path, "device 0\nerror nvmlDeviceGetPowerUsage NOT_SUPPORTED\n"
                                "error nvmlDeviceGetUtilizationRates NO_PERMISSION\n")
    assert out["devices"][0]["power_watts"] is None and out["devices"][0]["util_gpu"] is None


def test_lost_gpu_is_skipped_and_reported(tmp_path):
    out = sample_with(tmp_path, "device 0\ndevice 1 gone=1\nprocess device=0 pid=7 mem=1 sm=1\n")
    assert [d["index"] for d in out["devices"]] == [0]
    assert "lost" in out["status"]


def test_no_driver_is_unavailable_not_an_error(tmp_path):
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(tmp_path)})
    out = json.loads(r.stdout)
    assert out["available"] is False and out["status"].startswith("unavailable:")


def test_required_gpu_without_nvml_fails_unless_allowed():
    nv = SimpleNamespace(available=False, status="unavailable: no driver")
    with pytest.raises(GpuUnavailable, match="requires GPU enforcement") as e:
        check_gpu_requirement(SimpleNamespace(required=True), False, nv)
    assert "--allow-no-gpu" in e.value.hint
    check_gpu_requirement(SimpleNamespace(required=True), True, nv)
    check_gpu_requirement(SimpleNamespace(required=False), False, nv)


def test_attribution_by_cgroup_including_descendants(tmp_path):
    for pid, line in {1: "0::/agents/a1/sub\n", 2: "0::/other\n", 3: "4:cpu:/pc-a2\n0::/\n"}.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(line)
    cgs = {"a1": SimpleNamespace(v2_path="/sys/fs/cgroup/agents/a1", v1_paths={}),
           "a2": SimpleNamespace(v2_path="/sys/fs/cgroup/unified/x", v1_paths={"cpu": "/sys/fs/cgroup/cpu/pc-a2"})}
    kw = dict(proc_root=str(tmp_path), v2_mount="/sys/fs/cgroup", v1_mounts={"cpu": "/sys/fs/cgroup/cpu"})
    assert agent_of(1, cgs, **kw) == "a1"
    assert agent_of(2, cgs, **kw) is None
    assert agent_of(3, cgs, **kw) == "a2"
    sample = GpuSample(ts=0, processes=(GpuProcessSample(1, 0, 5, 50.0), GpuProcessSample(2, 0, 7, 99.0)))
    layout = SimpleNamespace(unified="/sys/fs/cgroup", v1={"cpu": "/sys/fs/cgroup/cpu"})
    out = attribute(sample, cgs, proc_root=str(tmp_path), layout=layout)
    assert [(a.agent, a.pid) for a in out] == [("a1", 1)]


@dataclass(frozen=True)
class Pol:
    required: bool = False
    memory_bytes: int | None = None
    sm_util_max: float | None = None
    sm_util_window_s: float = 3.0
    allowed_programs: tuple = ()
    correlate_unapproved_connect: bool = True
    throttle_duty_cycle: float = 0.5
    throttle_period_s: float = 1.0
    sample_interval_s: float = 1.0


def proc(agent="a", pid=10, sm=95.0, mem=100, filename=b"/usr/bin/python3", unapproved=None, exec_ts=0):
    return AttributedGpuProcess(agent, pid, 5, 0, mem, sm, filename, (), unapproved, exec_ts)


def test_sm_util_must_be_sustained_over_the_window():
    r = GpuRules(Pol(sm_util_max=80))
    s = GpuSample(ts=0)
    assert r.evaluate(s, [proc()], 0.0) == []            # one reading is not "sustained"
    hits = r.evaluate(s, [proc()], 1.0) + r.evaluate(s, [proc()], 2.0)
    b = [x for x in hits if x.rule == "gpu.sm_util"]
    assert b and b[0].action_key == "gpu_util" and b[0].gpu.throttle is not None and b[0].gpu.throttle.duty_cycle == 0.5
    r2 = GpuRules(Pol(sm_util_max=80))
    for t, sm in enumerate([95, 10, 10, 10]):
        out = r2.evaluate(s, [proc(sm=sm)], float(t))
    assert not [x for x in out if x.rule == "gpu.sm_util"]


def test_unavailable_util_never_breaches():
    r = GpuRules(Pol(sm_util_max=1))
    for t in range(5):
        assert r.evaluate(GpuSample(ts=t), [proc(sm=None)], float(t)) == []


def test_memory_program_and_correlation_rules():
    r = GpuRules(Pol(memory_bytes=150, allowed_programs=("python3", "/opt/conda/bin/*")))
    out = r.evaluate(GpuSample(ts=0),
                     [proc(pid=1), proc(pid=2, filename=b"/tmp/xmrig", unapproved=100, exec_ts=200)], 0.0)
    rules = sorted((b.rule, b.pid) for b in out)
    assert rules == [("gpu.correlation", 2), ("gpu.memory", None), ("gpu.program", 2)]
    prog = next(b for b in out if b.rule == "gpu.program")
    assert prog.start_ns == 5 and prog.action_key == "gpu_program"
    # connected AFTER it started: not the ROME signature
    assert not [b for b in r.evaluate(GpuSample(ts=0), [proc(unapproved=300, exec_ts=200)], 1.0)
                if b.rule == "gpu.correlation"]


def test_program_allowed_globs():
    assert program_allowed(b"/usr/bin/python3", ("python3",))
    assert program_allowed(b"/opt/conda/bin/python", ("/opt/conda/bin/*",))
    assert not program_allowed(b"/tmp/python3x", ("python3",))
    assert program_allowed(b"/anything", ())


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 50), st.one_of(st.none(), st.floats(0, 100)),
                          st.one_of(st.none(), st.integers(0, 10**9))), max_size=20))
def test_rules_only_report_attributed_agents(rows):
    r = GpuRules(Pol(memory_bytes=10**6, sm_util_max=50, allowed_programs=("python3",)))
    procs = [proc(agent=a, pid=p, sm=sm, mem=m) for a, p, sm, m in rows]
    for t in range(3):
        out = r.evaluate(GpuSample(ts=t), procs, float(t))
        assert {b.agent for b in out} <= {a for a, *_ in rows}


def test_an_agent_cannot_crash_attribution_with_bytes_that_are_not_utf8(tmp_path):
    """Agent-chosen names (its program's path, its sub-cgroup, its comm) are
    any bytes; reading them must not raise (the daemon's GPU step would end,
    and with it every agent it started)."""
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    program = tmp_path / os.fsdecode(b"w\xff") / "python3"
    program.parent.mkdir()
    program.write_bytes(b"")
    os.symlink(program, proc / "7" / "exe")
    (proc / "7" / "cgroup").write_bytes(b"0::/agents/a1/\xfe\n")
    (proc / "7" / "cmdline").write_bytes(b"python3\0-c\0\xff\0")
    cgs = {"a1": SimpleNamespace(v2_path="/sys/fs/cgroup/agents/a1", v1_paths={})}
    sample = GpuSample(ts=0, processes=(GpuProcessSample(7, 0, 5, 50.0),))
    layout = SimpleNamespace(unified="/sys/fs/cgroup", v1={})
    out = attribute(sample, cgs, proc_root=str(proc), layout=layout)
    assert [(a.agent, a.filename, a.argv) for a in out] == [("a1", os.fsencode(program), (b"python3", b"-c", b"\xff"))]


def test_a_gpu_process_named_with_bytes_that_are_not_utf8_is_read(tmp_path):
    code = ("import ctypes, sys; ctypes.CDLL(None).prctl(15, b'\\xff\\xfemps', 0, 0, 0); "
            "print(flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        p.stdout.readline()
        assert nvml_comm(p.pid) == "\ufffd\ufffdmps"
    finally:
        p.kill()
        p.wait()
