"""`pycontain trace`: stream events of tracked agents, or the whole host.

It loads its own probes in monitor mode with empty deny tables, so it never
changes what is enforced; it only observes. Agent cgroups come from --cgroup
or from a running daemon's state API.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.errors import EnvironmentProblem, UsageError

COLUMNS = (("time", 12), ("agent", 14), ("kind", 9), ("pid", 7), ("comm", 16), ("verdict", 10), ("detail", None))


def _detail(rec: dict) -> str:
    from ..observe.report import describe
    text = describe(rec)
    if rec.get("rule"):
        text += f"  ({rec['rule']})"
    return text


def _row_table() -> Table:
    t = Table(box=None, show_header=False, pad_edge=False)
    for name, width in COLUMNS:
        t.add_column(name, width=width, no_wrap=width is not None, overflow="ellipsis" if width else "fold")
    return t


def print_row(console: Console, rec: dict) -> None:
    t = _row_table()
    verdict = rec.get("verdict", "")
    style = {"deny": "red", "would-deny": "yellow"}.get(verdict, "")
    t.add_row(time.strftime("%H:%M:%S", time.localtime(rec.get("ts", 0))) + f".{int((rec.get('ts', 0) % 1) * 1000):03d}",
              escape(str(rec.get("agent", ""))), escape(str(rec.get("kind", ""))), str(rec.get("pid", "")),
              escape(str(rec.get("comm", ""))), f"[{style}]{verdict}[/]" if style else verdict,
              escape(_detail(rec)))
    console.print(t)


def _agent_cgroups(cgroups: list[str], socket_path: str | None) -> list[tuple[str, str]]:
    if cgroups:
        return [(os.path.basename(c.rstrip("/")) or "cgroup", c) for c in cgroups]
    path = socket_path or "/run/pycontain/pycontain.sock"
    if not os.path.exists(path):
        return []
    from ..observe.state_api import StateClient
    snap = StateClient(path).state()
    return [(a["name"], a["cgroup"]) for a in snap.get("agents", [])]


def _gpu_tracer(targets: list[tuple[str, str]]):
    """GPU use of the traced cgroups (NVML), or None without NVML or targets."""
    if not targets:
        return None
    from types import SimpleNamespace
    from ..gpu.loop import GpuUseLog
    from ..gpu.attribution import attribute
    from ..gpu.nvml import Nvml
    from ..gpu.sampler import GpuSampler
    nvml = Nvml()
    if not nvml.available:
        return None
    sampler, log = GpuSampler(nvml), GpuUseLog()
    cgroups = {name: SimpleNamespace(v2_path=path, v1_paths={}) for name, path in targets}

    def step() -> list[dict]:
        sample = sampler.sample(time.monotonic())
        return log.new_records(sample, attribute(sample, cgroups), time.time())
    return step


def run_trace(*, all_host: bool, cgroups: list[str], socket_path: str | None, as_json: bool,
              duration: float | None) -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem("pycontain trace needs root (it loads BPF programs)")
    targets = _agent_cgroups(cgroups, socket_path)
    if not targets and not all_host:
        raise UsageError("nothing to trace: no running daemon with agents, and no --cgroup",
                         "use --all for the whole host, --cgroup DIR, or start `pycontain daemon`")
    for _, c in targets:
        if not os.path.isdir(c):
            raise UsageError(f"--cgroup {c}: no such cgroup directory")
    from ..core.events import ConfigFlag, Mode
    from ..core.kernel_rules import KernelTables
    from ..core.records import event_record
    from ..app.controller import boot_to_wall_offset
    from ..kernel.loader import Probes

    console = Console(highlight=False, soft_wrap=True)
    names: dict[int, str] = {}
    offset = boot_to_wall_offset()
    out = sys.stdout

    def on_event(ev):
        emit(event_record(ev, names.get(ev.h.agent_id, "host"), offset + ev.h.ts_ns / 1e9))

    def emit(rec):
        if as_json:
            out.write(json.dumps(rec, ensure_ascii=True) + "\n")
            out.flush()
        else:
            print_row(console, rec)

    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("now", True))
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    probes = Probes(trace_all=all_host)
    probes.on_event = on_event
    try:
        probes.load()
        probes.set_tables(KernelTables(mode=Mode.MONITOR, flags=ConfigFlag.TRACE_ALL if all_host else ConfigFlag(0)))
        for i, (name, path) in enumerate(targets, start=1):
            names[i] = name
            probes.track_cgroup(path, i)
        if not as_json:
            hdr = _row_table()
            hdr.add_row(*[f"[bold]{n}[/bold]" for n, _ in COLUMNS])
            console.print(hdr)
        gpu = _gpu_tracer(targets)
        end = time.monotonic() + duration if duration else None
        last_gpu = 0.0
        while not stop["now"] and (end is None or time.monotonic() < end):
            probes.poll(100)
            if gpu and time.monotonic() - last_gpu >= 1.0:
                last_gpu = time.monotonic()
                for rec in gpu():
                    emit(rec)
        probes.poll(0)
        lost = probes.lost_kernel()
        if lost or probes.user_lost:
            print(f"pycontain trace: {lost} event(s) lost in the kernel, {probes.user_lost} in user space",
                  file=sys.stderr)
    finally:
        probes.close()
    return 0
