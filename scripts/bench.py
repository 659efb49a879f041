#!/usr/bin/env python3
"""pycontain benchmark (not a test): overhead, event throughput, start-up, RSS.

    sudo /opt/pycontain/venv/bin/python scripts/bench.py [--quick] [--json]

Everything is measured in ONE run and reported as ratios against the bare
baseline measured in the same run:

* exec loop (fork+exec /bin/true) and connect loop (TCP connect to a loopback
  listener, closed with a reset so no TIME_WAIT piles up between loops):
  bare; in the agent cgroup with nothing loaded (what the nested cgroup
  itself costs); with pycontain loaded but the process untracked; and
  inside the tracked agent cgroup, with the real controller (default policy,
  engine, audit log to a file) consuming the events. Each configuration is run
  in interleaved rounds and the median is kept, so drift on a shared 2-core VM
  hits all equally.
* flood: tracked agent processes generate events as fast as they can (TCP
  connects and forks); events produced and delivered per second and events
  lost (kernel ring buffer + user space).
* time from Controller.start() to ready (compiled, attached, tables written,
  NVML and DNS overlapped).
* controller RSS after load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycontain.actuate.cgroups import AgentCgroup  # noqa: E402
from pycontain.core.kernel_rules import KernelTables  # noqa: E402

CHILD = r"""
import os, socket, struct, sys, time
mode, n, port, cg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if cg != "-":
    for f in cg.split(","):
        open(f, "w").write(str(os.getpid()))
t = time.perf_counter()
if mode == "exec":
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/true", ["/bin/true"])
        os.waitpid(pid, 0)
else:
    # closed with a reset (SO_LINGER 0): a normal close leaves each connection
    # in TIME_WAIT for 60 s, and the kernel's search for a free ephemeral port
    # then slows every later loop of the round (the agent's is the last one):
    # scripts/bench_connect_cpu.py measured the CPU per connect doubling
    linger = struct.pack("ii", 1, 0)
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.connect(("127.0.0.1", port))
        s.close()
print(n / (time.perf_counter() - t))
"""


LISTENER = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    c.close()
"""


def listener() -> tuple[subprocess.Popen, int]:
    """A loopback listener in its own process: in the bench process its accept
    loop would share the GIL with the controller and measure that instead."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def loop_rate(mode: str, n: int, port: int, procs_files: list[str] | None) -> float:
    cg = ",".join(procs_files) if procs_files else "-"
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(port), cg], capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load_probes(pages: int = 4096):
    from pycontain.kernel.loader import Probes
    t0 = time.perf_counter()
    probes = Probes(ringbuf_pages=pages)
    probes.load()
    probes.set_tables(KernelTables())
    return probes, time.perf_counter() - t0


# the built-in default, except that the bench's loopback listener (which the
# agent did not start: network.local_services refuses it by default) is reachable
BENCH_POLICY = "extends: default\nname: bench\nnetwork:\n  local_services: any\n"


def agent_probes(name: str, routine_port: int | None, agent_id: int = 7):
    """Every hook loaded with BENCH_POLICY and one tracked agent cgroup:
    (probes, cgroup). routine_port: a loopback TCP port whose connects are
    entered as routine, as the controller does after the first record
    (bench_prog_cost.py, bench_connect_cpu.py)."""
    from pycontain.core.kernel_rules import compile_policy
    from pycontain.core.policy import load_policy_text
    from pycontain.kernel.loader import Probes

    probes = Probes(ringbuf_pages=256)
    probes.load()
    probes.set_tables(compile_policy(load_policy_text(BENCH_POLICY)))
    cg = AgentCgroup.create(name)
    track_agent(probes, cg, agent_id, routine_port)
    return probes, cg


def track_agent(probes, cg, agent_id: int, routine_port: int | None) -> None:
    """Track `cg` as agent `agent_id` (its cgroup programs attached) and enter
    the routine port, if any, as the controller would."""
    import socket

    from pycontain.app.routine import raw_addr
    from pycontain.kernel.quiet_maps import QuietKey

    probes.track_cgroup(cg.v2_path, agent_id)
    if routine_port is not None:
        probes.quiet_add(QuietKey(agent_id, socket.AF_INET, socket.IPPROTO_TCP, routine_port,
                                  raw_addr(socket.AF_INET, "127.0.0.1")))


def start_controller(audit_path: str):
    """The real `pycontain run` controller with the default policy: decode,
    engine, audit log (to a file) and state, everything an agent's events cost."""
    from pycontain.app.controller import Controller
    from pycontain.core.policy import load_policy_text
    from pycontain.observe.audit import AuditLog
    from pycontain.observe.state import NodeState
    ctl = Controller(load_policy_text(BENCH_POLICY), audit=AuditLog(audit_path), state=NodeState(),
                     allow_no_gpu=True)
    ctl.start()
    return ctl


