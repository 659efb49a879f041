"""A real Prometheus server scrapes the exporter (both on loopback)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from pycontain.observe.metrics import start_metrics_server
from tests.conftest import skip_or_fail
from tests.unit.test_observability import hostile_state


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def query(port: int, q: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]


def test_prometheus_scrapes_the_exporter(tmp_path):
    prom = shutil.which("prometheus")
    if prom is None:
        skip_or_fail("prometheus not installed (scripts/install-test-tools.sh)")
    state = hostile_state()
    srv, _ = start_metrics_server(0, state)
    pport = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
                   f"scrape_configs:\n  - job_name: pycontain\n    static_configs:\n"
                   f"      - targets: ['127.0.0.1:{srv.port}']\n")
    p = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                          f"--web.listen-address=127.0.0.1:{pport}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        res = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                res = query(pport, 'pycontain_events_total{agent="trainer",kind="exec"}')
                if res:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert res and float(res[0]["value"][1]) == 7.0
        assert query(pport, 'up{job="pycontain"}')[0]["value"][1] == "1"
        state.events_total[("trainer", "exec")] += 5
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            v = float(query(pport, 'pycontain_events_total{kind="exec"}')[0]["value"][1])
            if v == 12.0:
                break
            time.sleep(0.5)
        assert v == 12.0
        gpu = query(pport, "pycontain_agent_gpu_sm_utilization_ratio")
        assert gpu[0]["metric"]["device"] == "0" and float(gpu[0]["value"][1]) == pytest.approx(0.95)
    finally:
        p.terminate()
        p.wait(10)
        srv.shutdown()
