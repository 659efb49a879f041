#!/usr/bin/env python3
"""Check pycontain's NVML path on a real GPU node.

    sudo /opt/pycontain/venv/bin/python scripts/gpu_check.py [--seconds 10]

Samples the real driver through pycontain's wrapper while a small CUDA matmul
loop runs (torch or cupy, if importable), and prints what it sees per device
and per process, including whether the load's own pid showed up with memory
and SM utilisation. Record the output in docs/gpu.md.

    sudo ... scripts/gpu_check.py --enforcement

also checks, through `pycontain run`: device denial (an agent given GPU 0
opens /dev/nvidia<minor of GPU 0> and gets EPERM on every other GPU's node),
attribution (the agent's CUDA pid appears in its gpu-use audit record), the
duty-cycle throttle's effect on the agent's SM utilisation (scripts/bench_gpu.py
logic, real driver), and kill latency (pycontain's kill of a CUDA agent until
its cgroup is empty, with the GPU memory it held).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pycontain.gpu.nvml import Nvml  # noqa: E402
from pycontain.gpu.sampler import GpuSampler  # noqa: E402


def matmul_loop(seconds: float) -> None:
    try:
        import torch
        a = torch.randn(4096, 4096, device="cuda")
        end = time.time() + seconds
        while time.time() < end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        return
    except ImportError:
        pass
    import cupy
    a = cupy.random.rand(4096, 4096, dtype=cupy.float32)
    end = time.time() + seconds
    while time.time() < end:
        a = cupy.clip(a @ a, -1, 1)
    cupy.cuda.Device().synchronize()


OPENER = r"""
import errno, glob, os
for p in sorted(glob.glob("/dev/nvidia[0-9]*")):
    try:
        os.close(os.open(p, os.O_RDWR)); r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e))
    print(p, r)
print("CVD", os.environ.get("CUDA_VISIBLE_DEVICES"))
"""


def enforcement(nv: Nvml) -> int:
    """Device denial, attribution and kill latency through `pycontain run`."""
    import subprocess
    import tempfile

    from pycontain.gpu.devices import node_gpus
    gpus = node_gpus(nv)
    print("GPUs:", [(g.index, g.uuid, g.minor) for g in gpus])
    cli = [sys.executable, "-m", "pycontain.cli", "run"]
    r = subprocess.run(cli + ["--gpus", "0", "--", sys.executable, "-c", OPENER],
                       capture_output=True, text=True, timeout=120)
    got = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    own = f"/dev/nvidia{gpus[0].minor}"
    ok = got.get(own) == "ok" and all(v == "EPERM" for k, v in got.items() if k.startswith("/dev/") and k != own)
    print(f"device denial: {'PASS' if ok else 'FAIL'} {got}")
    with tempfile.TemporaryDirectory() as tmp:
        audit = os.path.join(tmp, "audit.jsonl")
        pol = os.path.join(tmp, "p.yaml")
        with open(pol, "w") as fh:
            fh.write("name: gpu-check\ngpu:\n  memory: 1MiB\n  sample_interval: 0.5s\nactions:\n  gpu_memory: kill\n")
        t0 = time.monotonic()
        load = (f"import sys; sys.path.insert(0, {os.getcwd()!r}); "
                "from scripts.gpu_check import matmul_loop; matmul_loop(60)")
        r = subprocess.run(cli + ["--policy", pol, "--audit-log", audit, "--", sys.executable, "-c", load],
                           capture_output=True, text=True, timeout=180)
        took = time.monotonic() - t0
        recs = [json.loads(l) for l in open(audit) if l.strip()] if os.path.exists(audit) else []
        use = [x for x in recs if x.get("kind") == "gpu-use"]
        acts = [x for x in recs if x.get("kind") == "action" and x.get("action") == "kill"]
        print(f"attribution: {'PASS' if use else 'FAIL'} {use[:1]}")
        if use and acts:
            print(f"kill latency: first sighting {use[0]['ts']:.3f} -> kill result {acts[0]['ts']:.3f} = "
                  f"{acts[0]['ts'] - use[0]['ts']:.3f}s ({acts[0].get('result')}); agent exit {r.returncode}, "
                  f"run took {took:.1f}s")
    print("throttle effect: run scripts/bench_gpu.py --throttle logic with a CUDA load; not automated here")
    return 0 if ok and use else 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--enforcement", action="store_true")
    a = ap.parse_args()
    nv = Nvml()
    print(f"NVML: {nv.status}")
    if not nv.available:
        return 1
    if a.enforcement:
        return enforcement(nv)
    load = None
    try:
        import importlib.util
        if importlib.util.find_spec("torch") or importlib.util.find_spec("cupy"):
            load = mp.get_context("spawn").Process(target=matmul_loop, args=(a.seconds,))
            load.start()
            print(f"CUDA load pid {load.pid}")
        else:
            print("no torch/cupy: sampling only")
        sampler = GpuSampler(nv)
        seen = False
        for _ in range(int(a.seconds)):
            time.sleep(1)
            s = sampler.sample(time.monotonic())
            print(json.dumps({"status": s.status, "devices": [vars(d) for d in s.devices],
                              "processes": [vars(p) for p in s.processes]}))
            if load and any(p.pid == load.pid for p in s.processes):
                seen = True
        if load:
            print(f"load pid seen on a GPU: {seen}")
            return 0 if seen else 2
        return 0
    finally:
        if load:
            load.join(a.seconds + 30)
        nv.shutdown()


if __name__ == "__main__":
    sys.exit(main())