def repeat_in_background(step: Callable[[], object]) -> Callable[[], None]:
    """Call step() in a loop on a thread; the returned function stops it."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            step()
    th = threading.Thread(target=loop, daemon=True)
    th.start()

    def stopper() -> None:
        stop.set()
        th.join()
    return stopper


def settle(port: int) -> None:
    """Let the kernel finish the work a load or unload leaves behind (RCU
    frees, detaches) and warm the loops up: the first loop after a probe
    unload ran ~10 % slow and biased the bare column."""
    time.sleep(1.0)
    loop_rate("exec", 50, port, None)
    loop_rate("connect", 300, port, None)


def overhead_round(args, port: int, cg, res: dict, ready: list) -> None:
    """One interleaved round: bare (nothing loaded), then loaded-untracked and
    agent with the real controller running its loop."""
    n = {"exec": args.exec_n, "connect": args.connect_n}
    settle(port)
    for mode in ("exec", "connect"):
        res[mode]["bare"].append(loop_rate(mode, n[mode], port, None))
        # the same agent cgroup with nothing loaded: what the cgroup itself costs
        res[mode]["cgroup"].append(loop_rate(mode, n[mode], port, cg.procs_files()))
    with tempfile.NamedTemporaryFile(prefix="pycontain-bench-", suffix=".jsonl") as audit:
        ctl = start_controller(audit.name)
        ready.append(ctl.started_ready_s)
        res["rss_mb"].append(rss_mb())
        try:
            ctl.add_agent("bench", cg, apply_budgets=False)
            stop = repeat_in_background(lambda: ctl.step(100))
            settle(port)
            for mode in ("exec", "connect"):
                res[mode]["untracked"].append(loop_rate(mode, n[mode], port, None))
                res[mode]["agent"].append(loop_rate(mode, n[mode], port, cg.procs_files()))
                # the controller works off the agent loop's backlog before the
                # next loop starts, or that loop pays for it
                time.sleep(0.5)
            stop()
            res["audit_records"].append(sum(1 for _ in open(audit.name)))
            res["lost"].append(ctl.probes.lost_kernel() + ctl.probes.user_lost)
        finally:
            ctl.cgroups.clear()    # the bench owns the cgroup
            ctl.close()


FLOOD = r"""
import os, socket, sys, time
secs, port = float(sys.argv[1]), int(sys.argv[2])
for f in sys.argv[3].split(","):
    open(f, "w").write(str(os.getpid()))
# a tracked agent making events as fast as it can: TCP connects to loopback
# (connect + TCP state changes) interleaved with fork+exit (fork, exit)
end = time.perf_counter() + secs
i = 0
while time.perf_counter() < end:
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.close()
    i += 1
    if i % 4 == 0:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
