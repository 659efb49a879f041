"""Shared fixtures.

Tests are split by privilege (as pyroute2 does): tests/unit runs as any user;
tests/kernel loads real BPF programs and needs root. A privileged test that
cannot run skips on a developer machine, but with CI=true it FAILS: CI must
never go green by skipping the kernel tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _privilege_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401  (distro python3-bpfcc)
    except Exception as e:  # pragma: no cover - depends on host
        return f"BCC Python bindings not importable: {e}"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    if not Path("/sys/kernel/tracing/events").is_dir() and not Path("/sys/kernel/debug/tracing/events").is_dir():
        return "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip a privileged test, or fail it under CI=true."""
    if IN_CI:
        pytest.fail(f"privileged test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def privileged() -> None:
    """Request this in every test that loads real programs or touches cgroups."""
    problem = _privilege_problem()
    if problem:
        skip_or_fail(problem)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/kernel" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.privileged)
