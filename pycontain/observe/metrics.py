"""Prometheus exporter.

A custom collector builds fresh values from the live NodeState on every
scrape (client_python's recommended pattern for proxied state); the registry
and /proc root are injected, nothing is global. Label values are bounded:
agent names (from the policy/CLI), rule ids, action names, device indices and
hook names. Nothing agent-supplied (argv, comm, paths, pids) is ever a label.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from .. import __version__
from .state import NodeState


class PycontainCollector:
    def __init__(self, state: NodeState, proc_root: str = "/proc", build_info: dict | None = None):
        self.state = state
        self.proc_root = proc_root
        self.build_info = build_info or {
            "version": __version__, "python": platform.python_version(), "kernel": platform.release()}

    def describe(self):
        return []     # fresh families each scrape; no registration-time collect

    def collect(self):
        s = self.state.snapshot()
        yield InfoMetricFamily("pycontain_build", "pycontain build information", value=self.build_info)

        ev = CounterMetricFamily("pycontain_events", "Kernel events received, by agent and kind",
                                 labels=["agent", "kind"])
        for t in s["totals"]["events"]:
            ev.add_metric([t["agent"], t["kind"]], t["count"])
        yield ev
        vi = CounterMetricFamily("pycontain_violations", "Policy violations, by agent and rule",
                                 labels=["agent", "rule"])
        for t in s["totals"]["violations"]:
            vi.add_metric([t["agent"], t["rule"]], t["count"])
        yield vi
        ac = CounterMetricFamily("pycontain_actions", "Actions carried out, by agent and action",
                                 labels=["agent", "action"])
        for t in s["totals"]["actions"]:
            ac.add_metric([t["agent"], t["action"]], t["count"])
        yield ac

        lost = CounterMetricFamily("pycontain_events_lost", "Events lost, by where they were lost", labels=["where"])
        lost.add_metric(["kernel"], s["lost_events"]["kernel"])
        lost.add_metric(["userspace"], s["lost_events"]["user"])
        lost.add_metric(["handler"], s["handler_errors"])
        yield lost
        yield from _loss_families(s)

        hooks = GaugeMetricFamily("pycontain_probe_attached", "1 if the hook is attached, 0 if not", labels=["hook"])
        for hook, status in sorted(s["probes"].items()):
            hooks.add_metric([hook], 1.0 if str(status).startswith("attached") else 0.0)
        yield hooks
        needed = set(s.get("probes_needed", ()))
        req = GaugeMetricFamily("pycontain_probe_required",
                                "1 if the policy in force needs the hook (an unattached needed hook is an alert)",
                                labels=["hook"])
        for hook in sorted(s["probes"]):
            req.add_metric([hook], 1.0 if hook in needed else 0.0)
        yield req
        yield GaugeMetricFamily("pycontain_gpu_available", "1 if NVML is usable",
                                value=1.0 if s["gpu"]["available"] else 0.0)
        yield CounterMetricFamily("pycontain_gpu_unattributed_processes",
                                  "GPU process readings of pids gone from /proc that no process record names",
                                  value=s["gpu"].get("unattributed", 0))
        yield GaugeMetricFamily("pycontain_config_last_reload_successful",
                                "1 if the last policy load or reload succeeded (the policy in force is the newest)",
                                value=1.0 if s["reload"]["ok"] else 0.0)
        yield GaugeMetricFamily("pycontain_config_last_reload_success_timestamp_seconds",
                                "When the policy in force was loaded (Unix time)", value=s["reload"]["success_ts"])
        yield GaugeMetricFamily("pycontain_agents", "Agents currently contained", value=len(s["agents"]))

        cpu = CounterMetricFamily("pycontain_agent_cpu_seconds", "CPU time used by the agent's cgroup",
                                  labels=["agent"])
        cpu_lim = GaugeMetricFamily("pycontain_agent_cpu_limit_cores", "CPU allowance of the agent (cores)",
                                    labels=["agent"])
        mem = GaugeMetricFamily("pycontain_agent_memory_bytes", "Memory used by the agent's cgroup", labels=["agent"])
        mem_lim = GaugeMetricFamily("pycontain_agent_memory_limit_bytes", "Memory limit of the agent", labels=["agent"])
        pids = GaugeMetricFamily("pycontain_agent_pids", "Processes in the agent's cgroup", labels=["agent"])
        frozen = GaugeMetricFamily("pycontain_agent_frozen", "1 while the agent is frozen", labels=["agent"])
        thr = GaugeMetricFamily("pycontain_agent_throttled", "1 while the agent is throttled", labels=["agent"])
        gmem = GaugeMetricFamily("pycontain_agent_gpu_memory_bytes", "GPU memory used by the agent",
                                 labels=["agent", "device"])
        gutil = GaugeMetricFamily("pycontain_agent_gpu_sm_utilization_ratio",
                                  "SM utilisation of the agent's processes (0-1)", labels=["agent", "device"])
        for a in s["agents"]:
            n = a["name"]
            cpu.add_metric([n], a["cpu_usage_seconds"])
            if a["cpu_limit_cores"] is not None:
                cpu_lim.add_metric([n], a["cpu_limit_cores"])
            mem.add_metric([n], a["memory_bytes"])
            if a["memory_limit_bytes"] is not None:
                mem_lim.add_metric([n], a["memory_limit_bytes"])
            pids.add_metric([n], a["pids"])
            frozen.add_metric([n], 1.0 if a["frozen"] else 0.0)
            thr.add_metric([n], 1.0 if a["throttled"] else 0.0)
            for g in a["gpu"]:
                dev = str(int(g["device"]))
                gmem.add_metric([n, dev], g["memory_bytes"])
                if g.get("sm_util") is not None:
                    gutil.add_metric([n, dev], g["sm_util"] / 100.0)
        yield from (cpu, cpu_lim, mem, mem_lim, pids, frozen, thr, gmem, gutil)


def _loss_families(s: dict):
    """Per-agent loss (issue 10 part 5): records the kernel lost and the
    freezes they caused (app/loss.py)."""
    lost = CounterMetricFamily("pycontain_agent_events_lost", "Records of the agent the kernel could not queue",
                               labels=["agent"])
    for name, n in sorted(s.get("lost_by_agent", {}).items()):
        lost.add_metric([name], n)
    fr = CounterMetricFamily("pycontain_agent_loss_freezes", "Freezes of the agent after lost records",
                             labels=["agent"])
    for name, n in sorted(s.get("loss_freezes", {}).items()):
        fr.add_metric([name], n)
    yield from (lost, fr)


def make_registry(state: NodeState, proc_root: str = "/proc", build_info: dict | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PycontainCollector(state, proc_root, build_info))
    ProcessCollector(namespace="pycontain", pid=lambda: "self", proc=proc_root, registry=reg)
    return reg


class MetricsServer:
    """client_python's own HTTP server (start_http_server), stoppable."""

    def __init__(self, httpd, thread):
        self.httpd = httpd
        self.thread = thread
        self.port = httpd.server_port

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics_server(port: int, state: NodeState, addr: str = "127.0.0.1",
                         registry: CollectorRegistry | None = None) -> tuple[MetricsServer, CollectorRegistry]:
    registry = registry or make_registry(state)
    httpd, thread = start_http_server(port, addr, registry=registry)
    return MetricsServer(httpd, thread), registry
