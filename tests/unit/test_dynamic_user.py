"""Dynamic uids (issue 10 part 3): policy keys and the allocator's choices."""

from __future__ import annotations

import os

import pytest

from pycontain.actuate import dynamic_user as du
from pycontain.core.errors import EnvironmentProblem, PycontainError
from pycontain.core.policy import load_policy_text, policy_to_dict


def test_on_by_default_with_systemds_range():
    p = load_policy_text("name: x\n")
    assert p.privileges.dynamic_user is True
    assert p.privileges.dynamic_user_range == (61184, 65519)


def test_keys_relax_and_configure():
    p = load_policy_text("name: x\nprivileges:\n  dynamic_user: false\n  dynamic_user_range: 70000-70010\n")
    assert p.privileges.dynamic_user is False
    assert p.privileges.dynamic_user_range == (70000, 70010)
    back = load_policy_text(__import__("yaml").safe_dump(policy_to_dict(p)))
    assert back.privileges == p.privileges


@pytest.mark.parametrize("bad", ["0-100", "65519-61184", "abc", "5"])
def test_bad_range_names_file_line_and_key(bad):
    with pytest.raises(PycontainError) as e:
        load_policy_text(f"name: x\nprivileges:\n  dynamic_user_range: '{bad}'\n", "p.yaml")
    assert "p.yaml:3" in str(e.value) and "dynamic_user_range" in str(e.value)


def test_pick_skips_uids_in_use_named_or_leased(tmp_path, monkeypatch):
    monkeypatch.setattr(du, "_uids_in_use", lambda: {70000})
    monkeypatch.setattr(du, "_named", lambda uid: uid == 70001)
    (tmp_path / "70002").write_text(str(os.getpid()))          # a live lease
    (tmp_path / "70003").write_text("999999999")               # a stale one: its pid is gone
    picks = {uid for _ in range(20) for uid in du.DynamicUser._pick((70000, 70003), str(tmp_path))}
    assert picks == {70003}
    with pytest.raises(EnvironmentProblem) as e:       # two wanted, one free: none taken
        du.DynamicUser._pick((70000, 70003), str(tmp_path), 2)
    assert "for 2 agents" in str(e.value)


def test_pick_fails_closed_when_the_range_is_full(tmp_path, monkeypatch):
    monkeypatch.setattr(du, "_uids_in_use", lambda: {70000, 70001})
    monkeypatch.setattr(du, "_named", lambda uid: False)
    with pytest.raises(EnvironmentProblem) as e:
        du.DynamicUser._pick((70000, 70001), str(tmp_path))
    assert "70000-70001" in str(e.value)


def test_remove_owned_takes_only_the_uids_entries(tmp_path):
    me = os.getuid()
    (tmp_path / "mine").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_text("x")
    (tmp_path / "link").symlink_to("/etc/hostname")
    du.remove_owned(str(tmp_path), {me + 1, me + 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "link", "mine"]
    du.remove_owned(str(tmp_path), {me})
    assert list(tmp_path.iterdir()) == []
    assert os.path.exists("/etc/hostname")


def test_run_with_user_or_policy_off_takes_no_uid():
    p = load_policy_text("name: x\n").privileges
    assert du.dynamic_user("root", p) is None
    off = load_policy_text("name: x\nprivileges: {dynamic_user: false}\n").privileges
    assert du.dynamic_user(None, off) is None


# ---- policy check: where each selector is matched, which local services are open (issue 10) ----

def test_report_says_kernel_or_scan_per_selector_and_lists_local_services():
    from pycontain.core.kernel_rules import compile_report
    p = load_policy_text("name: t\nagents:\n  - {name: a, cgroup: 'rollout/*'}\n  - {name: b, command: 'python*'}\n"
                         "network:\n  local_services: ['127.0.0.1:8080', /run/model.sock, '@x', 'localhost:9']\n")
    lines = compile_report(p)
    assert any(ln.startswith("agents[0] a cgroup 'rollout/*': kernel") for ln in lines)
    assert any(ln.startswith("agents[1] b command 'python*': scan") for ln in lines)
    for entry in ("127.0.0.1:8080", "/run/model.sock", "@x", "localhost:9"):
        assert f"  {entry}" in lines
    off = load_policy_text("name: t\nnetwork: {local_services: any}\n")
    assert any("local_services any: off" in ln for ln in compile_report(off))


@pytest.mark.parametrize("bad", ["example.com:80", "127.0.0.1", "127.0.0.1:0", "[::1]:70000", "rel/path"])
def test_bad_local_service_names_file_line_and_key(bad):
    with pytest.raises(PycontainError) as e:
        load_policy_text(f"name: x\nnetwork:\n  local_services: ['{bad}']\n", "p.yaml")
    assert "p.yaml:3" in str(e.value) and "local_services" in str(e.value)


def test_local_service_rows_for_the_kernel():
    from pycontain.core.kernel_rules import compile_policy
    from pycontain.core.local_services import inet_entries, unix_entries
    p = load_policy_text("name: t\nnetwork:\n  local_services: ['localhost:8080', /run/m.sock, '@ab']\n")
    t = compile_policy(p)
    assert t.local_rule and t.rules[t.local_rule] == "network.local_services"
    rows = inet_entries(t.local_services, ["10.0.0.2", "::ffff:127.0.0.9"])
    assert (bytes([127, 0, 0, 1]) + bytes(12), 8080) in rows
    assert (bytes(15) + b"\x01", 8080) in rows
    assert (bytes([127, 0, 0, 53]) + bytes(12), 53) in rows and (bytes([127, 0, 0, 9]) + bytes(12), 53) in rows
    (plen, path), (alen, abstract) = unix_entries(t.local_services)
    assert plen == 0 and path.rstrip(b"\0") == b"/run/m.sock" and len(path) == 108
    assert alen == 3 and abstract[:3] == b"\0ab"
    off = compile_policy(load_policy_text("name: t\nnetwork: {local_services: any}\n"))
    assert not off.local_rule


def test_doctor_says_whether_the_unix_hook_exists(tmp_path):
    from pycontain.cli.doctor import check_unix_hook
    new, old = tmp_path / "new", tmp_path / "old"
    new.write_bytes(b"\0BPF_CGROUP_UNIX_CONNECT\0BPF_CGROUP_UNIX_SENDMSG\0")
    old.write_bytes(b"\0BPF_CGROUP_INET4_CONNECT\0")
    assert check_unix_hook(str(new)).status == "ok"
    c = check_unix_hook(str(old))
    assert c.status == "warn" and "dynamic uid" in c.why


def test_stale_leases_are_given_back_but_not_a_uid_still_running(tmp_path, monkeypatch):
    run_dir, homes = tmp_path / "run", tmp_path / "homes"
    (run_dir / "dynamic-users").mkdir(parents=True)
    dead = 2**22 + 4321                                   # above pid_max: no such process
    for uid, holder in ((70000, dead), (70001, os.getpid()), (70002, dead)):
        (run_dir / "dynamic-users" / str(uid)).write_text(str(holder))
        (homes / str(uid)).mkdir(parents=True)
    monkeypatch.setattr(du, "_uids_in_use", lambda: {70002})     # an agent of a killed daemon runs on
    assert du.DynamicUser.collect_stale(str(run_dir), str(homes)) == 1
    assert sorted(p.name for p in (run_dir / "dynamic-users").iterdir()) == ["70001", "70002"]
    assert sorted(p.name for p in homes.iterdir()) == ["70001", "70002"]

