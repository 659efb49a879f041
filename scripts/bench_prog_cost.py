#!/usr/bin/env python3
"""Kernel CPU per agent operation, per BPF program, all hooks loaded (not a test).

    sudo /opt/pycontain/venv/bin/python scripts/bench_prog_cost.py [--loop connect|exec] [--n 3000] [--no-quiet]
        [--untracked]

Loads every hook of this checkout with the default policy (as `run` does),
tracks one agent cgroup, enables kernel.bpf_stats_enabled and runs an agent
loop in that cgroup: `connect` (TCP connect + close to a loopback listener
the loop owns) or `exec` (fork + exec /bin/true). Prints, per program, its
runs and ns per run from fdinfo (run_time_ns / run_cnt, kernel-measured, so
the shared VM's noise barely moves it) and its ns per loop iteration, and the
total: what pycontain's programs add to one agent connect or exec.
`--untracked` runs the same loop outside the agent cgroup, with the agent
still tracked: what the host-wide hooks cost every other process on the node.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

STATS = "/proc/sys/kernel/bpf_stats_enabled"
LOOPS = {
    "connect": """import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    c = socket.socket(); c.connect(("127.0.0.1", port)); c.recv(1); c.close()
""",
    "exec": """import os, sys
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os.execv('/bin/true', ['/bin/true'])
    os.waitpid(pid, 0)
""",
}


def _listener():
    """A loopback service outside the agent: accepts, sends one byte, closes."""
    import threading
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(256)

    def serve() -> None:
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            c.sendall(b"x")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    return lst


def _stats(fd: int) -> tuple[int, int]:
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        txt = fh.read()
    rt = re.search(r"run_time_ns:\s*(\d+)", txt)
    rc = re.search(r"run_cnt:\s*(\d+)", txt)
    return (int(rt.group(1)), int(rc.group(1))) if rt and rc else (0, 0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", choices=sorted(LOOPS), default="connect")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--no-quiet", action="store_true",
                    help="do not mark the destination routine (every connect reported in full)")
    ap.add_argument("--untracked", action="store_true",
                    help="run the loop outside the agent cgroup (host-wide hooks only)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import agent_probes  # bench.py's policy and agent setup

    listener = _listener() if args.loop == "connect" else None
    routine = listener.getsockname()[1] if listener is not None and not args.no_quiet else None
    probes, cg = agent_probes("progcost", routine)
    progs = {name.decode() if isinstance(name, bytes) else name: f.fd for name, f in probes.bpf.funcs.items()}

    def join() -> None:
        for f in cg.procs_files():
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))

    with open(STATS, "w") as fh:
        fh.write("1")
    try:
        before = {n: _stats(fd) for n, fd in progs.items()}
        # the loop from a file: a long `-c` argv would be held for a controller this script does not run
        loop = Path(tempfile.mkdtemp(prefix="pcc", dir="/tmp")) / "loop.py"
        loop.write_text(LOOPS[args.loop])
        extra = [str(listener.getsockname()[1])] if listener else []
        t0 = os.times()
        proc = subprocess.Popen([sys.executable, str(loop), str(args.n), *extra],
                                preexec_fn=None if args.untracked else join)
        while proc.poll() is None:      # drain as the controller would: a full ring fails closed
            probes.poll(50)
        if proc.returncode:
            raise SystemExit(f"the agent loop failed: {proc.returncode}")
        t1 = os.times()
        loop_cpu_us = ((t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)) * 1e6
        for _ in range(5):
            probes.poll(10)
        after = {n: _stats(fd) for n, fd in progs.items()}
    finally:
        with open(STATS, "w") as fh:
            fh.write("0")
        probes.untrack_cgroup(cg.v2_path)
        cg.remove()
        probes.close()
    total = 0.0
    rows = []
    for n, (rt, rc) in after.items():
        rt0, rc0 = before[n]
        if rc > rc0:
            per_iter = (rt - rt0) / args.n
            total += per_iter
            rows.append((per_iter, n, rc - rc0, (rt - rt0) / (rc - rc0)))
    for per_iter, n, runs, per_run in sorted(rows, reverse=True):
        print(f"{n:40s} runs {runs:8d}  ns/run {per_run:8.0f}  ns per {args.loop} {per_iter:8.0f}")
    who = "untracked" if args.untracked else "agent"
    print(f"total ns of pycontain programs per {who} {args.loop}: {total:.0f}")
    print(f"the agent loop's own CPU per {args.loop}: {loop_cpu_us / args.n:.1f} us (programs run in it included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
