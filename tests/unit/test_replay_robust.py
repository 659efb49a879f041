"""replay never raises on arbitrary input (issue 13 parts 6 and 7): every
bad record is a ReplayError naming FILE:LINE; .gz and stdin are read."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontain.cli.replay import ReplayError, replay
from pycontain.core.policy import builtin_policy

POLICY = builtin_policy("default")
PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
EXEC = {"ts": 1.0, "agent": "a", "kind": "exec", "pid": 5, "filename": "/usr/bin/xmrig", "argv": ["xmrig"]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_replay_never_raises_on_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "log.jsonl"
    p.write_bytes(data)
    try:
        replay(str(p), POLICY)
    except ReplayError as e:
        assert e.message.startswith(str(p))


records = st.dictionaries(st.sampled_from(["kind", "daddr", "dport", "protocol", "filename", "argv", "pid", "ts"]),
                          st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.text(max_size=5)),
                                    st.sampled_from(["exec", "connect", "send", "violation"])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(records, max_size=5))
def test_replay_never_raises_on_odd_records(tmp_path, recs):
    p = tmp_path / "log.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    try:
        replay(str(p), POLICY)
    except ReplayError as e:
        assert e.message.startswith(f"{p}:")


def test_agent_backslashes_do_not_break_replay(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(json.dumps(dict(EXEC, argv=["x", "\\", "\\x", "\\u12", "a\\"])) + "\n")
    assert [r.kind for r in replay(str(p), POLICY)] == ["exec"]


def test_gzip_and_stdin(tmp_path):
    p = tmp_path / "log.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(json.dumps(EXEC) + "\n")
    assert [r.decision for r in replay(str(p), POLICY)] == ["deny"]
    r = subprocess.run(PYCONTAIN + ["replay", "-"], input=json.dumps(EXEC) + "\n", capture_output=True, text=True)
    assert r.returncode == 0 and "xmrig" in r.stdout


def test_bad_port_names_file_and_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(json.dumps(EXEC) + "\n" + json.dumps({"kind": "connect", "daddr": "1.2.3.4", "dport": "http"}) + "\n")
    r = subprocess.run(PYCONTAIN + ["replay", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {p}:2: bad connect record"), r.stderr
