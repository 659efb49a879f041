#!/usr/bin/env python3
"""GPU action latency (benchmark, not a test), with the fake NVML driver.

    sudo /opt/pycontain/venv/bin/python scripts/bench_gpu.py [--trials 10] [--interval 1.0]

An agent under `pycontain run` starts a program the policy does not allow on
a GPU; the fake driver reports it on GPU 0 from its first instant. We time
from the program's start (the breach becomes visible to NVML) to its death by
pycontain's kill-process. Target: one sampling interval + 100 ms. Reported as
the ratio of the measured latency to that target.

    sudo /opt/pycontain/venv/bin/python scripts/bench_gpu.py --throttle [--seconds 6]

The duty-cycle throttle's effect on SM utilisation: a busy loop named
gpu-spin stands in for a kernel launcher (the fake driver's "sm=cpu" reports
its CPU use as its SM utilisation, so a frozen process reads 0 %). Measured
once without pycontain (baseline) and once under `pycontain run` after the
gpu_util rule throttled it, in the same run; reported as throttled/baseline,
to compare with the configured duty cycle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tests.fake_nvml.build import env_for  # noqa: E402

AGENT = r"""
import os, subprocess, sys, time
miner, n = sys.argv[1], int(sys.argv[2])
time.sleep(0.5)
for i in range(n):
    t0 = time.monotonic()
    p = subprocess.Popen([miner, "30"])
    p.wait()
    print(f"{time.monotonic() - t0:.4f} {p.returncode}", flush=True)
    time.sleep(0.3)
"""


READER = r"""
import sys, time, pynvml
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
seconds, vals = float(sys.argv[1]), []
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(0.5)
    try:
        vals += [s.smUtil for s in pynvml.nvmlDeviceGetProcessUtilization(h, 0)]
    except pynvml.NVMLError:
        vals.append(0)
print(sum(vals[1:]) / max(1, len(vals) - 1))
"""


def read_sm(env: dict, seconds: float) -> float:
    r = subprocess.run([sys.executable, "-c", READER, str(seconds)], env=env, capture_output=True, text=True,
                       timeout=seconds + 30)
    return float(r.stdout.strip() or "nan")


def throttle_bench(seconds: float, duty: float, as_json: bool) -> int:
    import pathlib
    import time
    tmp = tempfile.mkdtemp(prefix="pc-bench-gpu-")
    try:
        spin = os.path.join(tmp, "gpu-spin")
        shutil.copy("/bin/sh", spin)
        scen = pathlib.Path(tmp, "scenario.txt")
        scen.write_text("device 0 name=H100\nprocess device=0 comm=gpu-spin mem=1000000 sm=cpu\n")
        env = env_for(scen)
        loop = [spin, "-c", "while :; do :; done"]
        p = subprocess.Popen(loop)
        try:
            base = read_sm(env, seconds)
        finally:
            p.kill()
            p.wait()
        pol = os.path.join(tmp, "p.yaml")
        with open(pol, "w") as fh:
            fh.write("name: bench-throttle\ngpu:\n  sm_util: {max: 10, window: 1s}\n  sample_interval: 0.5s\n"
                     f"  throttle: {{duty_cycle: {duty}, period: 0.5s}}\nactions:\n  gpu_util: throttle\n")
        run = subprocess.Popen([sys.executable, "-m", "pycontain.cli", "run", "--policy", pol, "--", *loop],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(6)                      # compile, first samples, window, throttle
            throttled = read_sm(env, seconds)
        finally:
            run.terminate()
            run.wait(timeout=30)
        res = {"duty_cycle": duty, "baseline_sm_util": round(base, 1), "throttled_sm_util": round(throttled, 1),
               "throttled_over_baseline": round(throttled / base, 3) if base else None, "seconds": seconds}
        if as_json:
            print(json.dumps(res, indent=2))
        else:
            print(f"duty-cycle throttle {duty}: SM utilisation {res['baseline_sm_util']}% -> "
                  f"{res['throttled_sm_util']}% (throttled/baseline = {res['throttled_over_baseline']}, fake driver)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--throttle", action="store_true", help="measure the duty-cycle throttle's effect instead")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--duty-cycle", type=float, default=0.5)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.throttle:
        return throttle_bench(a.seconds, a.duty_cycle, a.json)
    tmp = tempfile.mkdtemp(prefix="pc-bench-gpu-")
    try:
        miner = os.path.join(tmp, "cuda-miner")
        shutil.copy("/bin/sleep", miner)
        scen = os.path.join(tmp, "scenario.txt")
        with open(scen, "w") as fh:
            fh.write("device 0 name=H100\nprocess device=0 comm=cuda-miner mem=1000000 sm=90\n")
        pol = os.path.join(tmp, "p.yaml")
        with open(pol, "w") as fh:
            fh.write(f"name: bench-gpu\ngpu:\n  allowed_programs: [python3]\n  sample_interval: {a.interval}s\n"
                     "actions:\n  gpu_program: kill-process\n")
        r = subprocess.run([sys.executable, "-m", "pycontain.cli", "run", "--policy", pol, "--", sys.executable, "-c",
                            AGENT, miner, str(a.trials)], env=env_for(__import__("pathlib").Path(scen)),
                           capture_output=True, text=True, timeout=60 + a.trials * (a.interval + 2))
        rows = [line.split() for line in r.stdout.splitlines() if line.strip()]
        lat = [float(x) for x, code in rows if code == "-9"]
        target = a.interval + 0.1
        res = {"trials": a.trials, "killed": len(lat), "interval_s": a.interval, "target_s": round(target, 3),
               "latency_s": {"median": round(statistics.median(lat), 3), "max": round(max(lat), 3),
                             "min": round(min(lat), 3)} if lat else None,
               "max_over_target": round(max(lat) / target, 3) if lat else None}
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"GPU program kill latency over {res['killed']}/{a.trials} trials, sampling every {a.interval}s: "
                  f"median {res['latency_s']['median']}s, max {res['latency_s']['max']}s; "
                  f"target {target}s → max/target = {res['max_over_target']}")
        return 0 if lat and len(lat) == a.trials else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
