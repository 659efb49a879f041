#!/usr/bin/env python3
"""Host-wide cost of pycontain's syscall-level hooks on untracked processes
(issue 14 part 2; not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_syscall_gate.py [--rounds 7] [--n 2000000]

Compiles a tiny C loop (N × getppid, N × read of 1 byte from /dev/zero) and
runs it, untracked, in interleaved rounds (order rotated each round) under:

* ``bare``: pycontain's tracepoint and raw-tracepoint programs detached;
* ``loaded``: every hook of this checkout attached (default policy tables,
  one tracked agent cgroup), as a daemon runs them;
* ``no-gate`` (when the checkout has a raw ``sys_enter``/``sys_exit`` gate):
  the same minus the gate program(s), to attribute the cost;
* with ``--floor``, two more, pycontain detached: ``raw-noop`` (a program
  that returns at once, on ``raw_syscalls:sys_enter``: the dispatch cost any
  gate pays) and ``tp-noop`` (the same on the per-call tracepoints
  ``syscalls:sys_enter_getppid`` and ``sys_enter_read``: what a gate made of
  per-call tracepoints would pay on each call it covers).

Programs are loaded once and toggled by detaching/attaching, so a round costs
no compile. Prints the loop's own CPU time (CLOCK_PROCESS_CPUTIME_ID, so time
the shared VM gives to other work is not counted) in ns per system call per
configuration (median, min and max over rounds; many short rounds resolve
tens of ns better than a few long ones) and each configuration's median ratio to ``bare``. Other users'
BPF programs on the node are in every configuration alike: say how loaded
the machine was (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
	long n = atol(argv[2]);
	int fd = open("/dev/zero", O_RDONLY);
	char b;
	struct timespec a, z;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
	if (!strcmp(argv[1], "getppid"))
		for (long i = 0; i < n; i++) syscall(SYS_getppid);
	else
		for (long i = 0; i < n; i++) if (read(fd, &b, 1) != 1) return 1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &z);
	printf("%.2f\n", ((z.tv_sec - a.tv_sec) * 1e9 + (z.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
"""
LOOPS = ("getppid", "read")


def build_loop(d: Path) -> str:
    (d / "loop.c").write_text(LOOP_C)
    subprocess.run(["gcc", "-O2", "-o", str(d / "loop"), str(d / "loop.c")], check=True)
    return str(d / "loop")


def ns_per_call(exe: str, loop: str, n: int) -> float:
    return float(subprocess.run([exe, loop, str(n)], check=True, capture_output=True,
                                text=True).stdout)


class Attachments:
    """Detach / re-attach this checkout's tracepoint programs (BCC names)."""

    def __init__(self, bpf):
        self.bpf = bpf
        self.tps = [t.decode() if isinstance(t, bytes) else t for t in bpf.tracepoint_fds]
        self.raws = [t.decode() if isinstance(t, bytes) else t for t in bpf.raw_tracepoint_fds]

    def set(self, *, tps: bool, gate: bool) -> None:
        for tp in self.tps:
            on = tp in {t.decode() if isinstance(t, bytes) else t for t in self.bpf.tracepoint_fds}
            if on and not tps:
                self.bpf.detach_tracepoint(tp.encode())
            elif tps and not on:
                cat, name = tp.split(":", 1)
                self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=f"tracepoint__{cat}__{name}".encode())
        for tp in self.raws:
            want = tps and (gate or tp not in GATES)
            on = tp.encode() in self.bpf.raw_tracepoint_fds or tp in self.bpf.raw_tracepoint_fds
            if on and not want:
                self.bpf.detach_raw_tracepoint(tp.encode())
            elif want and not on:
                self.bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=f"raw_tracepoint__{tp}".encode())


# the raw tracepoints every system call of every task runs: one gate on
# sys_exit since issue 10/14's merge, sys_enter + sys_exit before it
GATES = {"sys_enter", "sys_exit"}


