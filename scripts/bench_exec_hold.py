#!/usr/bin/env python3
"""How long a held exec waits for its user-space verdict (issue 11; not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_exec_hold.py [--n 300]

The real controller with the default policy runs; an agent execs a program
named `ssh` with `host cmd` arguments (held by the kernel: ssh has argument
rules; the controller also runs `ssh -G` for it, issue 12) or, with
`--held-name busybox`, a multi-call name held for its applets (the hold
alone) N times in a row. The controller measures each hold from the exec
(kernel boot ns) to the SIGCONT it sends. Reported: p50, p99, max in ms, and
the same loop's wall time per exec against a program that is not held.
With --compare-ssh-cache the held rounds alternate between the `ssh -G`
answer cache off (every exec queried, the state before issue 11's cache) and
on, and the hold figures are given per variant.
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
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycontain.actuate.cgroups import AgentCgroup  # noqa: E402

LOOP = r"""
import os, sys, time
prog, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.execv(prog, [prog, "far.example", "true"])
    os.waitpid(pid, 0)
print((time.perf_counter() - t0) / n)
"""


def _join(cg: AgentCgroup) -> None:
    for f in cg.procs_files():
        with open(f, "w") as fh:
            fh.write(str(os.getpid()))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"holds": len(ms), "hold_p50_ms": round(statistics.median(ms), 3), "hold_p99_ms": round(pct(ms, 0.99), 3),
            "hold_max_ms": round(max(ms), 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--held-name", default="ssh",
                    help="the held program's name: ssh (also queried with `ssh -G`, issue 12) or busybox (hold only)")
    ap.add_argument("--compare-ssh-cache", action="store_true",
                    help="interleave held rounds with the `ssh -G` answer cache off and on; hold figures per variant")
    args = ap.parse_args()
    from pycontain.actuate import ssh_config
    from pycontain.actuate.ssh_config_cache import AnswerCache
    from pycontain.app.controller import Controller
    from pycontain.core.policy import builtin_policy
    from pycontain.observe.audit import AuditLog
    from pycontain.observe.state import NodeState

    d = tempfile.mkdtemp()
    held, free = os.path.join(d, args.held_name), os.path.join(d, "notheld")
    shutil.copy("/bin/true", held)
    shutil.copy("/bin/true", free)
    ctl = Controller(builtin_policy("default"), audit=AuditLog(os.path.join(d, "audit.jsonl")), state=NodeState(),
                     allow_no_gpu=True)
    ctl.start()
    cg = AgentCgroup.create("bench-hold")
    ctl.add_agent("bench-hold", cg)
    stop = threading.Event()
    worker = threading.Thread(target=lambda: [ctl.step(20) for _ in iter(stop.is_set, True)], daemon=True)
    worker.start()
    per_exec: dict[str, list[float]] = {}
    holds: dict[str, list[float]] = {}
    rounds = [("not held", free), ("held", held)] * 2
    if args.compare_ssh_cache:
        rounds = [("not held", free), ("held, no cache", held), ("held, cache", held)] * 2
    cached = ssh_config.ANSWERS
    try:
        for name, prog in rounds:
            ssh_config.ANSWERS = AnswerCache(entries=0) if name == "held, no cache" else cached
            cmd = [sys.executable, "-c", LOOP, prog, str(args.n)]
            first = len(ctl.hold_ns)
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                 preexec_fn=lambda: _join(cg), check=True)
            per_exec.setdefault(name, []).append(float(out.stdout))
            holds.setdefault(name, []).extend(x / 1e6 for x in list(ctl.hold_ns)[first:])
    finally:
        stop.set()
        worker.join(timeout=5)
        ctl.remove_agent("bench-hold")
        ctl.close()
        cg.remove()
        shutil.rmtree(d, ignore_errors=True)
    variants = {k: v for k, v in holds.items() if k.startswith("held, ")} or \
        {"all": [x for v in holds.values() for x in v]}
    res: dict[str, object] = {name: _summary(ms) for name, ms in variants.items()}
    res["exec_loop_ms"] = {k: round(statistics.median(v) * 1e3, 3) for k, v in per_exec.items()}
    res["ssh_cache"] = {"hits": cached.hits, "misses": cached.misses}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
