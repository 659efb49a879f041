#!/usr/bin/env python3
"""Check pycontain's NVML path on a real GPU node.

    sudo /opt/pycontain/venv/bin/python scripts/gpu_check.py [--seconds 10]

Samples the real driver through pycontain's wrapper while a small CUDA matmul
loop runs (torch or cupy, if importable), and prints what it sees per device
and per process, including whether the load's own pid showed up with memory
and SM utilisation. Record the output in docs/gpu.md.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    nv = Nvml()
    print(f"NVML: {nv.status}")
    if not nv.available:
        return 1
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