class Floor:
    """No-op programs: the cost of a program's dispatch alone."""

    def __init__(self):
        from bcc import BPF
        self.b = BPF(text=b"int raw_noop(void *ctx) { return 0; }\nint tp_noop(void *ctx) { return 0; }\n")
        self.b.load_func(b"raw_noop", BPF.RAW_TRACEPOINT)
        self.b.load_func(b"tp_noop", BPF.TRACEPOINT)
        self.on: str | None = None

    def set(self, config: str | None) -> None:
        if self.on == "raw-noop":
            self.b.detach_raw_tracepoint(b"sys_enter")
        elif self.on == "tp-noop":
            for lp in LOOPS:
                self.b.detach_tracepoint(f"syscalls:sys_enter_{lp}".encode())
        self.on = config if config in ("raw-noop", "tp-noop") else None
        if self.on == "raw-noop":
            self.b.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"raw_noop")
        elif self.on == "tp-noop":
            for lp in LOOPS:
                self.b.attach_tracepoint(tp=f"syscalls:sys_enter_{lp}".encode(), fn_name=b"tp_noop")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also no-op programs (see the docstring)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pycontain.actuate.cgroups import AgentCgroup
    from pycontain.core.kernel_rules import compile_policy
    from pycontain.core.policy import builtin_policy
    from pycontain.kernel.loader import Probes

    exe = build_loop(Path(tempfile.mkdtemp()))
    probes = Probes()
    probes.load()
    probes.set_tables(compile_policy(builtin_policy("default")))
    cg = AgentCgroup.create("gatebench")
    probes.track_cgroup(cg.v2_path, 7)
    att = Attachments(probes.bpf)
    configs = {"bare": dict(tps=False, gate=False), "loaded": dict(tps=True, gate=True)}
    if GATES & set(att.raws):
        configs["no-gate"] = dict(tps=True, gate=False)
    floor = Floor() if args.floor else None
    if floor:
        configs.update({"raw-noop": dict(tps=False, gate=False), "tp-noop": dict(tps=False, gate=False)})
    names = list(configs)
    res: dict[str, dict[str, list[float]]] = {lp: {c: [] for c in names} for lp in LOOPS}
    load = [os.getloadavg()[0]]
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for c in order:
                att.set(**configs[c])
                if floor:
                    floor.set(c)
                for lp in LOOPS:
                    res[lp][c].append(ns_per_call(exe, lp, args.n))
                if floor:
                    floor.set(None)
            load.append(os.getloadavg()[0])
    finally:
        att.set(tps=True, gate=True)
        probes.untrack_cgroup(cg.v2_path)
        probes.close()
        cg.remove()
    out = {"hooks": att.tps + [f"raw_tp:{t}" for t in att.raws], "load_avg_1m": load, "loops": {}}
    for lp in LOOPS:
        base = res[lp]["bare"]
        out["loops"][lp] = {
            c: {"ns_median": statistics.median(v), "ns_min": min(v), "ns_max": max(v),
                "ratio_median": statistics.median(x / b for x, b in zip(v, base, strict=True)),
                "ratio_of_min": min(v) / min(base),
                "ratio_min": min(x / b for x, b in zip(v, base, strict=True)),
                "ratio_max": max(x / b for x, b in zip(v, base, strict=True))}
            for c, v in res[lp].items()}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print("hooks:", ", ".join(out["hooks"]))
    print(f"load average (1 min) during the run: {min(load):.1f}-{max(load):.1f}")
    for lp, cs in out["loops"].items():
        for c, s in cs.items():
            print(f"{lp:8} {c:8} {s['ns_median']:7.1f} ns/call (range {s['ns_min']:.1f}-{s['ns_max']:.1f})"
                  f"  vs bare: median of per-round ratios x{s['ratio_median']:.3f} (range {s['ratio_min']:.3f}-"
                  f"{s['ratio_max']:.3f}), min/min x{s['ratio_of_min']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
