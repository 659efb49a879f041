"""`pycontain trace`: stream events of tracked agents, or the whole host.

It runs its own session (app/session.py) without a policy: its probes are in
monitor mode with empty deny tables, so it never changes what is enforced; it
only observes. Agent cgroups come from --cgroup or from a running daemon's
state API.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..app.edges import Edges
from ..app.session import Session
from ..core.errors import EnvironmentProblem, UsageError
from ..observe.audit import AuditLog
from ..observe.report import describe
from ..observe.state_api import StateClient

COLUMNS = (("time", 12), ("agent", 14), ("kind", 9), ("pid", 7), ("comm", 16), ("verdict", 10), ("detail", None))


def _detail(rec: dict) -> str:
    text = describe(rec)
    if rec.get("rule"):
        text += f"  ({rec['rule']})"
    return text


def _row_table() -> Table:
    t = Table(box=None, show_header=False, pad_edge=False)
    for name, width in COLUMNS:
        t.add_column(name, width=width, no_wrap=width is not None, overflow="ellipsis" if width else "fold")
    return t


@dataclass(frozen=True)
class TraceFilter:
    """--kind, --pid, --program: a record passes when it matches every given
    filter (each filter: any of its values). --program is a glob on the
    program's name (comm) or the basename of the file it ran."""
    kinds: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    programs: tuple[str, ...] = ()

    def wants(self, rec: dict) -> bool:
        if self.kinds and rec.get("kind") not in self.kinds:
            return False
        if self.pids and rec.get("pid") not in self.pids:
            return False
        if self.programs:
            names = [str(rec.get("comm", "")), os.path.basename(str(rec.get("filename", "")))]
            return any(fnmatch.fnmatchcase(n, g) for n in names if n for g in self.programs)
        return True


def plain_row(rec: dict) -> str:
    """Every column, tab-separated, never cut: for pipes and files (a table
    there would be squeezed to 80 columns and lose the detail)."""
    ts = rec.get("ts", 0)
    cells = [time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}",
             str(rec.get("agent", "")), str(rec.get("kind", "")), str(rec.get("pid", "")),
             str(rec.get("comm", "")), str(rec.get("verdict", "")), _detail(rec)]
    return "\t".join(c.replace("\t", " ") for c in cells)


def print_row(console: Console, rec: dict) -> None:
    t = _row_table()
    verdict = rec.get("verdict", "")
    style = {"deny": "red", "would-deny": "yellow"}.get(verdict, "")
    ts = rec.get("ts", 0)
    t.add_row(time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}",
              escape(str(rec.get("agent", ""))), escape(str(rec.get("kind", ""))), str(rec.get("pid", "")),
              escape(str(rec.get("comm", ""))), f"[{style}]{verdict}[/]" if style else verdict,
              escape(_detail(rec)))
    console.print(t)


def _agent_cgroups(cgroups: list[str], socket_path: str | None, all_host: bool) -> list[tuple[str, str]]:
    """The cgroups to name: --cgroup, else the running daemon's agents. With
    --all a daemon that does not answer (a socket left by a crashed one) only
    costs the names: the whole host is traced anyway."""
    if cgroups:
        return [(os.path.basename(c.rstrip("/")) or "cgroup", c) for c in cgroups]
    path = socket_path or "/run/pycontain/pycontain.sock"
    if not os.path.exists(path):
        return []
    try:
        snap = StateClient(path).state()
    except EnvironmentProblem:
        if all_host:
            return []
        raise
    return [(a["name"], a["cgroup"]) for a in snap.get("agents", [])]


@dataclass
class TracedCgroup:
    """A cgroup trace only watches: no budgets, no actions."""
    v2_path: str
    v1_paths: dict = field(default_factory=dict)


def run_trace(*, all_host: bool, cgroups: list[str], socket_path: str | None, as_json: bool,
              duration: float | None, edges: Edges | None = None, only: TraceFilter | None = None) -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem("pycontain trace needs root (it loads BPF programs)")
    targets = _agent_cgroups(cgroups, socket_path, all_host)
    if not targets and not all_host:
        raise UsageError("nothing to trace: no running daemon with agents, and no --cgroup",
                         "use --all for the whole host, --cgroup DIR, or start `pycontain daemon`")
    for _, c in targets:
        if not os.path.isdir(c):
            raise UsageError(f"--cgroup {c}: no such cgroup directory")

    console = Console(highlight=False, soft_wrap=True)
    out = sys.stdout
    table = not as_json and out.isatty()
    only = only or TraceFilter()

    def emit(rec):
        if not only.wants(rec):
            return
        if as_json:
            out.write(json.dumps(rec, ensure_ascii=True) + "\n")
        elif table:
            print_row(console, rec)
            return
        else:
            out.write(plain_row(rec) + "\n")
        out.flush()

    edges = edges or Edges()
    if not targets:
        edges = replace(edges, nvml=None)     # GPU use is attributed to traced cgroups only
    # no policy: monitor mode, empty deny tables, every event reported
    session = Session(None, audit=AuditLog(), report=emit, trace_all=all_host, edges=edges)
    stop = {"now": False}
    session.on_signals(lambda *_: stop.__setitem__("now", True))
    ctl = session.ctl
    try:
        session.start()
        for name, path in targets:
            ctl.add_agent(name, TracedCgroup(path), apply_budgets=False)
        if not as_json and not table:
            out.write("\t".join(n for n, _ in COLUMNS) + "\n")
        elif table:
            hdr = _row_table()
            hdr.add_row(*[f"[bold]{n}[/bold]" for n, _ in COLUMNS])
            console.print(hdr)
        end = time.monotonic() + duration if duration else None
        while not stop["now"] and (end is None or time.monotonic() < end):
            ctl.step(100)
        ctl.drain()
        probes = ctl.probes
        assert probes is not None       # session.start() loaded them
        lost, user = probes.lost_kernel(), probes.user_lost
        if lost or user:
            print(f"pycontain trace: {lost} event(s) lost in the kernel, {user} in user space", file=sys.stderr)
    finally:
        session.close()
    return 0


# records trace prints besides the kernel's event kinds
OTHER_KINDS = ("violation", "action", "gpu-use", "agent-start", "agent-stop", "notice")


def check_kinds(kinds) -> tuple[str, ...]:
    """--kind values, each a record kind trace can print (one error line otherwise)."""
    from ..core.event_types import BY_KIND
    known = sorted(BY_KIND) + list(OTHER_KINDS)
    for k in kinds:
        if k not in known:
            raise UsageError(f"--kind {k!r} is not a record kind", "kinds: " + ", ".join(known))
    return tuple(kinds)
