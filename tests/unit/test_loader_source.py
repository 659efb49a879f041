"""The loader's program text: #include "..." lines expanded, each file once
(BCC rewrites map calls only in its main text, not in included files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pycontain.core.errors import EnvironmentProblem
from pycontain.kernel.loader import BASE_HEADERS, HOOK_FILES, expand_includes, program_text

EBPF = Path(__file__).resolve().parents[2] / "ebpf"


def test_each_local_file_inlined_once_and_nested(tmp_path):
    (tmp_path / "a.h").write_text("A\n")
    (tmp_path / "b.h").write_text('#include "a.h"\nB\n')
    (tmp_path / "x.c").write_text('#include "a.h"\n  #  include "b.h"  /* why */\n#include <linux/bpf.h>\nX\n')
    out = expand_includes('#include "x.c"\n#include "b.h"\n', tmp_path)
    assert out.count("A\n") == 1 and out.count("B\n") == 1 and out.count("X\n") == 1
    assert out.index("A\n") < out.index("B\n") < out.index("X\n")
    assert "#include <linux/bpf.h>" in out
    assert not re.search(r'^\s*#\s*include\s*"', out, re.M)


def test_missing_local_file_is_an_environment_problem(tmp_path):
    with pytest.raises(EnvironmentProblem, match="nope.h"):
        expand_includes('#include "nope.h"\n', tmp_path)


def test_real_program_text_has_every_file_once():
    text = program_text(EBPF, HOOK_FILES)
    for name in (*BASE_HEADERS, "net.bpf.h", *HOOK_FILES):
        assert text.count(f"/* ---- {name} ---- */") == 1, name
    assert not re.search(r'^\s*#\s*include\s*"', text, re.M)
    # the maps every hook and Probes use are there even with no hook file
    assert "BPF_RINGBUF_OUTPUT(pc_events" in program_text(EBPF, [])


def test_hook_files_include_their_headers_not_each_other():
    for name in HOOK_FILES:
        src = (EBPF / name).read_text()
        local = re.findall(r'^\s*#\s*include\s*"([^"]+)"', src, re.M)
        assert local and all(n.endswith(".h") for n in local), (name, local)
