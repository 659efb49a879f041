"""CLI behaviour that needs no root: exit codes and one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from pycontain.app.run_options import exit_status
from pycontain.app.runner import check_name, resolve_cmd
from pycontain.core.errors import CommandNotFound, UsageError

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]


def cli(*args):
    return subprocess.run(PYCONTAIN + list(args), capture_output=True, text=True, timeout=60)


def test_exit_status_convention():
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGKILL) == 137


@pytest.mark.parametrize("name", ["", "A", "-x", "a" * 33, "a b", "x\x1b"])
def test_bad_agent_names_rejected(name):
    with pytest.raises(UsageError):
        check_name(name)


def test_good_agent_name():
    check_name("trainer-01.a_b")


def test_resolve_cmd_not_found():
    with pytest.raises(CommandNotFound) as e:
        resolve_cmd(["definitely-not-a-command-xyz"])
    assert e.value.exit_code == 127


def test_run_missing_command_exits_127_before_anything_loads():
    r = cli("run", "--", "/nonexistent/bin/agent")
    assert r.returncode == 127
    assert r.stderr.startswith("error: /nonexistent/bin/agent: command not found")
    assert "Traceback" not in r.stderr


def test_policy_error_is_one_line_exit_2(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: t\nnetwork:\n  deny:\n    - cidr: 10.0.0.0/33\n")
    r = cli("policy", "check", str(p))
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"error: {p}:4") and "network.deny[0].cidr" in first
    assert "Traceback" not in r.stderr


def test_verbose_adds_traceback(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: [unclosed\n")
    r = cli("-v", "policy", "check", str(p))
    assert r.returncode == 2 and "Traceback" in r.stderr and f"{p}:" in r.stderr


def test_unreadable_policy(tmp_path):
    r = cli("policy", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml" in r.stderr.splitlines()[0]


def test_usage_error_exit_2():
    assert cli("run").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_policy_show_and_check_json_agree_with_yaml(tmp_path):
    import json as _json

    import yaml
    y = cli("policy", "show", "--builtin", "strict")
    j = cli("policy", "show", "--builtin", "strict", "--json")
    assert y.returncode == 0 and j.returncode == 0
    assert yaml.safe_load(y.stdout) == _json.loads(j.stdout)
    p = tmp_path / "shown.yaml"
    p.write_text(y.stdout)              # what show prints loads back
    c = cli("policy", "check", str(p), "--json")
    rep = _json.loads(c.stdout)
    assert c.returncode == 0 and rep["ok"] and rep["policy"] == "strict"
    assert any("kernel" in line for line in rep["enforcement"])
