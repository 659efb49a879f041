"""Exec rules hold however a program is named or started (issue 11).

Every class of move runs the same helper twice: bare (outside any agent:
the breach happens, its sentinel file is written) and as an agent under the
kernel's exec verdict (the sentinel is never written). The "miner" is a
small C program named xmrig (a denied name) that writes the file named by
$PC_SENTINEL as its first action.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from exec_harness import agent, collector, compile_c, denying, exec_probes  # noqa: F401  (fixtures)
from exec_harness import run_with_sentinel as _run

from pycontain.core.events import RULE_FILELESS, Flag, Verdict
from pycontain.core.kernel_rules import KernelTables

MINER_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    const char *s = getenv("PC_SENTINEL");
    if (s) close(open(s, O_CREAT | O_WRONLY, 0644));
    return 0;
}
"""
LD_SO = "/lib64/ld-linux-x86-64.so.2"


@pytest.fixture(scope="module")
def miner(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("miner")
    compile_c(d, MINER_C, "xmrig")
    os.chmod(d, 0o755)
    return d / "xmrig"




def _moves(miner: Path, work: Path) -> dict[str, list[str]]:
    """Each move: argv for the helper that runs the miner under another guise."""
    long_dir = work / "/".join(["d" * 60] * 5)        # > 256 bytes: past the hook's filename buffer
    py = sys.executable
    return {
        "symlink": ["/bin/sh", "-c", f"ln -sf {miner} {work}/innocent && exec {work}/innocent"],
        "hardlink": ["/bin/sh", "-c", f"ln -f {miner} {work}/innocent2 && exec {work}/innocent2"],
        "ld.so": [LD_SO, str(miner)],
        "shebang": ["/bin/sh", "-c", f"printf '#!{miner}\\n' > {work}/innocent.sh && chmod +x {work}/innocent.sh "
                    f"&& exec {work}/innocent.sh"],
        "execveat": [py, "-c", f"import os; fd = os.open({str(miner)!r}, os.O_RDONLY); "
                     "os.execve(fd, ['innocent'], dict(os.environ))"],
        "long-path": ["/bin/sh", "-c", f"mkdir -p {long_dir} && cp {miner} {long_dir}/xmrig && exec {long_dir}/xmrig"],
        "memfd": [py, "-c", textwrap.dedent(f"""
            import os
            fd = os.memfd_create("innocent", 0)
            os.write(fd, open({str(miner)!r}, "rb").read())
            os.execve(fd, ["innocent"], dict(os.environ))""")],
    }


MOVES = ["symlink", "hardlink", "ld.so", "shebang", "execveat", "long-path", "memfd"]




@pytest.mark.parametrize("move", MOVES)
def test_move_runs_bare_and_never_under_pycontain(move, miner, denying, agent, collector, tmp_path):
    bare, contained = tmp_path / "bare", tmp_path / "contained"
    bare.mkdir()
    contained.mkdir()
    os.chmod(tmp_path, 0o755)
    assert _run(_moves(miner, bare)[move], bare / "sentinel") == 0
    assert (bare / "sentinel").exists(), f"{move}: the move does not work even without pycontain"

    _run(_moves(miner, contained)[move], contained / "sentinel", agent)
    collector.drain(0.3)
    assert not (contained / "sentinel").exists(), f"{move}: the miner ran under pycontain"
    denied = [e for e in collector.events if e.kind in ("exec", "exec_map") and e.h.verdict == Verdict.DENY]
    assert denied and all(e.h.flags & Flag.KILLED for e in denied)
    if move == "memfd":
        assert denied[0].h.rule_id == RULE_FILELESS and denied[0].h.flags & Flag.FILELESS
    else:
        assert denied[0].h.rule_id == 1
        assert denied[0].exe.name in (b"xmrig", b"innocent2")   # the file's own name (or its hard link's)


def test_exec_record_names_the_file_that_runs(miner, exec_probes, agent, collector, tmp_path):
    exec_probes.set_tables(KernelTables())
    os.chmod(tmp_path, 0o755)
    link = tmp_path / "innocent"
    link.symlink_to(miner)
    _run([str(link)], tmp_path / "s", agent)
    evs = collector.wait_for(lambda e: e.kind == "exec" and e.filename == str(link).encode())
    assert evs
    st = os.stat(miner)
    exe = evs[0].exe
    assert exe.name == b"xmrig" and exe.ino == st.st_ino
    assert (exe.dev >> 20, exe.dev & 0xFFFFF) == (os.major(st.st_dev), os.minor(st.st_dev))
    assert exe.uid == st.st_uid and exe.mode == st.st_mode and exe.nlink == st.st_nlink
    assert exe.mtime_sec == int(st.st_mtime)
