"""Human (rich) or JSON Lines reporting of what pycontain does, on stderr.

stdout belongs to the agent: everything pycontain says goes to stderr.
Records arrive already escaped (pycontain.core.records); rich markup in them
is escaped again so an agent cannot style our output either.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from ..core.event_types import spec_of_kind

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_printer(verbose: int) -> Callable[[str], None]:
    def show(msg: str) -> None:
        if verbose or _err.is_terminal:
            _err.print(f"[dim]pycontain: {escape(msg)}…[/dim]")
    return show


def describe(rec: dict) -> str:
    """One readable line for an event, violation or action record."""
    kind = rec.get("kind")
    who = f"pid {rec.get('pid')}" if rec.get("pid") else ""
    spec = spec_of_kind(kind)
    if spec is not None and spec.describe is not None:
        return spec.describe(rec, who)
    if kind == "violation":
        return f"{rec.get('rule')}: {rec.get('reason')}"
    if kind == "action":
        return f"{rec.get('action')} → {rec.get('result')}"
    if kind == "gpu-use":
        util = f", SM {rec['sm_util']:.0f}%" if rec.get("sm_util") is not None else ""
        return (f"GPU {rec.get('device')} ({rec.get('uuid')}) used by {rec.get('filename')} {who}: "
                f"{rec.get('memory_bytes')} bytes{util}")
    return f"{kind} {who}"


class Reporter:
    def __init__(self, as_json: bool = False, verbose: int = 0, console: Console | None = None):
        self.as_json = as_json
        self.verbose = verbose
        self.console = console or _err

    def record(self, rec: dict) -> None:
        if self.as_json:
            print(json.dumps(rec, ensure_ascii=True, default=str), file=sys.stderr, flush=True)
            return
        kind = rec.get("kind")
        agent = escape(str(rec.get("agent", "")))
        text = escape(describe(rec))
        if kind == "violation":
            action = escape(str(rec.get("action")))
            result = str(rec.get("result") or "")
            if rec.get("monitor"):      # nothing was done: say what enforce mode would have done
                self.console.print(f"pycontain[{agent}] [yellow]MONITOR[/yellow] would {action}: {text}")
            elif result.endswith("already exited"):     # nothing was left to stop: never say it was
                self.console.print(f"pycontain[{agent}] [yellow]ALREADY EXITED[/yellow] {text} "
                                   f"[dim](no {action}: {escape(result.removeprefix('skipped: '))})[/dim]")
            elif result.startswith(("failed", "skipped")):
                self.console.print(f"pycontain[{agent}] [bold red]NOT STOPPED[/bold red] {text} "
                                   f"[dim]({action} {escape(result)})[/dim]")
            else:
                self.console.print(f"pycontain[{agent}] [bold red]STOPPED[/bold red] {text} "
                                   f"[dim](action: {action})[/dim]")
        elif kind == "notice":          # something the operator must know at start (e.g. GPU rules off)
            self.console.print(f"[yellow]pycontain: {escape(str(rec.get('message', '')))}[/yellow]")
        elif kind == "gpu-use":
            self.console.print(f"pycontain[{agent}] [cyan]GPU[/cyan] {text}")
        elif kind == "action":
            if self.verbose:
                self.console.print(f"pycontain[{agent}] [magenta]ACTION[/magenta] {text}")
        elif rec.get("verdict") in ("deny", "would-deny"):
            verdict = "DENIED" if rec.get("verdict") == "deny" else "would deny"
            rule = escape(str(rec.get("rule", "")))
            self.console.print(f"pycontain[{agent}] [red]{verdict}[/red] {text} [dim]({rule})[/dim]")
        elif self.verbose:
            self.console.print(f"pycontain[{agent}] {text}")

    def ready(self, name: str, policy, ctl, cgroup) -> None:
        if self.as_json:
            return
        ready = f"{ctl.started_ready_s:.2f}s" if ctl.started_ready_s is not None else "?"
        self.console.print(
            f"[dim]pycontain: agent {escape(name)} contained (policy {escape(policy.name)}, "
            f"mode {escape(str(policy.mode))}, cgroup {escape(cgroup.v2_path)}, probes ready in {ready})[/dim]")

    def finished(self, name: str, code: int) -> None:
        if not self.as_json:
            self.console.print(f"[dim]pycontain: agent {escape(name)} exited with status {code}[/dim]")

    def note(self, msg: str) -> None:
        if not self.as_json:
            self.console.print(f"[dim]pycontain: {escape(msg)}[/dim]")
