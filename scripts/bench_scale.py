#!/usr/bin/env python3
"""Many agents on one node daemon (not a test): start latency, memory, programs.

    sudo /opt/pycontain/venv/bin/python scripts/bench_scale.py [--agents 1,8,32,128]

Starts `pycontain daemon` (built-in default policy) on a private socket, then
for each N starts N agents at once through pycontain.client (one thread per
agent) and keeps them running. Reports per N: start latency p50 and p99
(client.Popen call to return: start request, cgroup made and tracked, agent
forked and exec'd in it; with --bursts K the N agents are started K times,
the previous ones stopped first, and p50/p99 are over all K*N starts: one
burst's p99 is its slowest start; --batch starts them with one
client.popen_many call and charges every agent the whole call); "stop p99":
the N killed at once, from the kill to the end of wait(), which has the
daemon end the agent; the daemon's RSS with the N agents running
(pycontain memory per added agent against N=0), the BPF programs the daemon
holds (fdinfo of its descriptors) and the node's (`bpftool prog show`;
scripts/install-test-tools.sh installs bpftool), the untracked exec loop with
the N agents present against bare (no daemon: rounds before it starts and
after it stops, medians) as wall rate and as CPU per exec (the agents sit
idle in a blocking read meanwhile, so the CPU ratio is pycontain's own cost
per untracked exec; the wall ratio also moves with whatever else the shared
vCPUs run between the bare and the loaded rounds), and as the kernel-measured
time of pycontain's programs per untracked exec ("hooks us", bpf_stats) over
the bare CPU per exec ("hooks x": 1 + hooks / bare, the cost the programs
add, free of the loop's round-to-round noise; it leaves out the kernel's
dispatch to them), and records/s: all N agents released at once into
an exec loop for --load seconds, records the daemon counted (state API) per
second of that window, with what it lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycontain import client  # noqa: E402
from pycontain.observe.state_api import StateClient  # noqa: E402

EXEC_LOOP = r"""
import os, resource, sys, time
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
n = int(sys.argv[1])
t, c = time.perf_counter(), cpu()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/true", ["/bin/true"])
    os.waitpid(pid, 0)
