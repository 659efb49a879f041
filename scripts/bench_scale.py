#!/usr/bin/env python3
"""Many agents on one node daemon (not a test): start latency, memory, programs.

    sudo /opt/pycontain/venv/bin/python scripts/bench_scale.py [--agents 1,8,32,128]

Starts `pycontain daemon` (built-in default policy) on a private socket, then
for each N starts N agents at once through pycontain.client (one thread per
agent) and keeps them running (`sleep`). Reports per N: start latency p50
and p99 (client.Popen call to return: start request, cgroup made and tracked,
agent forked and exec'd in it), the daemon's RSS with the N agents running
(pycontain memory per added agent against N=0), and the BPF programs the
daemon holds (fdinfo of its descriptors; bpftool's node-wide count where
bpftool is installed). Untracked-exec overhead and records/s are in
scripts/bench.py and scripts/bench_records.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycontain import client  # noqa: E402


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def bpf_progs_of(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                n += "prog_tag:" in fh.read()
        except OSError:
            pass
    return n


def bpf_progs_node() -> int | None:
    if not shutil.which("bpftool"):
        return None
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line[:1].isdigit())


def start_many(n: int, sock: str) -> tuple[list[float], list]:
    lat: list[float] = [0.0] * n
    procs: list = [None] * n
    go = threading.Barrier(n)

    def one(i: int) -> None:
        go.wait()
        t0 = time.perf_counter()
        procs[i] = client.Popen(["sleep", "600"], socket=sock, name="scale", labels={"episode": i})
        lat[i] = time.perf_counter() - t0
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, procs


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", default="1,8,32,128")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_scale: run as root", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="pycontain-scale-")
    sock = os.path.join(tmp, "pc.sock")
    d = subprocess.Popen([sys.executable, "-m", "pycontain.cli", "daemon", "--allow-no-gpu", "--socket", sock,
                          "--audit-log", os.path.join(tmp, "audit.jsonl")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.1)
        time.sleep(1.0)
        rss0, progs0 = rss_kb(d.pid), bpf_progs_of(d.pid)
        print(f"daemon idle: RSS {rss0 / 1024:.1f} MB, {progs0} BPF programs, node-wide {bpf_progs_node()}")
        print(f"{'agents':>6} {'p50 ms':>8} {'p99 ms':>8} {'daemon RSS MB':>14} {'MB/agent':>9} "
              f"{'daemon progs':>13} {'node progs':>11}")
        for n in [int(x) for x in a.agents.split(",")]:
            lat, procs = start_many(n, sock)
            time.sleep(1.0)
            rss, progs, node = rss_kb(d.pid), bpf_progs_of(d.pid), bpf_progs_node()
            print(f"{n:>6} {pct(lat, .5) * 1e3:>8.1f} {pct(lat, .99) * 1e3:>8.1f} {rss / 1024:>14.1f} "
                  f"{(rss - rss0) / 1024 / n:>9.2f} {progs:>13} {node if node is not None else '-':>11}", flush=True)
            for p in procs:
                p.kill()
                p.wait()
            time.sleep(0.5)
    finally:
        d.terminate()
        d.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
