import os

from pycontain.actuate.discovery import find_agents


def _tree(root, *paths):
    for p in paths:
        os.makedirs(os.path.join(root, p), exist_ok=True)


def test_cgroup_glob_and_unit_selectors(tmp_path):
    root = str(tmp_path)
    _tree(root, "system.slice/slurmstepd.scope/job_1/step_0", "system.slice/slurmstepd.scope/job_2",
          "system.slice/agent-a.service", "system.slice/other.service", "user.slice")
    sels = [{"name": "slurm", "cgroup": "system.slice/slurmstepd.scope/job_*"},
            {"name": "svc", "systemd_unit": "agent-*.service"}]
    found = {m.name: os.path.relpath(m.path, root) for m in find_agents(sels, root, proc_root=root)}
    assert found == {
        "slurm:job_1": "system.slice/slurmstepd.scope/job_1",
        "slurm:job_2": "system.slice/slurmstepd.scope/job_2",
        "svc:agent-a.service": "system.slice/agent-a.service",
    }


def test_a_name_does_not_change_when_a_second_cgroup_matches(tmp_path):
    root = str(tmp_path)
    sels = [{"name": "ux", "cgroup": "jobs/*"}]
    _tree(root, "jobs/job_1")
    first = [m.name for m in find_agents(sels, root, proc_root=root)]
    _tree(root, "jobs/job_2")
    assert first == ["ux:job_1"]
    assert [m.name for m in find_agents(sels, root, proc_root=root)] == ["ux:job_1", "ux:job_2"]


def test_own_cgroup_excluded_and_descendants_folded(tmp_path):
    root = str(tmp_path)
    _tree(root, "a/b/c", "mine/x", "other/me")
    sels = [{"name": "all", "cgroup": "*"}]
    found = find_agents(sels, root, proc_root=root,
                        exclude={os.path.join(root, "mine"), os.path.join(root, "other/me")})
    # "mine" and "other" hold pycontain; "mine/x" below it is an agent like any other
    assert [os.path.relpath(m.path, root) for m in found] == ["a", "mine/x"]
    # pycontain in the root cgroup: everything below may still be an agent
    found = find_agents([{"name": "x", "cgroup": "a/b"}], root, proc_root=root, exclude={root})
    assert [os.path.relpath(m.path, root) for m in found] == ["a/b"]
