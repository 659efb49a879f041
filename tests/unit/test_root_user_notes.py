"""What pycontain says about agents that share a uid with things outside
them: `run --user root` warns that root keeps the node's files and the
daemon within reach (not refused), and `doctor` says whether Yama keeps a
named user's agent from writing that user's other processes' memory."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pycontain.cli.main import cli


@pytest.fixture
def ran(monkeypatch):
    """`pycontain run` with the agent start replaced: the users it was asked for."""
    import pycontain.app.runner as runner
    users: list = []
    monkeypatch.setattr(runner, "run_agent", lambda cmd, opts: users.append(opts.user) or 0)
    return users


def run(*args: str):
    return CliRunner().invoke(cli, ["run", *args, "--", "true"])


@pytest.mark.parametrize("user", ["root", "0"])
def test_run_as_root_warns_in_one_line_and_still_runs(ran, user):
    r = run("--user", user)
    assert r.exit_code == 0 and ran == [user]
    lines = [x for x in r.stderr.splitlines() if "no boundary" in x]
    assert len(lines) == 1 and "kill the daemon" in lines[0] and "dynamic uid" in lines[0], r.stderr


def test_json_runs_get_the_warning_as_a_json_notice(ran):
    r = run("--json", "--user", "root")
    notes = [json.loads(x) for x in r.stderr.splitlines()]
    assert [n["kind"] for n in notes] == ["notice"] and "no boundary" in notes[0]["message"]


@pytest.mark.parametrize("args", [(), ("--user", "nobody"), ("--user", "no-such-user-here")])
def test_other_users_get_no_warning(ran, args):
    assert "no boundary" not in run(*args).stderr


def test_doctor_warns_without_yama_or_at_scope_0(tmp_path):
    from pycontain.cli.doctor import check_ptrace_scope
    scope = tmp_path / "ptrace_scope"
    c = check_ptrace_scope(str(tmp_path / "absent"))
    assert c.status == "warn" and "Yama absent" in c.detail
    assert "/proc/PID/mem" in c.why and "dynamic uids" in c.why and not c.required
    scope.write_text("0\n")
    assert check_ptrace_scope(str(scope)).status == "warn"
    scope.write_text("1\n")
    c = check_ptrace_scope(str(scope))
    assert c.status == "ok" and "= 1" in c.detail
