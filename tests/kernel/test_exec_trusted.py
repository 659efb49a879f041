"""Drop-and-execute (issue 11 part 5), through `pycontain run` as the
agent's dynamic uid.

The agent copies /usr/bin/touch into its writable temp dir and runs the copy,
which writes its own sentinel; it also writes a `#!` script and runs it by
absolute and by relative path (`./s.sh`), and runs a root-owned script the
test put in /usr/local/bin, and, in its own user and mount namespace, that
root-owned script's path with its own script bind-mounted over it. Bare: all run. Under `strict` (exec.trusted) the
copy is killed in the kernel before it runs; the agent's script is held in
the kernel (its interpreter is trusted, the script is judged in user space)
and killed, while /usr/bin/touch and the root-owned script still run. Under
`default` everything runs and the drop is recorded as an `exec.agent_written`
alert in the audit log. (The same bytes still run as `sh s.sh`, without any
exec of the script: docs/kernel.md, Known limits.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
DROPS = ("dropped-elf", "dropped-script", "dropped-script-rel", "bound-script")
SYSTEM = ("system", "system-script")


def agent_cmd(d: Path, system_script: Path) -> list[str]:
    return ["/bin/sh", "-c", f"""
cp /usr/bin/touch {d}/tt && {d}/tt {d}/dropped-elf
printf '#!/bin/sh\\n/usr/bin/touch "$1"\\n' > {d}/s.sh && chmod +x {d}/s.sh
{d}/s.sh {d}/dropped-script
cd {d} && ./s.sh dropped-script-rel
unshare -Urm /bin/sh -c 'mount --bind {d}/s.sh {system_script} && {system_script} {d}/bound-script'
/usr/bin/touch {d}/system
{system_script} {d}/system-script
"""]


@pytest.fixture
def system_script() -> Iterator[Path]:
    """A root-owned script under a trusted prefix, older than any agent."""
    fd, name = tempfile.mkstemp(prefix="pc-trusted-", suffix=".sh", dir="/usr/local/bin")
    os.write(fd, b'#!/bin/sh\n/usr/bin/touch "$1"\n')
    os.close(fd)
    os.chmod(name, 0o755)
    os.utime(name, (os.path.getmtime(name) - 60,) * 2)
    yield Path(name)
    os.unlink(name)


@pytest.fixture
def drop_dir() -> Iterator[Path]:
    """A temp dir any uid may write (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="pc-drop-"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_agent(policy: str, d: Path, audit: Path, script: Path, env: dict) -> None:
    """Under the built-in `policy`, with user namespaces allowed: the kernel's
    own check of a script bound over in a mount namespace is what is tested
    (by default the agent cannot make the namespace: test_privileges.py)."""
    with_userns = audit.with_suffix(".yaml")
    with_userns.write_text(f"extends: {policy}\nname: {policy}-userns\nprivileges:\n  user_namespaces: true\n")
    r = subprocess.run(PYCONTAIN + ["run", "--no-daemon", "--policy", str(with_userns), "--name", f"t-drop-{policy}",
                                    "--audit-log", str(audit), "--"] + agent_cmd(d, script),
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kernel", ["sched_prepare_exec", "older"])
def test_drop_and_execute_bare_then_strict_then_default(kernel, privileged, drop_dir, system_script, tmp_path):
    """`older`: the program a kernel without sched_prepare_exec (< 6.10)
    gets, where every exec under strict is held and judged by its path."""
    env = dict(os.environ, **({"PYCONTAIN_NO_PREPARE_EXEC": "1"} if kernel == "older" else {}))
    bare = drop_dir / "bare"
    bare.mkdir(mode=0o777)
    subprocess.run(agent_cmd(bare, system_script), check=True, timeout=30)
    assert all((bare / n).exists() for n in DROPS + SYSTEM)

    strict = drop_dir / "strict"
    strict.mkdir()
    os.chmod(strict, 0o1777)
    run_agent("strict", strict, tmp_path / "strict.jsonl", system_script, env)
    made = sorted(p.name for p in strict.iterdir())
    for n in DROPS:
        assert not (strict / n).exists(), f"{n}: an agent-written program ran under strict ({made})"
    for n in SYSTEM:
        assert (strict / n).exists(), f"{n}: a root-owned program under /usr was stopped under strict ({made})"
    viol = [x for x in _records(tmp_path / "strict.jsonl") if x.get("kind") == "violation"]
    assert {x.get("rule") for x in viol} >= {"exec.trusted"}, viol
    scripts = [x for x in viol if x.get("rule") == "exec.trusted" and "#! script" in x.get("reason", "")]
    # "/s.sh": the system script's random name may itself end in "s.sh"
    assert len(scripts) == 3 and sum("/s.sh" in x["reason"] for x in scripts) == 2, [x["reason"] for x in scripts]
    assert any("own mount namespace" in x["reason"] for x in scripts), viol

    default = drop_dir / "default"
    default.mkdir()
    os.chmod(default, 0o1777)
    run_agent("default", default, tmp_path / "default.jsonl", system_script, env)
    assert all((default / n).exists() for n in DROPS + SYSTEM), sorted(p.name for p in default.iterdir())
    alerts = [x for x in _records(tmp_path / "default.jsonl")
              if x.get("kind") == "violation" and x.get("rule") == "exec.agent_written"]
    assert any("/tt" in x.get("reason", "") for x in alerts), alerts


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
