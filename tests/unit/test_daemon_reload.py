"""A daemon reload that fails never kills the daemon (issue 13 part 1):
the old policy stays in force and the failure is exported."""

from __future__ import annotations

from prometheus_client import generate_latest

from pycontain.app.daemon import Daemon, DaemonOptions
from pycontain.app.edges import Edges
from pycontain.kernel.loader import Probes
from pycontain.observe.metrics import make_registry

GOOD = "name: good\nexec:\n  deny: [xmrig]\n"


class KernelProbes(Probes):
    """No BPF: set_tables keeps the tables, or fails as the kernel would."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.tables: list = []
        self.fail_next = False

    def load(self):
        pass

    def set_tables(self, tables):
        if self.fail_next:
            self.fail_next = False
            raise OSError(7, "Could not update table: Argument list too long")
        self.tables.append(tables)

    def track_cgroup(self, path, agent_id):
        pass

    def untrack_cgroup(self, path):
        pass

    def hook_status(self):
        return {}

    def lost_kernel(self):
        return 0

    def poll(self, timeout_ms=100):
        return 0

    def close(self):
        pass


def make_daemon(tmp_path):
    pol = tmp_path / "policy.yaml"
    pol.write_text(GOOD)
    ref: dict = {}

    def probes(**kw):
        ref["p"] = KernelProbes(**kw)
        return ref["p"]
    edges = Edges(probes=probes, actuator=lambda cgroups, **_: None, nvml=None, lookup=lambda host: [])
    d = Daemon(DaemonOptions(policy_path=str(pol), audit_log=str(tmp_path / "audit.jsonl"),
                             socket_path=str(tmp_path / "pc.sock")), edges=edges)
    d.session.start()
    return d, pol, ref["p"]


def metric(d, name: str) -> float:
    for line in generate_latest(make_registry(d.state)).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_oversized_reload_keeps_the_old_policy(tmp_path):
    d, pol, p = make_daemon(tmp_path)
    try:
        pol.write_text("name: big\nexec:\n  deny:\n" + "".join(f"    - prog{i}\n" for i in range(1100)))
        assert d.reload() is False
        assert d.policy.name == "good" and d.ctl.engine.policy.name == "good"
        assert "xmrig" in p.tables[-1].exec_names
        assert metric(d, "pycontain_config_last_reload_successful") == 0.0
        rejected = (tmp_path / "audit.jsonl").read_text()
        assert "policy-reload-rejected" in rejected and "pc_exec_names" in rejected
    finally:
        d.session.close()


def test_a_kernel_write_failure_on_reload_is_not_fatal(tmp_path):
    d, pol, p = make_daemon(tmp_path)
    try:
        before = metric(d, "pycontain_config_last_reload_success_timestamp_seconds")
        pol.write_text("name: other\nexec:\n  deny: [nc]\n")
        p.fail_next = True
        assert d.reload() is False
        assert d.policy.name == "good" and metric(d, "pycontain_config_last_reload_successful") == 0.0
        assert d.reload() is True
        assert d.policy.name == "other" and metric(d, "pycontain_config_last_reload_successful") == 1.0
        assert metric(d, "pycontain_config_last_reload_success_timestamp_seconds") >= before
    finally:
        d.session.close()
