"""`pycontain top` and `pycontain status`: the daemon's agents at a glance.

Everything shown that an agent could have influenced (connections' comm,
violation reasons) is escaped twice: control characters by safe_text, rich
markup by rich.markup.escape.
"""

from __future__ import annotations

import json
import time

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core.errors import PycontainError
from ..core.text import safe_text


def _s(v, limit: int = 80) -> str:
    return escape(safe_text(str(v) if v is not None else "", limit))


def _bytes(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def render(snap: dict, cpu_rates: dict[str, float] | None = None):
    cpu_rates = cpu_rates or {}
    head = Text.from_markup(
        f"[bold]pycontain[/bold]  policy [cyan]{_s(snap.get('policy'))}[/cyan]  mode {_s(snap.get('mode'))}  "
        f"agents {len(snap.get('agents', []))}  lost events kernel {snap.get('lost_events', {}).get('kernel', 0)} "
        f"/ user {snap.get('lost_events', {}).get('user', 0)}  GPU {_s(snap.get('gpu', {}).get('status'))}")
    t = Table(title="agents", expand=True)
    for c in ("agent", "pids", "cpu", "memory", "gpu", "state", "events"):
        t.add_column(c)
    recent = Table(title="recent violations", expand=True)
    for c in ("agent", "rule", "action", "result", "reason"):
        recent.add_column(c)
    conns = Table(title="recent connections", expand=True)
    for c in ("agent", "pid", "proto", "destination", "verdict"):
        conns.add_column(c)
    for a in snap.get("agents", []):
        name = _s(a["name"], 40)
        rate = cpu_rates.get(a["name"])
        cpu = f"{rate:.2f}" if rate is not None else f"{a['cpu_usage_seconds']:.1f}s"
        if a.get("cpu_limit_cores"):
            cpu += f" / {a['cpu_limit_cores']:g} cores"
        mem = _bytes(a.get("memory_bytes"))
        if a.get("memory_limit_bytes"):
            mem += f" / {_bytes(a['memory_limit_bytes'])}"
        gpu = ", ".join(f"GPU{g['device']}: {_bytes(g['memory_bytes'])}"
                        + (f" {g['sm_util']:.0f}%" if g.get("sm_util") is not None else "")
                        for g in a.get("gpu", [])) or "-"
        st = ("[blue]frozen[/blue]" if a.get("frozen")
              else "[yellow]throttled[/yellow]" if a.get("throttled") else "running")
        evs = " ".join(f"{_s(k, 12)}={v}" for k, v in sorted(a.get("events", {}).items()))
        t.add_row(name, str(a.get("pids", 0)), cpu, mem, gpu, st, evs or "-")
        for v in list(a.get("violations", []))[-5:]:
            recent.add_row(name, _s(v.get("rule"), 40), _s(v.get("action"), 20), _s(v.get("result"), 30),
                           _s(v.get("reason"), 100))
        for c in list(a.get("connections", []))[-5:]:
            conns.add_row(name, _s(c.get("pid"), 10), _s(c.get("protocol"), 5),
                          f"{_s(c.get('daddr'), 45)}:{_s(c.get('dport'), 6)}", _s(c.get("verdict"), 12))
    probes = " ".join(f"{_s(k, 30)}={'ok' if str(v).startswith('attached') else _s(v, 40)}"
                      for k, v in sorted(snap.get("probes", {}).items()))
    return Group(head, t, recent, conns, Text.from_markup(f"[dim]probes: {probes or '-'}[/dim]"))


def status_json(client) -> str:
    return json.dumps(client.state(), indent=2, ensure_ascii=True, default=str)


def top_frames(client, interval: float = 1.0):
    """The function that renders one frame of `top`. The first request's
    error is raised (a wrong --socket is an error line); later ones, while a
    daemon restarts, show a notice and are retried every frame: the state API
    client opens a new connection per request, so the new daemon is found."""
    prev: dict[str, tuple[float, float]] = {}
    seen = {"ok": False}

    def frame():
        try:
            snap = client.state()
        except PycontainError as e:
            if not seen["ok"]:
                raise
            prev.clear()
            return Text.from_markup(f"[yellow]pycontain daemon not reachable ({escape(e.message)}); "
                                    f"retrying every {interval:g}s…[/yellow]")
        seen["ok"] = True
        now = time.monotonic()
        rates = {}
        for a in snap.get("agents", []):
            p = prev.get(a["name"])
            if p and now > p[0]:
                rates[a["name"]] = max(0.0, (a["cpu_usage_seconds"] - p[1]) / (now - p[0]))
            prev[a["name"]] = (now, a["cpu_usage_seconds"])
        return render(snap, rates)
    return frame


def run_top(client, interval: float = 1.0) -> None:
    frame = top_frames(client, interval)
    with Live(frame(), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(frame())
        except KeyboardInterrupt:
            pass
