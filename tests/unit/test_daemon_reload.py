"""A daemon reload that fails never kills the daemon (issue 13 part 1):
the old policy stays in force and the failure is exported."""

from __future__ import annotations

import os
import shutil

import pytest
from prometheus_client import generate_latest

from pycontain.app.daemon import Daemon, DaemonOptions
from pycontain.app.edges import Edges
from pycontain.app.policy_watch import PolicyWatch
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


def _tick_until(monkeypatch, d, pred, start: float) -> float:
    """Run daemon turns on a fake clock, 1 s apart, until pred() (at most 10)."""
    import pycontain.app.daemon as daemon_mod
    t = start
    for _ in range(10):
        t += 1.0
        monkeypatch.setattr(daemon_mod.time, "monotonic", lambda t=t: t)
        d._tick()
        if pred():
            return t
    raise AssertionError("the daemon did not reload")


def test_the_daemon_reloads_a_changed_file_on_its_own(tmp_path, monkeypatch):
    d, pol, p = make_daemon(tmp_path)
    d.opts.scan_interval = 1e9
    d._taken_over = True
    monkeypatch.setattr(d, "scan", lambda: None)
    try:
        pol.write_text("name: edited\nexec:\n  deny: [nc, xmrig]\n")
        os.utime(pol, ns=(1, 1))            # a different mtime even on a coarse clock
        _tick_until(monkeypatch, d, lambda: d.policy.name == "edited", 1000.0)
        assert "nc" in p.tables[-1].exec_names
    finally:
        d.session.close()


def test_a_configmap_symlink_swap_is_a_change(tmp_path, monkeypatch):
    """kubelet: policy.yaml -> ..data/policy.yaml, ..data -> ..2024_v1; an
    update writes ..2024_v2 and renames a new ..data symlink over the old."""
    cm = tmp_path / "cm"
    (cm / "..v1").mkdir(parents=True)
    (cm / "..v1/policy.yaml").write_text(GOOD)
    os.symlink("..v1", cm / "..data")
    os.symlink("..data/policy.yaml", cm / "policy.yaml")
    d, _pol, p = make_daemon(tmp_path)
    d.opts.policy_path = str(cm / "policy.yaml")
    d.watch = PolicyWatch(d.opts.policy_path, 3.0)
    d.opts.scan_interval = 1e9
    d._taken_over = True
    monkeypatch.setattr(d, "scan", lambda: None)
    try:
        (cm / "..v2").mkdir()
        (cm / "..v2/policy.yaml").write_text("name: swapped\nexec:\n  deny: [chisel]\n")
        os.symlink("..v2", cm / "..data_tmp")
        os.replace(cm / "..data_tmp", cm / "..data")
        shutil.rmtree(cm / "..v1")
        _tick_until(monkeypatch, d, lambda: d.policy.name == "swapped", 2000.0)
        assert "chisel" in p.tables[-1].exec_names
        # an invalid edit is rejected once and not retried until the next change
        (cm / "..v3").mkdir()
        (cm / "..v3/policy.yaml").write_text("name: bad\nexec: [\n")
        os.symlink("..v3", cm / "..data_tmp")
        os.replace(cm / "..data_tmp", cm / "..data")
        with pytest.raises(AssertionError):
            _tick_until(monkeypatch, d, lambda: d.policy.name != "swapped", 3000.0)
        assert (tmp_path / "audit.jsonl").read_text().count("policy-reload-rejected") == 1
    finally:
        d.session.close()