print(n / (time.perf_counter() - t), (cpu() - c) / n * 1e6)
"""
# each agent waits on the fifo (no exec while idle), then execs for LOAD s
AGENT = 'read x < "$1"; timeout "$2" sh -c "while :; do /bin/true; done"; exec sleep 600'


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


LOOP_N = 400


def exec_rate(n: int = LOOP_N) -> tuple[float, float]:
    """fork+exec of /bin/true from an untracked process: (per second of wall
    time, CPU microseconds per exec of the loop and its children). The CPU
    figure is what an exec costs (pycontain's exec programs run in the
    exec'ing task and show in its system time); the wall rate also counts
    waiting for a CPU, i.e. whatever else the 2 vCPUs run at that moment."""
    out = subprocess.run([sys.executable, "-c", EXEC_LOOP, str(n)], capture_output=True, text=True, check=True)
    rate, cpu_us = out.stdout.split()
    return float(rate), float(cpu_us)


STATS = "/proc/sys/kernel/bpf_stats_enabled"


def hooks_ns(pid: int) -> int:
    """Kernel-measured run time (ns, bpf_stats_enabled) of every BPF program
    `pid` holds, each program once (the daemon holds some by several fds)."""
    seen: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                info = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        except OSError:
            continue
        if "prog_id" in info and "run_time_ns" in info:
            seen[info["prog_id"].strip()] = int(info["run_time_ns"])
    return sum(seen.values())


def untracked_rounds(pid: int, rounds: int) -> tuple[list[tuple[float, float]], float]:
    """The untracked exec loop `rounds` times with the daemon's programs
    loaded: (rate, CPU us per exec) per round, and the µs of pycontain's
    kernel programs per exec, kernel-measured (every program run meanwhile,
    the daemon's own system calls included: an upper bound). The loop's CPU
    moves 5-15 % between rounds on this shared VM; the program time does not."""
    with open(STATS) as fh:
        before = fh.read().strip()
    with open(STATS, "w") as fh:
        fh.write("1")
    try:
        ns0 = hooks_ns(pid)
        out = [exec_rate(LOOP_N) for _ in range(rounds)]
        ns1 = hooks_ns(pid)
    finally:
        with open(STATS, "w") as fh:
            fh.write(before)
    return out, (ns1 - ns0) / (rounds * LOOP_N) / 1e3


def counted(sock: str) -> tuple[int, int]:
    """(records the daemon has counted, records lost) from its state API."""
    st = StateClient(sock).state()
    events = sum(e["count"] for e in st.get("totals", {}).get("events", []))
    lost = st.get("lost_events", {})
    return events, int(lost.get("kernel", 0)) + int(lost.get("user", 0))


def records_per_s(sock: str, fifo: str, n: int, load_s: float) -> tuple[float, int]:
    """Release the N waiting agents into their exec loops; records/s counted, lost."""
    e0, l0 = counted(sock)
    with open(fifo, "w") as fh:
        fh.write("\n" * n)
    time.sleep(load_s + 1.0)            # the loops, then the drain of what they left
    e1, l1 = counted(sock)
    return (e1 - e0) / load_s, l1 - l0


def start_batch(n: int, sock: str, argv: list[str]) -> tuple[list[float], list]:
    """The N agents by one client.popen_many call; every start is charged the
    whole call (the last agent's start), so p50 = p99 = the call."""
    t0 = time.perf_counter()
    procs = client.popen_many([argv] * n, socket=sock, name="scale", labels=[{"episode": i} for i in range(n)])
    return [time.perf_counter() - t0] * n, procs


def start_many(n: int, sock: str, argv: list[str]) -> tuple[list[float], list]:
    lat: list[float] = [0.0] * n
    procs: list = [None] * n
    go = threading.Barrier(n)

    def one(i: int) -> None:
        go.wait()
        t0 = time.perf_counter()
        procs[i] = client.Popen(argv, socket=sock, name="scale", labels={"episode": i})
        lat[i] = time.perf_counter() - t0
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, procs


def stop_all(procs: list) -> list[float]:
    """Kill the agents' processes at once, one thread each; per agent the time
    from the kill to the end of wait() (which tells the daemon to stop the
    agent: leftovers killed, cgroup removed, untracked)."""
    lat = [0.0] * len(procs)

    def one(i: int) -> None:
        t0 = time.perf_counter()
        procs[i].kill()
        procs[i].wait()
        lat[i] = time.perf_counter() - t0
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", default="1,8,32,128")
    ap.add_argument("--rounds", type=int, default=3, help="untracked exec loops per N and for bare")
    ap.add_argument("--load", type=float, default=5.0, help="seconds of agent exec loops for records/s")
    ap.add_argument("--bursts", type=int, default=1,
                    help="start the N agents this many times (the previous ones stopped first); "
                         "p50/p99 over all starts")
    ap.add_argument("--batch", action="store_true",
                    help="start the N agents with one client.popen_many call (one request, launched from one "
                         "thread) instead of N client.Popen calls from N threads")
    ap.add_argument("--v2-join-only", action="store_true",
                    help="hybrid hosts: agents join only their cgroup2 dir, one move per start as on a pure-v2 "
                         "node (an estimate of a v2 node's start latency; the agents keep the client's v1 "
                         "cgroups, so budgets do not apply: benchmark only)")
    a = ap.parse_args()
    if a.v2_join_only:
        from pycontain.actuate.cgroups import AgentCgroup
        AgentCgroup.procs_files = lambda self: [os.path.join(self.v2_path, "cgroup.procs")]  # type: ignore[method-assign]
    if os.geteuid() != 0:
        print("bench_scale: run as root", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="pycontain-scale-")
    os.chmod(tmp, 0o711)       # each agent runs as a fresh uid of its own: it must reach the fifo
    sock = os.path.join(tmp, "pc.sock")
    fifo = os.path.join(tmp, "go")
    os.mkfifo(fifo, 0o644)
    bare = [exec_rate() for _ in range(a.rounds)]
    # its own pin dir, released at the end: a daemon's pins outlive it by design
    env = dict(os.environ, PYCONTAIN_BPFFS=f"/sys/fs/bpf/pycontain-bench-{os.getpid()}")
    daemon = [sys.executable, "-m", "pycontain.cli", "daemon", "--socket", sock]
    d = subprocess.Popen([*daemon, "--allow-no-gpu", "--audit-log", os.path.join(tmp, "audit.jsonl")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    rows = []
    try:
        while not os.path.exists(sock):
            time.sleep(0.1)
        time.sleep(1.0)
        rss0, progs0 = rss_kb(d.pid), bpf_progs_of(d.pid)
        print(f"daemon idle: RSS {rss0 / 1024:.1f} MB, {progs0} BPF programs, node-wide {bpf_progs_node()}")
        for n in [int(x) for x in a.agents.split(",")]:
            lat: list[float] = []
            stops: list[float] = []
            procs: list = []
            for _burst in range(a.bursts):
                if procs:               # the earlier burst's agents end first: N at once each time
                    stops += stop_all(procs)
                    time.sleep(0.5)
                more, procs = (start_batch if a.batch else start_many)(n, sock, ["sh", "-c", AGENT, "agent", fifo,
                                                                                  str(a.load)])
                lat += more
            time.sleep(1.0)
            rss, progs, node = rss_kb(d.pid), bpf_progs_of(d.pid), bpf_progs_node()
            untracked, hooks_us = untracked_rounds(d.pid, a.rounds)
            rate, lost = records_per_s(sock, fifo, n, a.load)
            stops += stop_all(procs)
            rows.append((n, lat, stops, rss, progs, node, untracked, hooks_us, rate, lost))
            time.sleep(0.5)
    finally:
        d.terminate()
        d.wait(30)
        subprocess.run([*daemon, "--release"], env=env, capture_output=True)
        time.sleep(1.0)
    bare += [exec_rate() for _ in range(a.rounds)]
    shutil.rmtree(tmp, ignore_errors=True)
    b = statistics.median(r for r, _ in bare)
    bc = statistics.median(c for _, c in bare)
    print(f"bare untracked exec: {b:.0f}/s, {bc:.0f} us CPU each (median of {len(bare)}; "
          f"{min(r for r, _ in bare):.0f}-{max(r for r, _ in bare):.0f}/s)")
    print(f"{'agents':>6} {'p50 ms':>8} {'p99 ms':>8} {'stop p99':>9} {'daemon RSS MB':>14} {'MB/agent':>9} "
          f"{'daemon progs':>13} "
          f"{'node progs':>11} {'exec wall':>10} {'exec CPU':>9} {'hooks us':>9} {'hooks x':>8} "
          f"{'records/s':>10} {'lost':>5}")
    for n, lat, stops, rss, progs, node, untracked, hooks_us, rate, lost in rows:
        u = statistics.median(r for r, _ in untracked)
        uc = statistics.median(c for _, c in untracked)
        print(f"{n:>6} {pct(lat, .5) * 1e3:>8.1f} {pct(lat, .99) * 1e3:>8.1f} {pct(stops, .99) * 1e3:>9.1f} "
              f"{rss / 1024:>14.1f} "
              f"{(rss - rss0) / 1024 / n:>9.2f} {progs:>13} {node if node is not None else '-':>11} "
              f"{b / u:>9.3f}x {uc / bc:>8.3f}x {hooks_us:>9.2f} {1 + hooks_us / bc:>7.4f}x "
              f"{rate:>10.0f} {lost:>5}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
