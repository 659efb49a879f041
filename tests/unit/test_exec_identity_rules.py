"""issue 11: how exec rules compile into the kernel's deny and hold filters (pure)."""

from __future__ import annotations

from pycontain.core.events import RULE_HOLD, ConfigFlag, PatternWhere
from pycontain.core.kernel_rules import compile_policy, exec_holds, exec_verdict, glob_literal
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.kernel.exec_dfa import compile_patterns, first_match


def test_prefix_globs_are_kernel_patterns_after_a_slash():
    t = compile_policy(load_policy_text("exec:\n  deny: ['xmrig-*']\n"))
    assert ("/xmrig-", PatternWhere.BASENAME, 5) in t.exec_patterns
    assert exec_verdict(t, "/tmp/xmrig-6.2") == 5
    assert exec_verdict(t, "/tmp/myxmrig-6.2") == 0          # a prefix, not a substring
    assert exec_verdict(t, "/tmp/innocent", exe_name="xmrig-6.2") == 5   # the file's own name


def test_literal_prefilters():
    assert glob_literal("rx/0", args=True) == "rx/0"
    assert glob_literal("pool.*:[0-9]*", args=True) == "pool."
    assert glob_literal("[48][0-9ab]???*", args=True) is None
    assert glob_literal("nc.*") == "/nc."
    assert glob_literal("/opt/*") is None                     # a path glob: the basename says nothing


def test_default_policy_holds_only_programs_with_user_space_rules():
    t = compile_policy(builtin_policy("default"))
    assert not t.flags & ConfigFlag.EXEC_HOLD_ALL
    assert t.flags & ConfigFlag.EXEC_FILELESS_DENY
    assert t.exec_names["ssh"] == RULE_HOLD and t.exec_names["busybox"] == RULE_HOLD
    assert exec_holds(t, "/usr/bin/ssh", [b"ssh", b"host", b"cmd"])
    assert exec_holds(t, "/tmp/innocent", [b"x"], exe_name="ssh")        # a renamed link to ssh
    assert exec_holds(t, "/usr/bin/xmr", [b"xmr", b"--algo", b"rx/0"])
    assert exec_holds(t, "/usr/bin/cc", [b"cc", b"x" * 2000], truncated=True)
    assert not exec_holds(t, "/usr/bin/python3", [b"python3", b"train.py"])
    assert not exec_holds(t, "/usr/bin/gcc", [b"gcc", b"-o", b"p", b"p.c"])


def test_allow_list_and_untranslatable_globs_hold_everything():
    allow = "['python*', pycontain, bash, sh, '/opt/tools/*']"
    t = compile_policy(load_policy_text(f"exec:\n  mode: allow-list\n  allow: {allow}\n"))
    assert t.flags & ConfigFlag.EXEC_HOLD_ALL
    t = compile_policy(load_policy_text("exec:\n  deny: ['/tmp/*']\n"))
    assert t.flags & ConfigFlag.EXEC_HOLD_ALL


def test_trusted_and_fileless_keys():
    p = load_policy_text("exec:\n  trusted: {paths: [/usr, /opt/conda/]}\n  fileless: alert\n"
                         "  truncated_args: alert\n")
    assert p.exec.trusted == ("/usr", "/opt/conda") and p.exec.fileless == "alert"
    t = compile_policy(p)
    assert t.flags & ConfigFlag.EXEC_TRUSTED and not t.flags & ConfigFlag.EXEC_FILELESS_DENY
    assert t.trusted_paths == ("/usr", "/opt/conda")


def test_a_deny_pattern_beats_a_hold_pattern_in_the_automaton():
    a = compile_patterns([(b"/nc.", 0, RULE_HOLD), (b"miner", 0, 7)])
    assert first_match(a, b"/nc.miner", 0) == 7
    assert first_match(a, b"/nc.openbsd", 0) == RULE_HOLD
    assert first_match(a, b"/ncdu", 0) == 0


def test_replay_judges_recorded_file_identity():
    """replay reads the new record fields: the file's own name decides, not the name passed."""
    from pycontain.core.kernel_rules import kernel_verdict
    t = compile_policy(builtin_policy("default"))
    rec = {"kind": "exec", "filename": "/tmp/innocent", "argv": ["innocent"], "exe": {"name": "xmrig", "ino": 5}}
    assert kernel_verdict(t, rec) == t.exec_names["xmrig"]
    assert kernel_verdict(t, {"kind": "exec_map", "exe": {"name": "xmrig"}}) == t.exec_names["xmrig"]
    assert kernel_verdict(t, {"kind": "exec", "filename": "/usr/bin/python3", "argv": ["python3"],
                              "exe": {"name": "python3.11"}}) == 0


def test_an_argument_glob_without_a_literal_holds_long_arguments():
    """The Monero wallet glob has no literal for the automaton: an exec with
    an argument long enough to match it is held for user space, never judged
    after the exec. Globs match whole arguments, so a long command line of
    short arguments is not held; a cut argv is (its end is not seen)."""
    from pycontain.core.kernel_rules import glob_min_len
    assert glob_min_len("[48][0-9ab]???*") == 5 and glob_min_len("*x*") == 1 and glob_min_len("a?[bc]") == 3
    t = compile_policy(builtin_policy("default"))
    assert t.hold_args_min == 95
    wallet = b"4" + b"a" * 94
    assert exec_holds(t, "/tmp/innocent", [b"innocent", b"-u", wallet])
    assert not exec_holds(t, "/tmp/innocent", [b"innocent", b"-u", b"4abc"])
    many = [b"python3", b"train.py"] + [b"--seed", b"12345678"] * 20          # 350 bytes, none over 8
    assert not exec_holds(t, "/usr/bin/python3", many)
    assert exec_holds(t, "/usr/bin/python3", many, truncated=True)
    assert exec_holds(t, "/tmp/innocent", ["innocent", "4" + "é" * 47])   # 48 characters, 95 bytes
    assert not exec_holds(t, "/tmp/innocent", ["innocent", "4" + "a" * 93])  # one byte short
    t = compile_policy(load_policy_text("exec:\n  deny_args: ['[0-9]?']\n"))
    assert t.hold_args_min == 2 and not t.flags & ConfigFlag.EXEC_HOLD_ALL
    assert compile_policy(load_policy_text("exec:\n  deny_args: ['*stratum*']\n")).hold_args_min == 0
