#!/usr/bin/env python3
"""Benchmark (not a test): what waking the consumer per record costs an agent.

    sudo /opt/pycontain/venv/bin/python scripts/bench_wakeup.py [--rounds 5]

Runs the exec and connect loops of scripts/bench.py bare and inside a tracked
agent, with the probes built two ways in the same run:

* ``per-record``: -DPC_WAKE_EVERY=1, every record wakes the consumer (what
  a plain ``ringbuf_submit(e, 0)`` does);
* ``adaptive``: the shipped pc_wake_flags (verdicts and every 64th record per
  CPU wake it; the rest wait for the 50 ms drain).

The consumer decodes every record and does nothing else, so the figures are
the kernel and delivery path alone; scripts/bench.py measures the whole
controller.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402

from pycontain.actuate.cgroups import AgentCgroup  # noqa: E402
from pycontain.core.kernel_rules import KernelTables  # noqa: E402
from pycontain.kernel.loader import Probes  # noqa: E402


class PerRecordProbes(Probes):
    def cflags(self) -> list[str]:
        return super().cflags() + ["-DPC_WAKE_EVERY=1"]


def measure(cls, rounds: int, port: int, cg, n: dict) -> dict:
    probes = cls(ringbuf_pages=4096)
    probes.load()
    probes.set_tables(KernelTables())
    probes.track_cgroup(cg.v2_path, 1)
    probes.on_event = lambda ev: None
    stop = bench.repeat_in_background(lambda: probes.poll(50))
    out = {m: {"bare": [], "agent": []} for m in n}
    try:
        bench.settle(port)
        for _ in range(rounds):
            for m in n:
                out[m]["bare"].append(bench.loop_rate(m, n[m], port, None))
                out[m]["agent"].append(bench.loop_rate(m, n[m], port, cg.procs_files()))
                time.sleep(0.3)
        lost = probes.lost_kernel() + probes.user_lost
    finally:
        stop()
        probes.close()
    res = {}
    for m, d in out.items():
        b, a = statistics.median(d["bare"]), statistics.median(d["agent"])
        res[m] = {"bare_per_s": round(b), "agent_per_s": round(a), "slowdown": round(1 - a / b, 4)}
    res["lost"] = lost
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_wakeup: run as root", file=sys.stderr)
        return 1
    srv, port = bench.listener()
    cg = AgentCgroup.create("bench-wakeup")
    n = {"exec": 600, "connect": 3000}
    try:
        result = {"per-record": measure(PerRecordProbes, a.rounds, port, cg, n),
                  "adaptive": measure(Probes, a.rounds, port, cg, n)}
    finally:
        srv.kill()
        srv.wait()
        cg.remove()
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        for k, r in result.items():
            print(f"{k:11} exec {r['exec']['bare_per_s']}/s -> {r['exec']['agent_per_s']}/s "
                  f"({r['exec']['slowdown']:+.1%}); connect {r['connect']['bare_per_s']}/s -> "
                  f"{r['connect']['agent_per_s']}/s ({r['connect']['slowdown']:+.1%}); lost {r['lost']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
