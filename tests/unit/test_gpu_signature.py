"""gpu.signature: sustained integer-heavy, tensor-idle GPM readings on a GPU
an agent holds; the GPM calls through the fake driver and real pynvml."""

from __future__ import annotations

import json
import subprocess
import sys

from pycontain.core.gpu_policy_extra import SignaturePolicy
from pycontain.core.gpu_rules import AttributedGpuProcess, GpuRules
from pycontain.core.policy import GpuPolicy, load_policy_text
from pycontain.core.samples import GpuDeviceSample, GpuSample
from tests.fake_nvml.build import env_for


def sample(now, int_util, tensor):
    d = GpuDeviceSample(0, "GPU-a", "H100", 90.0, 1, 2, 300.0, int_util=int_util, tensor_util=tensor)
    return GpuSample(ts=now, devices=(d,))


def proc(filename=b"/tmp/xmr"):
    return AttributedGpuProcess(agent="a", pid=7, start_ns=1, device=0, used_memory_bytes=1, sm_util=90.0,
                                filename=filename)


def run(rules, readings, procs):
    out = []
    for t, (i, tz) in enumerate(readings):
        out = rules.evaluate(sample(float(t), i, tz), procs, float(t))
    return out


def test_sustained_miner_shape_is_a_breach():
    rules = GpuRules(GpuPolicy(signature=SignaturePolicy(window_s=5)))
    b = run(rules, [(90, 0)] * 7, [proc()])
    assert [(x.rule, x.action_key, x.pid) for x in b] == [("gpu.signature", "gpu_signature", 7)]


def test_not_sustained_or_tensor_busy_or_allowed_is_no_breach():
    sig = SignaturePolicy(window_s=5, allowed_programs=("hashcat",))
    assert run(GpuRules(GpuPolicy(signature=sig)), [(90, 0)] * 3, [proc()]) == []          # too short
    assert run(GpuRules(GpuPolicy(signature=sig)), [(90, 0), (90, 40)] * 4, [proc()]) == []   # tensor half the time
    assert run(GpuRules(GpuPolicy(signature=sig)), [(90, 0)] * 7, [proc(b"/usr/bin/hashcat")]) == []
    assert run(GpuRules(GpuPolicy(signature=sig)), [(None, None)] * 7, [proc()]) == []     # no GPM


def test_rule_off_by_default_and_policy_keys():
    assert run(GpuRules(GpuPolicy()), [(90, 0)] * 70, [proc()]) == []
    p = load_policy_text("name: x\ngpu:\n  signature: {int_min: 60, tensor_max: 2, window: 2m}\n"
                         "actions:\n  gpu_signature: {ladder: [freeze, kill], grace: 5s}\n")
    assert p.gpu.signature == SignaturePolicy(60.0, 2.0, 120.0, ())
    assert p.action("gpu_signature").ladder[0].value == "freeze"
    assert load_policy_text("name: x\ngpu:\n  signature: {match: 90}\n").gpu.signature.match == 0.9


def test_gpm_through_the_fake_driver(tmp_path):
    scen = tmp_path / "s.txt"
    scen.write_text("device 0 gpm=1 int_util=85 tensor_util=1\ndevice 1\n")
    code = ("import json\nfrom pycontain.gpu.nvml import Nvml\nfrom pycontain.gpu.devices import gpm_status\n"
            "n=Nvml(); n.device(0); d=n.device(0); print(json.dumps([d.int_util, d.tensor_util, n.device(1).int_util,"
            " gpm_status(n)]))")
    r = subprocess.run([sys.executable, "-c", code], env=env_for(scen), capture_output=True, text=True, timeout=30)
    assert json.loads(r.stdout) == [85.0, 1.0, None, "ok: GPM on GPU 0"], r.stderr


def test_no_gpm_is_reported(tmp_path):
    scen = tmp_path / "s.txt"
    scen.write_text("device 0\n")
    pol = tmp_path / "p.yaml"
    pol.write_text("name: x\ngpu:\n  signature: {}\n")
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "policy", "check", str(pol)], env=env_for(scen),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "note: gpu.signature: unavailable: no GPU here has GPM" in r.stderr


