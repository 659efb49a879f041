"""Drop-and-execute (issue 11 part 5), through `pycontain run` as the
agent's dynamic uid.

The agent copies /usr/bin/touch into its writable temp dir and runs the copy,
which writes its own sentinel. Bare: it runs. Under `strict` (exec.trusted)
it is killed in the kernel before it runs while /usr/bin/touch itself still
runs. Under `default` the drop runs and is recorded as an
`exec.agent_written` alert in the audit log. A `#!` script the agent wrote
runs under both (trusted judges executable images, the interpreter here; the
same bytes run as `sh s.sh` without any exec: docs/kernel.md, Known limits) —
asserted so that a change there is noticed.
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
DROPS = ("dropped-elf",)
SCRIPT = "dropped-script"


def agent_cmd(d: Path) -> list[str]:
    return ["/bin/sh", "-c", f"""
cp /usr/bin/touch {d}/tt && {d}/tt {d}/dropped-elf
printf '#!/bin/sh\\n/usr/bin/touch {d}/dropped-script\\n' > {d}/s.sh && chmod +x {d}/s.sh && {d}/s.sh
/usr/bin/touch {d}/system
"""]


@pytest.fixture
def drop_dir() -> Iterator[Path]:
    """A temp dir any uid may write (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="pc-drop-"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_agent(policy: str, d: Path, audit: Path) -> None:
    r = subprocess.run(PYCONTAIN + ["run", "--policy", policy, "--name", f"t-drop-{policy}",
                                    "--audit-log", str(audit), "--"] + agent_cmd(d),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_drop_and_execute_bare_then_strict_then_default(privileged, drop_dir, tmp_path):
    bare = drop_dir / "bare"
    bare.mkdir(mode=0o777)
    subprocess.run(agent_cmd(bare), check=True, timeout=30)
    assert all((bare / n).exists() for n in DROPS + (SCRIPT, "system"))

    strict = drop_dir / "strict"
    strict.mkdir()
    os.chmod(strict, 0o1777)
    run_agent("strict", strict, tmp_path / "strict.jsonl")
    made = sorted(p.name for p in strict.iterdir())
    for n in DROPS:
        assert not (strict / n).exists(), f"{n}: an agent-written program ran under strict ({made})"
    assert (strict / "system").exists(), f"/usr/bin/touch was stopped under strict ({made})"
    assert (strict / SCRIPT).exists(), "an agent-written #! script was stopped: update docs/kernel.md Known limits"
    rules = {x.get("rule") for x in _records(tmp_path / "strict.jsonl") if x.get("kind") == "violation"}
    assert "exec.trusted" in rules, rules

    default = drop_dir / "default"
    default.mkdir()
    os.chmod(default, 0o1777)
    run_agent("default", default, tmp_path / "default.jsonl")
    assert all((default / n).exists() for n in DROPS + (SCRIPT, "system")), sorted(p.name for p in default.iterdir())
    alerts = [x for x in _records(tmp_path / "default.jsonl")
              if x.get("kind") == "violation" and x.get("rule") == "exec.agent_written"]
    assert any("/tt" in x.get("reason", "") for x in alerts), alerts


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
