#!/usr/bin/env python3
"""Per-record cost of the user-space path (not a test): decode, engine,
audit line, state counters, through the real ring-buffer callback.

    /opt/pycontain/venv/bin/python scripts/bench_records.py [--n 200000] [--profile]

No BPF: records are built as the kernel lays them out (core/events.py
ctypes mirrors) and handed to Probes' real callback in a loop, as
ring_buffer_consume does, with the real Controller (default policy, audit
log written to a file) behind it. Reports µs per record by mix (an agent
exec = fork + exec + exit; an agent connect = connect + 2 TCP states) and
records/s; --profile[=exec,connect] prints the top of a cProfile of each mix.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes as C
import os
import pstats
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycontain.core.events import CExec, CExit, CFork, CNet, CTcpState, EventType  # noqa: E402


def _hdr(c, etype: int, pid: int = 4242) -> None:
    h = c.h if hasattr(c, "h") else c
    h.type, h.pid, h.tid, h.ppid, h.uid, h.agent_id = etype, pid, pid, 1, 1000, 1
    h.ts_ns, h.start_ns, h.cgroup_id, h.comm = 10**12, 10**11, 77, b"agent"


def records() -> dict[str, list[bytes]]:
    ex = CExec()
    _hdr(ex, EventType.EXEC)
    ex.filename, ex.filename_len = b"/usr/bin/python3", 16
    args = b"python3\0-c\0print(1)\0"
    C.memmove(C.addressof(ex) + CExec.args.offset, args, len(args))
    ex.args_len, ex.argc = len(args), 3
    fk = CFork()
    _hdr(fk, EventType.FORK)
    fk.child_pid = 4243
    xt = CExit()
    _hdr(xt, EventType.EXIT)
    cn = CNet()
    _hdr(cn, EventType.CONNECT)
    cn.family, cn.protocol, cn.dport, cn.sport = 2, 6, 8080, 40000
    cn.daddr[:4] = [127, 0, 0, 1]
    cn.saddr[:4] = [127, 0, 0, 1]
    ts = []
    for old, new in ((2, 1), (1, 7)):
        t = CTcpState()
        _hdr(t, EventType.TCP_STATE)
        t.family, t.oldstate, t.newstate, t.sport, t.dport = 2, old, new, 40000, 8080
        ts.append(bytes(t))
    return {"exec": [bytes(fk), bytes(ex), bytes(xt)], "connect": [bytes(cn), *ts]}


def controller(audit_path: str):
    from pycontain.app.controller import Controller
    from pycontain.app.edges import Edges
    from pycontain.core.policy import builtin_policy
    from pycontain.kernel.loader import Probes
    from pycontain.observe.audit import AuditLog
    from pycontain.observe.state import NodeState

    class NoKernel(Probes):
        def load(self):
            pass

        def set_tables(self, tables):
            pass

        def track_cgroup(self, path, agent_id):
            pass

        def hook_status(self):
            return {}

    ctl = Controller(builtin_policy("default"), audit=AuditLog(audit_path), state=NodeState(), allow_no_gpu=True,
                     edges=Edges(probes=NoKernel, nvml=None, actuator=lambda *a, **k: None))
    ctl.start()

    class Cg:
        v2_path = "/nonexistent"

        def set_budgets(self, **kw):
            pass
    ctl.add_agent("bench", Cg(), apply_budgets=False)
    return ctl


def run_mix(ctl, recs: list[bytes], n: int) -> float:
    """Seconds of CPU for n rounds of recs through the callback, with what
    the loop does after each poll (Controller.drain: audit flush, state
    counters, decisions) every 64 rounds."""
    bufs = [C.create_string_buffer(r, len(r)) for r in recs]
    cb = ctl.probes._on_record
    t0 = time.process_time()
    for i in range(n):
        for b in bufs:
            cb(None, b, C.sizeof(b))
        if i % 64 == 0:
            ctl.drain(0)
    ctl.drain(0)
    return time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000, help="rounds per mix")
    ap.add_argument("--profile", nargs="?", const="exec,connect", default="",
                    type=lambda v: [m for m in v.split(",") if m], help="mixes to profile (default: both)")
    a = ap.parse_args()
    recs = records()
    with tempfile.TemporaryDirectory() as d:
        ctl = controller(os.path.join(d, "audit.jsonl"))
        run_mix(ctl, recs["connect"], 1000)     # warm-up
        out = {}
        for mix, rs in recs.items():
            secs = run_mix(ctl, rs, a.n)
            out[mix] = (secs / a.n * 1e6, a.n * len(rs) / secs)
        for mix, (us, rate) in out.items():
            print(f"agent {mix:8}: {us:7.1f} µs of pycontain CPU each ({len(recs[mix])} records), "
                  f"{rate:,.0f} records/s")
        for mix in a.profile:
            prof = cProfile.Profile()
            prof.enable()
            run_mix(ctl, recs[mix], a.n // 5)
            prof.disable()
            print(f"---- profile of the {mix} mix")
            pstats.Stats(prof).sort_stats("tottime").print_stats(22)
    return 0


if __name__ == "__main__":
    sys.exit(main())
