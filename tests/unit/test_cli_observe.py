"""trace keeps every column when piped and filters by kind, pid and
program; top survives a daemon restart; --allow-no-gpu says that GPU rules
are off (issue 13 part 6)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console
from test_app_session import FakeActuator, FakeClock, FakeProbes, fake_decode  # noqa: F401  (autouse)
from test_observability import hostile_state

from pycontain.app.edges import Edges
from pycontain.app.session import Session
from pycontain.cli.trace import COLUMNS, TraceFilter, check_kinds, plain_row
from pycontain.core.errors import EnvironmentProblem, UsageError
from pycontain.core.policy import builtin_policy
from pycontain.observe.audit import AuditLog
from pycontain.observe.report import Reporter
from pycontain.observe.state_api import StateClient, StateServer
from pycontain.observe.top import top_frames

LONG = "/opt/some/deep/path/to/a/program/with/a/long/name --and --many --arguments " * 3
EXEC = {"ts": 1.5, "agent": "trainer-with-a-long-name", "kind": "exec", "pid": 4242, "comm": "python3",
        "verdict": "deny", "rule": "exec.deny:xmrig", "filename": "/tmp/xmrig", "argv": ["xmrig", LONG]}


def test_piped_rows_keep_every_column_uncut():
    cells = plain_row(EXEC).split("\t")
    assert len(cells) == len(COLUMNS)
    assert cells[1:6] == ["trainer-with-a-long-name", "exec", "4242", "python3", "deny"]
    assert LONG.strip() in cells[6] and "exec.deny:xmrig" in cells[6]


def test_an_agent_cannot_add_columns():
    rec = dict(EXEC, comm="a\tb", argv=["x\ty"])
    assert len(plain_row(rec).split("\t")) == len(COLUMNS)


@pytest.mark.parametrize("only,want", [
    (TraceFilter(), True),
    (TraceFilter(kinds=("exec",)), True),
    (TraceFilter(kinds=("connect", "send")), False),
    (TraceFilter(pids=(4242, 1)), True),
    (TraceFilter(pids=(1,)), False),
    (TraceFilter(programs=("xmr*",)), True),      # the file it ran
    (TraceFilter(programs=("python*",)), True),   # its comm
    (TraceFilter(programs=("curl",)), False),
    (TraceFilter(kinds=("exec",), pids=(1,)), False),
])
def test_filters(only, want):
    assert only.wants(EXEC) is want


def test_unknown_kind_is_a_usage_error():
    assert check_kinds(["exec", "connect", "violation"]) == ("exec", "connect", "violation")
    with pytest.raises(UsageError) as e:
        check_kinds(["exce"])
    assert "exec" in e.value.hint


def test_trace_bad_kind_is_one_error_line_before_anything_loads():
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "trace", "--kind", "nope", "--all"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: --kind 'nope'") and "Traceback" not in r.stderr


def test_top_keeps_running_across_a_daemon_restart(tmp_path):
    path = str(tmp_path / "pc.sock")
    srv = StateServer(hostile_state(), path)
    srv.start()
    frame = top_frames(StateClient(path, timeout=2), interval=0.1)
    render = Console(file=io.StringIO(), width=200, color_system=None)
    render.print(frame())
    srv.close()                                  # the daemon stops...
    down = frame()
    assert "not reachable" in str(down)
    srv = StateServer(hostile_state(), path)     # ...and a new one starts on the same socket
    srv.start()
    try:
        out = io.StringIO()
        Console(file=out, width=200, color_system=None).print(frame())
        assert "trainer" in out.getvalue()
    finally:
        srv.close()


def test_top_with_no_daemon_at_all_is_an_error(tmp_path):
    with pytest.raises(EnvironmentProblem):
        top_frames(StateClient(str(tmp_path / "none.sock")))()


class NoGpu:
    available = False
    status = "unavailable: NVML Shared Library Not Found"

    def shutdown(self):
        pass


def test_allow_no_gpu_says_gpu_rules_are_off():
    ref: dict = {}

    def probes(**kw):
        ref["p"] = FakeProbes(**kw)
        return ref["p"]
    edges = Edges(probes=probes, actuator=lambda cgroups, **_: FakeActuator(ref), nvml=NoGpu, lookup=lambda h: [],
                  clock=FakeClock())
    out = io.StringIO()
    s = Session(builtin_policy("default"), audit=AuditLog(stream=io.StringIO()), edges=edges, allow_no_gpu=True,
                report=Reporter(console=Console(file=out, width=300, color_system=None)).record)
    s.start()
    s.close()
    assert "GPU rules are off" in out.getvalue() and "NVML Shared Library Not Found" in out.getvalue()
