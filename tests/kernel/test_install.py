"""The set-up script is idempotent and leaves `pycontain` on root's PATH."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.conftest import REPO, skip_or_fail


def test_install_twice_changes_nothing(privileged):
    env = dict(os.environ, PYCONTAIN_INSTALL_QUIET="0")
    first = subprocess.run([str(REPO / "scripts/install.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([str(REPO / "scripts/install.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    # the second run only confirms: nothing installed, created or linked anew
    assert [l for l in second.stdout.splitlines() if not l.startswith("install: ready:")] == []
    assert os.path.realpath("/usr/local/bin/pycontain") == "/opt/pycontain/venv/bin/pycontain"
    out = subprocess.run(["/usr/local/bin/pycontain", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "pycontain" in out.stdout
    # the venv sees the distro's BCC
    assert subprocess.run(["/opt/pycontain/venv/bin/python", "-c", "import bcc"]).returncode == 0


def test_vagrantfile_validates():
    if shutil.which("vagrant") is None:
        skip_or_fail("vagrant not installed (scripts/install-test-tools.sh installs it)")
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "sudo scripts/test" in readme
    assert "exec scripts/test" in ci and "CI=true" in ci
