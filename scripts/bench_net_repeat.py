#!/usr/bin/env python3
"""pycontain CPU per agent connect with and without in-kernel aggregation of
repeat allowed destinations (issue 14 part 3; not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_net_repeat.py [--rounds 5] [--n 3000]

One real controller (default policy, audit log to a file) consumes the real
rings; an agent connects n times to a loopback listener outside the agent
(allowed). Rounds interleave: bare loop; agent loop with aggregation on;
agent loop with it off (Controller.routine unset, map emptied). pycontain
CPU = this process's CPU time (user + system) over the agent loop and the
0.5 s after it (the backlog), less the same idle 0.5 s measured alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import listener, loop_rate, repeat_in_background  # noqa: E402

from pycontain.actuate.cgroups import AgentCgroup  # noqa: E402

# the built-in default, but the loopback listener (not the agent's own) reachable
POLICY = "extends: default\nnetwork:\n  local_services: any\n"


def start_controller(audit_path: str):
    from pycontain.app.controller import Controller
    from pycontain.core.policy import load_policy_text
    from pycontain.observe.audit import AuditLog
    from pycontain.observe.state import NodeState
    ctl = Controller(load_policy_text(POLICY), audit=AuditLog(audit_path), state=NodeState(), allow_no_gpu=True)
    ctl.start()
    return ctl


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(n: int, port: int, cg, ctl) -> tuple[float, float]:
    """(µs of pycontain CPU per connect, loop rate)."""
    idle0 = cpu()
    time.sleep(0.5)
    idle = cpu() - idle0
    c0 = cpu()
    rate = loop_rate("connect", n, port, cg.procs_files())
    time.sleep(0.5)
    return max(0.0, cpu() - c0 - idle) / n * 1e6, rate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    lst, port = listener()
    cg = AgentCgroup.create(f"pc-bench-repeat-{os.getpid()}")
    res: dict[str, list[float]] = {k: [] for k in ("bare", "on_rate", "off_rate", "on_us", "off_us")}
    loads = [os.getloadavg()[0]]
    with tempfile.NamedTemporaryFile(prefix="pycontain-bench-", suffix=".jsonl") as audit:
        ctl = start_controller(audit.name)
        routine = ctl.routine
        try:
            ctl.add_agent("bench", cg, apply_budgets=False)
            lock = threading.Lock()
            stop = repeat_in_background(lambda: lock.acquire() and (ctl.step(100), lock.release()))
            for r in range(args.rounds):
                res["bare"].append(loop_rate("connect", args.n, port, None))
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for mode in order:
                    with lock:
                        ctl.probes.quiet_clear()
                        if routine is not None:
                            routine._known.clear()
                        ctl.routine = routine if mode == "on" else None
                    us, rate = measure(args.n, port, cg, ctl)
                    res[f"{mode}_us"].append(us)
                    res[f"{mode}_rate"].append(rate)
                loads.append(os.getloadavg()[0])
            stop()
            lost = ctl.probes.lost_kernel() + ctl.probes.user_lost
        finally:
            ctl.cgroups.clear()
            ctl.close()
            cg.remove()
            lst.kill()
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"rounds {args.rounds}, n {args.n}, load {min(loads):.2f}-{max(loads):.2f}, lost {lost}")
    for k, v in res.items():
        print(f"{k:9s} median {med[k]:10.1f}  range {min(v):.1f}-{max(v):.1f}")
    print(f"agent/bare: on {med['bare'] / med['on_rate']:.3f}x  off {med['bare'] / med['off_rate']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