"""


def flood(args, probes, cg, port: int) -> dict:
    got = [0]
    probes.on_event = lambda ev: got.__setitem__(0, got[0] + 1)
    lost0, user0 = probes.lost_kernel(), probes.user_lost
    workers = [subprocess.Popen([sys.executable, "-c", FLOOD, str(args.flood_seconds), str(port),
                                 ",".join(cg.procs_files())]) for _ in range(args.flood_workers)]
    t0 = time.perf_counter()
    while any(w.poll() is None for w in workers):
        probes.poll(50)
    elapsed = time.perf_counter() - t0
    for _ in range(20):
        probes.poll(50)
    lost_k, lost_u = probes.lost_kernel() - lost0, probes.user_lost - user0
    produced = got[0] + lost_k + lost_u
    return {"seconds": round(elapsed, 1), "workers": args.flood_workers, "produced": produced,
            "produced_per_s": round(produced / elapsed), "delivered": got[0],
            "delivered_per_s": round(got[0] / elapsed), "lost_kernel": lost_k, "lost_user": lost_u}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.rounds = 3 if a.quick else 7
    a.exec_n = 300 if a.quick else 1000
    a.connect_n = 2000 if a.quick else 5000
    a.flood_workers = 2
    a.flood_seconds = 5 if a.quick else 30
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1

    srv, port = listener()
    cg = AgentCgroup.create("bench")
    res = {m: {"bare": [], "cgroup": [], "untracked": [], "agent": []} for m in ("exec", "connect")}
    res["audit_records"] = []
    res["rss_mb"] = []
    res["lost"] = []
    ready: list[float] = []
    rss0 = rss_mb()
    try:
        for _ in range(a.rounds):
            overhead_round(a, port, cg, res, ready)
        probes, _t = load_probes()
        rss_loaded = rss_mb()
        try:
            probes.track_cgroup(cg.v2_path, 1)
            fl = flood(a, probes, cg, port)
        finally:
            probes.close()
    finally:
        srv.kill()
        srv.wait()
        cg.remove()
    audit_records = res.pop("audit_records")
    rss_started = res.pop("rss_mb")
    lost_in_rounds = res.pop("lost")
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in res.items()}
    base = {m: med[m]["bare"] for m in med}
    ov = med
    ready = statistics.median(ready)
    result = {
        "machine": f"{os.cpu_count()} vCPU, kernel {os.uname().release}",
        "exec_per_s": {k: round(v) for k, v in ov["exec"].items()},
        "connect_per_s": {k: round(v) for k, v in ov["connect"].items()},
        "slowdown": {
            "exec_untracked": round(1 - ov["exec"]["untracked"] / base["exec"], 4),
            "exec_agent": round(1 - ov["exec"]["agent"] / base["exec"], 4),
            "connect_untracked": round(1 - ov["connect"]["untracked"] / base["connect"], 4),
            "connect_agent": round(1 - ov["connect"]["agent"] / base["connect"], 4),
            # probes alone: agent vs the same cgroup with nothing loaded
            "exec_agent_vs_cgroup": round(1 - ov["exec"]["agent"] / ov["exec"]["cgroup"], 4),
            "connect_agent_vs_cgroup": round(1 - ov["connect"]["agent"] / ov["connect"]["cgroup"], 4),
        },
        "audit_records_per_round": round(statistics.median(audit_records)),
        "events_lost_in_rounds": sum(lost_in_rounds),
        "flood": fl,
        "ready_s": round(ready, 2),
        # the controller's RSS after its first start in this process; later
        # rounds load and unload BCC again and grow the heap of the bench itself
        "rss_mb": {"before_load": round(rss0, 1), "controller_started": round(rss_started[0], 1),
                   "after_rounds_and_flood_load": round(rss_loaded, 1),
                   "max": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':18}{'bare':>10}{'cgroup':>10}{'untracked':>12}{'agent':>10}   "
              "slowdown: untracked, agent (vs bare), agent vs cgroup only")
        for k in ("exec", "connect"):
            r = result[f"{k}_per_s"]
            s = result["slowdown"]
            print(f"{k + ' loop /s':18}{r['bare']:>10}{r['cgroup']:>10}{r['untracked']:>12}{r['agent']:>10}   "
                  f"{s[k + '_untracked']:+.1%}, {s[k + '_agent']:+.1%}, {s[k + '_agent_vs_cgroup']:+.1%}")
        f = result["flood"]
        print(f"flood ({f['workers']} agent processes, {f['seconds']}s): produced {f['produced']} events "
              f"({f['produced_per_s']}/s), delivered {f['delivered']} ({f['delivered_per_s']}/s), "
              f"lost kernel {f['lost_kernel']}, user {f['lost_user']}")
        print(f"ready {result['ready_s']} s; controller RSS {result['rss_mb']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
