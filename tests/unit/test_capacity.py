"""Capacity is part of validation (issue 13 part 1): a policy that does not
fit the kernel maps is refused by `policy check` with file:line and the
limit; a failed (re)load never takes the daemon down or the old policy out."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from prometheus_client import generate_latest

from pycontain.core.capacity import EXEC_NAMES_MAX, LPM_MAX, MAP_CAPACITY, table_overflows
from pycontain.core.errors import EnvironmentProblem, PolicyError
from pycontain.core.kernel_rules import compile_policy
from pycontain.core.policy import load_policy_text
from pycontain.kernel import exec_dfa
from pycontain.kernel.abi import C_CONSTANTS
from pycontain.kernel.loader import Probes
from pycontain.observe.metrics import make_registry
from pycontain.observe.state import NodeState

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]


def exec_policy(n: int) -> str:
    return "name: big\nexec:\n  deny:\n" + "".join(f"    - prog{i}\n" for i in range(n))


def cidr_policy(n: int) -> str:
    nets = ipaddress.IPv4Network("11.0.0.0/8").hosts()
    return "name: big\nnetwork:\n  deny:\n    - cidrs:\n" + "".join(f"      - {next(nets)}/32\n" for _ in range(n))


def test_capacity_table_is_the_c_one():
    assert C_CONSTANTS["PC_EXEC_NAMES_MAX"] == MAP_CAPACITY["pc_exec_names"] == EXEC_NAMES_MAX
    assert C_CONSTANTS["PC_LPM_MAX"] == MAP_CAPACITY["pc_deny4"] == LPM_MAX
    assert C_CONSTANTS["PC_AGENTS_MAX"] == MAP_CAPACITY["pc_agents"]
    from pycontain.core.capacity import DFA_BYTES_MAX
    assert DFA_BYTES_MAX == exec_dfa.DFA_CLASSES - 1


def test_exactly_full_fits_one_more_is_refused_at_its_line():
    load_policy_text(exec_policy(EXEC_NAMES_MAX))
    with pytest.raises(PolicyError) as e:
        load_policy_text(exec_policy(EXEC_NAMES_MAX + 1), "big.yaml")
    assert e.value.line == 4 + EXEC_NAMES_MAX and e.value.key == f"exec.deny[{EXEC_NAMES_MAX}]"
    assert "1024" in e.value.message and "pc_exec_names" in e.value.message


@pytest.mark.parametrize("text,where,limit", [
    (exec_policy(1100), "exec.deny[1024]", "1024"),
    (cidr_policy(20000), "network.deny[0].cidrs[16384]", "16384"),
])
def test_policy_check_refuses_what_would_not_load(tmp_path, text, where, limit):
    p = tmp_path / "big.yaml"
    p.write_text(text)
    r = subprocess.run(PYCONTAIN + ["policy", "check", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"error: {p}:") and where in first and limit in first, first
    assert "Traceback" not in r.stderr and r.stderr.splitlines()[1].startswith("hint: ")


def test_run_with_an_oversized_policy_is_one_error_line(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text(exec_policy(1100))
    r = subprocess.run(PYCONTAIN + ["run", "--policy", str(p), "--", "true"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {p}:") and "Traceback" not in r.stderr


def test_addresses_of_host_names_are_counted_before_any_map_write():
    """Host names resolve at run time: the loader refuses tables that the
    live maps would not hold, before writing anything (no half-written mixture)."""
    pol = load_policy_text("name: h\nnetwork:\n  deny:\n    - host: many.example\n")
    addrs = [str(a) for a, _ in zip(ipaddress.IPv4Network("11.0.0.0/8").hosts(), range(LPM_MAX + 1), strict=False)]
    tables = compile_policy(pol, {"many.example": addrs})
    assert [o.map for o in table_overflows(tables)] == ["pc_deny4"]
    probes = Probes()
    probes._used = ["exec.c", "connect.c"]
    written = []
    probes._write_exec_names = written.append        # type: ignore[method-assign]
    with pytest.raises(EnvironmentProblem) as e:
        probes.set_tables(tables)
    assert "network.deny:many.example" in e.value.message and written == []


def test_reload_metrics_are_exported():
    st = NodeState()
    st.reload_ok, st.reload_success_ts = False, 1234.5
    text = generate_latest(make_registry(st)).decode()
    assert "pycontain_config_last_reload_successful 0.0" in text
    assert "pycontain_config_last_reload_success_timestamp_seconds 1234.5" in text