def test_mps_clients_are_listed_and_blindness_reported(tmp_path):
    scen = tmp_path / "s.txt"
    scen.write_text("device 0\nprocess device=0 pid=4242 mps=1 mem=7\n")
    code = ("from pycontain.gpu.nvml import Nvml\nn=Nvml(); print(sorted(n.memory_by_pid(0).items()))")
    r = subprocess.run([sys.executable, "-c", code], env=env_for(scen), capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "[(4242, 7)]", r.stderr


def test_mps_server_without_client_list_is_reported(tmp_path):
    import shutil
    server = tmp_path / "nvidia-cuda-mps-server"
    shutil.copy("/bin/sleep", server)
    helper = subprocess.Popen([str(server), "30"])
    try:
        scen = tmp_path / "s.txt"
        scen.write_text("device 0\nprocess device=0 comm=nvidia-cuda-mps mem=9\n"
                        "error nvmlDeviceGetMPSComputeRunningProcesses NOT_SUPPORTED\n")
        code = ("from pycontain.gpu.nvml import Nvml\n"
                "n=Nvml(); n.memory_by_pid(0); n._update_status(); print(n.status)")
        r = subprocess.run([sys.executable, "-c", code], env=env_for(scen), capture_output=True, text=True, timeout=30)
        assert "MPS on GPU 0: NVML lists no MPS client pids" in r.stdout, r.stdout + r.stderr
    finally:
        helper.kill()
        helper.wait()


def test_a_window_only_a_few_samples_long_still_fires():
    """2 s window sampled every 0.51 s: the history must cover the window
    (a reading at or before its start is kept), or the rule never fires."""
    from pycontain.core.gpu_policy_extra import SignaturePolicy
    from pycontain.core.gpu_rules import AttributedGpuProcess, program_allowed
    from pycontain.core.gpu_signature import SignatureRule
    from pycontain.core.samples import GpuDeviceSample, GpuSample
    rule = SignatureRule(SignaturePolicy(window_s=2.0), program_allowed)
    proc = [AttributedGpuProcess("a", 42, 1, 0, 1000, 90.0, b"/tmp/trainer")]
    fired = []
    for i in range(8):
        now = 100 + i * 0.51
        dev = GpuDeviceSample(index=0, uuid="u", name="n", util_gpu=0, memory_used_bytes=0,
                              memory_total_bytes=1, power_watts=0, int_util=92.0, tensor_util=0.0)
        fired.append(bool(rule.evaluate(GpuSample(ts=now, devices=(dev,)), proc, now)))
    assert fired[:3] == [False, False, False] and fired[-1]


# ---- the window is judged by the share of miner-shaped readings ----------------------
# A miner steered by an RL agent pays a little hash rate to break "every reading
# in the window": one pause, or one tensor burst, per window. The decisions the
# engine takes under the built-in policy (60 s window, 1 s sampling) say whether
# it got through.

def _decisions(readings) -> list:
    """Feed (int %, tensor %) readings, one per second, through the built-in
    default policy's GPU rules and the engine: every decision taken."""
    from pycontain.core.engine import Engine
    from pycontain.core.policy import builtin_policy
    pol = builtin_policy("default")
    engine, rules = Engine(pol), GpuRules(pol.gpu)
    out = []
    for t, (i, tz) in enumerate(readings):
        now = 1000.0 + t
        out += engine.on_breaches(rules.evaluate(sample(now, i, tz), [proc()], now), now)
    return [(d.rule, d.action.value, d.pid) for d in out]


def test_a_miner_that_pauses_one_second_a_minute_is_still_killed():
    readings = [(0, 0) if t % 60 == 0 else (90, 0) for t in range(150)]   # a pause opens every minute
    assert ("gpu.signature", "kill", 7) in _decisions(readings)


def test_a_miner_with_a_tiny_matmul_now_and_then_is_still_killed():
    readings = [(90, 30) if t % 10 == 5 else (90, 0) for t in range(150)]   # a tensor burst every 10 s
    assert ("gpu.signature", "kill", 7) in _decisions(readings)


def test_training_with_idle_tensor_phases_is_left_alone():
    """Training: tensor cores busy, but one reading in three looks like a
    miner's (data loading, integer-heavy preprocessing on the GPU)."""
    readings = [(70, 0) if t % 3 == 0 else (40, 60) for t in range(300)]
    assert _decisions(readings) == []


def test_a_window_of_few_readings_never_flags_and_policy_check_says_so(tmp_path):
    """3 readings in a 2 s window: a share of so few means nothing."""
    rules = GpuRules(GpuPolicy(signature=SignaturePolicy(window_s=2)))
    assert run(rules, [(90, 0)] * 20, [proc()]) == []
    pol = tmp_path / "p.yaml"
    pol.write_text("name: x\ngpu:\n  signature: {window: 2s}\n")
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "policy", "check", str(pol)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "window 2s holds fewer than 5 readings" in r.stderr, r.stderr


def test_a_miner_with_a_small_matmul_in_every_reading_is_still_killed():
    """A ~6 % tensor decoy beside 90 % integer work in every reading: over
    `tensor_max`, but a miner's shape (integer work four times the tensor
    work and more); to pass, the decoy must take a real share of the GPU."""
    assert ("gpu.signature", "kill", 7) in _decisions([(90, 6)] * 150)
    assert ("gpu.signature", "kill", 7) in _decisions([(90, 20)] * 150)


def test_tensor_heavy_work_with_busy_integer_pipes_is_left_alone():
    """Training with integer-heavy phases: its tensor work stays well above
    a quarter of its integer work."""
    assert _decisions([(80, 30)] * 150) == []
    assert _decisions([(60, 40) if t % 2 else (50, 60) for t in range(150)]) == []


def test_a_missing_gpm_reading_does_not_reset_the_window():
    """Every other GPM reading unavailable: not evidence either way, and
    not a fresh start for the miner."""
    readings = [(None, None) if t % 2 else (90, 0) for t in range(150)]
    assert ("gpu.signature", "kill", 7) in _decisions(readings)


def test_the_ratio_is_a_policy_key():
    p = load_policy_text("name: x\ngpu:\n  signature: {int_tensor_ratio: 10}\n")
    assert p.gpu.signature.int_tensor_ratio == 10.0
    rules = GpuRules(GpuPolicy(signature=p.gpu.signature))
    assert rules.evaluate(sample(0.0, 90, 6), [proc()], 0.0) == []      # warming up
    assert run(GpuRules(GpuPolicy(signature=p.gpu.signature)), [(90, 10)] * 70, [proc()]) == []   # 9x < 10x
