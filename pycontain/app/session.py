"""The runtime of `run`, `daemon` and `trace`, wired once.

A Session holds the live state, the audit log, the controller (probes,
actuator, GPU sampler through app/edges.py), the state API and metrics
servers, the signal handlers and the manual kill/freeze/thaw handlers. The
commands differ only in what they add: `run` creates and launches one agent,
`daemon` discovers and adopts agents and reloads on SIGHUP, `trace` observes
(no policy: monitor mode, empty deny tables).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from ..core.decisions import Action, Decision
from ..observe.audit import AuditLog
from ..observe.metrics import MetricsServer
from ..observe.state import NodeState
from ..observe.state_api import StateServer
from .controller import Controller
from .edges import Edges

log = logging.getLogger("pycontain")

MANUAL_ACTIONS = ("kill", "freeze", "thaw")


class Session:
    def __init__(self, policy, *, audit: AuditLog, report: Callable[[dict], None] | None = None,
                 progress: Callable[[str], None] | None = None, allow_no_gpu: bool = False,
                 trace_all: bool = False, edges: Edges | None = None, state: NodeState | None = None,
                 gpu_devices=None):
        self.edges = edges or Edges()
        self.state = state or NodeState()
        self.audit = audit
        self.ctl = Controller(policy, audit=audit, state=self.state, report=report, allow_no_gpu=allow_no_gpu,
                              progress=progress, trace_all=trace_all, edges=self.edges,
                              gpu_devices=gpu_devices)
        self.lock = threading.RLock()        # API threads vs the main loop
        self.server: StateServer | None = None      # edges.state_server(...)
        self.metrics: MetricsServer | None = None   # edges.metrics_server(...)[0]
        self._old_signals: dict = {}

    # ---- life cycle ---------------------------------------------------------

    def on_signals(self, handler, signals=(signal.SIGINT, signal.SIGTERM)) -> None:
        """Install ``handler`` for ``signals``; close() puts the old ones back."""
        for s in signals:
            old = signal.signal(s, handler)
            self._old_signals.setdefault(s, old)

    def start(self) -> None:
        self.ctl.start()

    def serve(self, *, socket_path: str | None = None, metrics_port: int | None = None,
              metrics_addr: str = "127.0.0.1", handlers: dict | None = None) -> None:
        """Start the state API (with the manual handlers plus ``handlers``) and
        the Prometheus exporter, each only when asked for."""
        if socket_path:
            server: StateServer = self.edges.state_server(self.state, socket_path, handlers=self.handlers(handlers))
            self.server = server
            server.start()
        if metrics_port:
            self.metrics, _ = self.edges.metrics_server(metrics_port, self.state, addr=metrics_addr)

    def stop_serving(self) -> None:
        for s, h in self._old_signals.items():
            signal.signal(s, h)
        self._old_signals.clear()
        if self.server:
            self.server.close()
            self.server = None
        if self.metrics:
            try:
                self.metrics.shutdown()
            except Exception:  # pragma: no cover - best effort at exit
                pass
            self.metrics = None

    def close(self) -> None:
        self.stop_serving()
        self.ctl.close()
        self.audit.close()

    def step(self, timeout_ms: int = 100) -> None:
        self.ctl.step(timeout_ms)

    def wait(self, timeout_ms: int) -> bool:
        """Wait for urgent ring records without draining (Probes.wait)."""
        return self.ctl.probes.wait(timeout_ms) if self.ctl.probes is not None else False

    # ---- API handlers (called from server threads) --------------------------

    def handlers(self, extra: dict | None = None) -> dict:
        out = {verb: self._manual(verb) for verb in MANUAL_ACTIONS}
        out.update(extra or {})
        return out

    def _manual(self, verb: str):
        def handler(name: str, body: dict | None = None) -> dict:
            with self.lock:
                if name not in self.ctl.cgroups:
                    return {"ok": False, "error": f"no agent {name!r}"}
                self.ctl.apply([Decision(agent=name, rule="manual", action=Action(verb),
                                         reason=f"manual {verb} via API")])
            return {"ok": True, "agent": name, "action": verb}
        return handler
