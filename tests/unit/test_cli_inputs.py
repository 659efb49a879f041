"""A CLI that scripts cleanly (issue 13 part 6): every bad input is one
`error:` line plus a hint, before any compile, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from pycontain.cli.main import _verbosity
from pycontain.core.errors import PolicyError
from pycontain.core.policy import load_policy, load_policy_text

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]


def cli(*args, stdin=None):
    return subprocess.run(PYCONTAIN + list(args), capture_output=True, text=True, timeout=60, input=stdin)


def one_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: "))


@pytest.mark.parametrize("args,words", [
    (["run", "--audit-log", "/proc/nonexistent/audit.jsonl", "--", "true"], ["--audit-log"]),
    (["run", "--metrics-port", "70000", "--", "true"], ["--metrics-port"]),
    (["run", "--metrics-port", "http", "--", "true"], ["--metrics-port"]),
    (["run", "--metrics-addr", "not-an-ip", "--metrics-port", "9999", "--", "true"], ["--metrics-addr"]),
    (["run", "--socket", "/proc/1/nope/pc.sock", "--", "true"], ["--socket"]),
    (["run", "--user", "no-such-user-xyz", "--", "true"], ["--user"]),
    (["run", "--cgroup-parent", "/nonexistent/cg", "--", "true"], ["--cgroup-parent"]),
    (["kill", "a b"], ["'a b'"]),
    (["release", "a b"], ["'a b'"]),
    (["daemon", "--policy", "/nonexistent/node.yaml"], ["/nonexistent/node.yaml"]),
])
def test_bad_input_is_one_error_line_before_any_compile(args, words):
    one_error(cli(*args), *words)


def test_busy_metrics_port_is_refused_up_front():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        one_error(cli("run", "--metrics-port", str(s.getsockname()[1]), "--", "true"), "--metrics-port", "in use")


def test_policy_check_reports_every_error_and_json(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: t\nbudgets:\n  cpu: .nan\nnetwork:\n  default: sometimes\nexec:\n  mode: bogus\n")
    r = cli("policy", "check", str(p))
    errs = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and [e.split(":")[2] for e in errs] == ["3", "5", "7"]
    r = cli("policy", "check", "--json", str(p))
    out = json.loads(r.stdout)
    assert r.returncode == 2 and not out["ok"] and [e["key"] for e in out["errors"]] == \
        ["budgets.cpu", "network.default", "exec.mode"]


def test_stdin_and_builtin_names_are_policies():
    r = cli("policy", "check", "-", stdin="name: piped\n")
    assert r.returncode == 0 and "piped" in r.stdout
    assert cli("policy", "show", "strict").stdout.startswith("name: strict")
    assert load_policy("strict").name == "strict"


@pytest.mark.parametrize("text,value", [("1e1", 10.0), ("2.5E-1", 0.25)])
def test_yaml_12_numbers(text, value):
    assert load_policy_text(f"name: t\nbudgets:\n  cpu: {text}\n").budgets.cpu == value


@pytest.mark.parametrize("text,seconds", [("1h30m", 5400.0), ("1d", 86400.0), ("90", 90.0), ("1m 30s", 90.0),
                                          ("250ms", 0.25)])
def test_durations(text, seconds):
    assert load_policy_text(f"name: t\nescalation:\n  grace: {text}\n").escalation_grace_s == seconds


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN"])
def test_nan_and_infinity_are_refused(text):
    with pytest.raises(PolicyError, match="not a finite number"):
        load_policy_text(f"name: t\nbudgets:\n  cpu: {text}\n")
    with pytest.raises(PolicyError):
        load_policy_text(f"name: t\nescalation:\n  grace: {text}\n")


def test_quoted_exponent_stays_a_string():
    with pytest.raises(PolicyError):
        load_policy_text("name: t\nbudgets:\n  cpu: '1e1'\n")


def test_vv_counts_and_shows_tracebacks(tmp_path):
    assert _verbosity(["-vv", "policy", "check", "x"]) == 2
    assert _verbosity(["policy", "check", "-v"]) == 0
    p = tmp_path / "p.yaml"
    p.write_text("name: [unclosed\n")
    assert "Traceback" in cli("-vv", "policy", "check", str(p)).stderr
