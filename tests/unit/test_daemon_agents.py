"""Agents are identified by cgroup (issue 13 part 3): a cgroup both adopted
and matched by a selector is one agent; release stops tracking it (in the
kernel's map, status and metrics) and says what it stopped."""

from __future__ import annotations

import pytest

from pycontain.app import daemon as daemon_mod
from tests.unit.test_daemon_reload import make_daemon


class FakeCgroup:
    def __init__(self, path):
        self.v2_path = path
        self.v1_paths: dict = {}

    def set_budgets(self, **kw):
        pass

    def sample(self):
        raise OSError("no cgroup files in a unit test")


@pytest.fixture
def rig(tmp_path, monkeypatch):
    root = tmp_path / "cg"
    (root / "jobs" / "job_1").mkdir(parents=True)
    monkeypatch.setattr(daemon_mod.Daemon, "_cgroup2_root", staticmethod(lambda: str(root)))
    monkeypatch.setattr(daemon_mod.AgentCgroup, "adopt", staticmethod(lambda path, name: FakeCgroup(path)))
    d, pol, probes = make_daemon(tmp_path)
    pol.write_text("name: slurm\nagents:\n  - {name: slurm, cgroup: 'jobs/*'}\n")
    assert d.reload()
    tracked: dict[str, int] = {}
    probes.track_cgroup = lambda path, aid: tracked.__setitem__(path, aid)
    probes.untrack_cgroup = lambda path: tracked.pop(path, None)
    yield d, root, tracked
    d.session.close()


def kernel_and_status(d, tracked):
    return sorted(tracked), sorted(a.cgroup for a in d.state.agents.values())


@pytest.mark.parametrize("order", ["adopt-then-scan", "scan-then-adopt"])
def test_adopted_and_selected_cgroup_is_one_agent(rig, order):
    d, root, tracked = rig
    job = str(root / "jobs" / "job_1")
    if order == "adopt-then-scan":
        assert d._adopt({"cgroup": job, "name": "job_1"})["agent"] == "job_1"
        d.scan()
        name = "job_1"
    else:
        d.scan()
        out = d._adopt({"cgroup": job, "name": "job_1"})
        assert out["already"] and out["agent"] == "slurm:job_1"
        name = "slurm:job_1"
    assert list(d.state.agents) == [name]
    assert kernel_and_status(d, tracked) == ([job], [job])

    # release by either name stops tracking the cgroup everywhere, for good
    other = "slurm:job_1" if name == "job_1" else "job_1"
    out = d._release({"name": other})
    assert out["ok"] and out["released"] == [{"agent": name, "cgroup": job, "names": sorted([name, other])}]
    d.scan()
    assert kernel_and_status(d, tracked) == ([], []) and d.state.agents == {}


def test_selector_names_are_stable_when_a_second_cgroup_matches(rig):
    d, root, tracked = rig
    d.scan()
    assert list(d.state.agents) == ["slurm:job_1"]
    (root / "jobs" / "job_2").mkdir()
    d.scan()
    assert sorted(d.state.agents) == ["slurm:job_1", "slurm:job_2"]
    assert tracked[str(root / "jobs" / "job_1")] == d.state.agents["slurm:job_1"].agent_id


def test_a_name_cannot_take_another_cgroup(rig):
    d, root, _tracked = rig
    (root / "other").mkdir()
    assert d._adopt({"cgroup": str(root / "jobs" / "job_1"), "name": "a"})["ok"]
    out = d._adopt({"cgroup": str(root / "other"), "name": "a"})
    assert not out["ok"] and "already names" in out["error"]


def test_adopted_agents_survive_a_restart(rig, tmp_path):
    d, root, _tracked = rig
    d.opts.socket_path = str(tmp_path / "pc.sock")
    d._adopt({"cgroup": str(root / "jobs" / "job_1"), "name": "job_1"})
    assert daemon_mod._load_adopted(d.opts.socket_path) == {"job_1": str(root / "jobs" / "job_1")}
