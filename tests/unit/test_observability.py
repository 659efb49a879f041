"""Metrics, the state API and the live view, against a real NodeState."""

from __future__ import annotations

import io
import json
import os
import stat
import urllib.request

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from pycontain.core.errors import EnvironmentProblem
from pycontain.observe.metrics import make_registry, start_metrics_server
from pycontain.observe.state import AgentState, GpuUse, NodeState
from pycontain.observe.state_api import ApiError, StateClient, StateServer
from pycontain.observe.top import render

HOSTILE = "\x1b[2J/tmp/evil\x07 --wallet 4Ad"


def hostile_state() -> NodeState:
    s = NodeState(policy_name="p", mode="enforce")
    a = AgentState(name="trainer", cgroup="/sys/fs/cgroup/x", agent_id=1, pids=3, cpu_usage_seconds=12.5,
                   cpu_limit_cores=2.0, memory_bytes=1 << 30, memory_limit_bytes=2 << 30)
    a.gpu.append(GpuUse(device=0, uuid="GPU-1", memory_bytes=5 << 30, sm_util=95.0))
    a.connections.append({"ts": 1, "protocol": "tcp", "daddr": "198.51.100.2", "dport": 3333, "verdict": "deny",
                          "pid": 4242, "comm": HOSTILE})
    a.violations.append({"ts": 1, "rule": "exec.deny[0]", "action": "deny", "reason": f"exec {HOSTILE}",
                         "pid": 4242, "monitor": False, "result": None})
    s.agents["trainer"] = a
    s.events_total[("trainer", "exec")] += 7
    s.violations_total[("trainer", "exec.deny[0]")] += 1
    s.actions_total[("trainer", "kill")] += 1
    s.lost_kernel, s.lost_user = 2, 1
    s.probes = {"exec": "attached", "lsm": "unavailable: EPERM"}
    return s


def test_metrics_values_and_no_agent_supplied_labels():
    text = generate_latest(make_registry(hostile_state())).decode()
    assert 'pycontain_events_total{agent="trainer",kind="exec"} 7.0' in text
    assert 'pycontain_violations_total{agent="trainer",rule="exec.deny[0]"} 1.0' in text
    assert 'pycontain_actions_total{action="kill",agent="trainer"} 1.0' in text
    assert 'pycontain_events_lost_total{where="kernel"} 2.0' in text
    assert 'pycontain_agent_gpu_memory_bytes{agent="trainer",device="0"} 5.36870912e+09' in text
    assert 'pycontain_agent_gpu_sm_utilization_ratio{agent="trainer",device="0"} 0.95' in text
    assert 'pycontain_probe_attached{hook="lsm"} 0.0' in text
    assert "pycontain_process_resident_memory_bytes" in text
    for bad in ("evil", "4242", "wallet", "\x1b", "/sys/fs/cgroup", "198.51.100.2"):
        assert bad not in text


def test_metrics_are_fresh_on_each_scrape():
    s = hostile_state()
    reg = make_registry(s)
    s.events_total[("trainer", "exec")] += 1
    assert 'kind="exec"} 8.0' in generate_latest(reg).decode()


def test_metrics_http_server():
    srv, _ = start_metrics_server(0, hostile_state())
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5).read().decode()
        assert "pycontain_agents 1.0" in body
    finally:
        srv.shutdown()


def test_state_api_roundtrip_and_permissions(tmp_path):
    calls = []
    handlers = {"kill": lambda name, body: calls.append(("kill", name)) or {"ok": True},
                "adopt": lambda body: {"ok": False, "error": "no cgroup"}}
    path = str(tmp_path / "api" / "pc.sock")
    srv = StateServer(hostile_state(), path, handlers)
    srv.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        c = StateClient(path)
        snap = c.state()
        assert snap["agents"][0]["name"] == "trainer" and snap["lost_events"] == {"kernel": 2, "user": 1}
        assert c.post("/v1/agents/trainer/kill", {}) == {"ok": True} and calls == [("kill", "trainer")]
        with pytest.raises(ApiError, match="no cgroup"):
            c.post("/v1/adopt", {"cgroup": "x", "name": "y"})
        with pytest.raises(ApiError):
            c.post("/v1/agents/trainer/explode", {})
    finally:
        srv.close()
    assert not os.path.exists(path)
    with pytest.raises(EnvironmentProblem, match="no pycontain daemon"):
        StateClient(path).state()


def test_top_escapes_agent_strings():
    snap = json.loads(json.dumps(hostile_state().snapshot(), default=str))
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False, color_system=None).print(render(snap))
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out and "trainer" in out and "GPU0" in out
