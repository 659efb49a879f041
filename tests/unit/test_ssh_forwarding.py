"""ssh forwarding judged on the effective configuration (issue 12 part 7):
recorded `ssh -G` outputs (OpenSSH 9.2; data/ssh_g) -> verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontain.core.ssh_forwarding import argv_violation, config_query, config_violation

DATA = Path(__file__).parent / "data" / "ssh_g"


def recorded(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


@pytest.mark.parametrize("name", ["plain", "include_match_other_host"])
def test_plain_sessions_pass(name):
    assert config_violation(recorded(name)) is None


@pytest.mark.parametrize("name, words", [
    ("remoteforward_config", "remoteforward 2222 [localhost]:22"),        # ROME's tunnel, set in a file
    ("include_match_localforward", "localforward 8080 [10.0.0.5]:80"),    # Include + Match host
    ("dynamic", "dynamicforward 1080"),
    ("tunnel", "tunnel point-to-point"),
    ("controlmaster_auto", "controlmaster auto"),
    ("controlpath_only", "controlpath /tmp/cm-git.example"),               # a master someone else opens
])
def test_forwards_and_masters_are_violations(name, words):
    why = config_violation(recorded(name))
    assert why is not None and words in why


def test_escape_command_line_is_a_violation():
    """`ssh -tt -oEnableEscapeCommandline=yes host` (recorded): the agent types
    `~C -R 2222:localhost:22` on the pty and ssh opens the forward mid-session."""
    why = config_violation(recorded("escape_commandline"))
    assert why is not None and "enableescapecommandline yes" in why and "~C" in why
    off = recorded("escape_commandline").replace("enableescapecommandline yes", "enableescapecommandline no")
    assert config_violation(off) is None


def test_failed_query_fails_closed():
    assert "unavailable" in (config_violation("") or "")
    assert "unavailable" in (config_violation("command-line line 0: Bad forwarding specification.\n") or "")


def test_query_keeps_options_and_destination_and_drops_the_command():
    assert config_query(["-F", "/x/cfg", "-p", "2222", "git.example", "git-upload-pack", "-R", "x"]) == \
        ["-G", "-F/x/cfg", "-p2222", "--", "git.example"]
    assert config_query(["git.example", "-R", "2222:localhost:22", "ls"]) == \
        ["-G", "-R2222:localhost:22", "--", "git.example"]
    assert config_query(["-V"]) is None


@pytest.mark.parametrize("argv, bad", [
    (["-O", "forward", "-R", "1:h:2", "git.example"], "-Oforward"),
    (["-Ocancel", "git.example"], "-Ocancel"),
    (["git.example", "-O", "exit"], "-Oexit"),
    (["-W", "10.0.0.5:22", "jump.example"], "-W10.0.0.5:22"),
])
def test_control_commands_and_stdio_forwards_are_violations(argv, bad):
    why = argv_violation(argv)
    assert why is not None and bad in why


def test_remote_command_words_are_not_options():
    assert argv_violation(["git.example", "grep", "-O", "-W", "x"]) is None


def test_query_environment_keeps_config_variables_and_drops_loader_ones(tmp_path):
    from pycontain.actuate.ssh_config import _environ
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "environ").write_bytes(b"HOME=/h\0LD_PRELOAD=/h/evil.so\0OPENSSL_CONF=/h/e.cnf\0"
                                             b"LC_ALL=C\0GCONV_PATH=/h\0XDG_RUNTIME_DIR=/run/u\0")
    assert _environ(7, str(tmp_path)) == {b"HOME": b"/h", b"LC_ALL": b"C", b"XDG_RUNTIME_DIR": b"/run/u"}
