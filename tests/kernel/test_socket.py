"""Raw IP sockets (cgroup sock_create → EPERM) and packet sockets
(sys_enter_socket → SIGKILL before user code sees the descriptor)."""

from __future__ import annotations

import signal
import socket

from pycontain.core.events import ConfigFlag, Flag, Mode, SocketEvent, Verdict

RAW = r"""
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.close()
print(outcome(f))
"""

RAW6 = r"""
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.close()
print(outcome(f))
"""

# prints "created" only if socket() returned to user code
PACKET = r"""
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
print("created", flush=True)
"""

PLAIN = r"""
def f():
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
print(outcome(f))
"""


def socket_events(agent, pid):
    return [e for e in agent.events if isinstance(e, SocketEvent) and e.h.pid == pid]


def test_raw_socket_is_eperm_when_denied(net_agent):
    net_agent.tables(flags=ConfigFlag.DENY_RAW)
    r4 = net_agent.python(RAW)
    r6 = net_agent.python(RAW6)
    plain = net_agent.python(PLAIN)
    assert r4.out == "EPERM", r4.err
    assert r6.out == "EPERM", r6.err
    assert plain.out == "ok", plain.err
    ev = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r4.pid)
    assert [(e.h.verdict, e.h.rule_id, e.family, e.sock_type, e.protocol) for e in ev] == \
        [(Verdict.DENY, 3, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)]   # 3: network.raw_socket
    ev6 = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r6.pid)
    assert [(e.h.verdict, e.family) for e in ev6] == [(Verdict.DENY, socket.AF_INET6)]
    net_agent.drain(0.2)
    assert socket_events(net_agent, plain.pid) == []      # stream/dgram sockets are judged at connect


def test_raw_socket_allowed_without_the_flag_but_reported(net_agent):
    net_agent.tables()
    r = net_agent.python(RAW)
    assert r.out == "ok", r.err
    ev = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r.pid)
    assert [(e.h.verdict, e.sock_type) for e in ev] == [(Verdict.ALLOW, socket.SOCK_RAW)]


def test_raw_socket_monitor_mode_would_deny(net_agent):
    net_agent.tables(mode=Mode.MONITOR, flags=ConfigFlag.DENY_RAW)
    r = net_agent.python(RAW)
    assert r.out == "ok", r.err
    ev = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r.pid)
    assert [e.h.verdict for e in ev] == [Verdict.WOULD_DENY]


def test_packet_socket_kills_the_process_before_it_uses_the_fd(net_agent):
    net_agent.tables(flags=ConfigFlag.DENY_PACKET)
    r = net_agent.python(PACKET)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.out, r.err)
    assert "created" not in r.out
    ev = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r.pid)
    assert len(ev) == 1
    e = ev[0]
    assert e.h.verdict == Verdict.DENY and e.h.flags & Flag.KILLED
    assert (e.family, e.h.rule_id, e.h.agent_id) == (socket.AF_PACKET, 4, net_agent.agent_id)


def test_obsolete_inet_sock_packet_is_a_packet_socket_too(net_agent):
    net_agent.tables(flags=ConfigFlag.DENY_PACKET)
    r = net_agent.python("s = socket.socket(socket.AF_INET, 10, 0x0300)\nprint('created', flush=True)\n")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.out, r.err)
    assert "created" not in r.out


def test_packet_socket_monitor_mode_is_not_killed(net_agent):
    net_agent.tables(mode=Mode.MONITOR, flags=ConfigFlag.DENY_PACKET)
    r = net_agent.python(PACKET)
    assert r.returncode == 0 and r.out == "created", r.err
    ev = net_agent.wait_for(lambda e: isinstance(e, SocketEvent) and e.h.pid == r.pid)
    assert [(e.h.verdict, bool(e.h.flags & Flag.KILLED)) for e in ev] == [(Verdict.WOULD_DENY, False)]


def test_packet_and_raw_sockets_outside_the_agent_are_untouched(net_agent):
    net_agent.tables(flags=ConfigFlag.DENY_PACKET | ConfigFlag.DENY_RAW)
    p = net_agent.python(PACKET, inside=False)
    r = net_agent.python(RAW, inside=False)
    assert p.returncode == 0 and p.out == "created", p.err
    assert r.out == "ok", r.err
    net_agent.drain(0.3)
    assert socket_events(net_agent, p.pid) == [] and socket_events(net_agent, r.pid) == []


# prints "created FAMILY" for each socket() that returned to user code
FAMILIES = r"""
import socket, sys
for fam, kind in [(socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_UNIX, socket.SOCK_STREAM),
                  (socket.AF_VSOCK, socket.SOCK_STREAM)]:
    socket.socket(fam, kind).close()
    print("created", fam.name, flush=True)
"""


def test_a_family_no_hook_judges_is_killed_under_run(privileged):
    """AF_VSOCK reaches the hypervisor (CID 2) past every inet hook: bare, an
    unprivileged process makes one; under run (default policy) the process
    dies at socket(), before user code has the descriptor. The families
    pycontain judges still work."""
    import subprocess
    import sys
    bare = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                           FAMILIES], capture_output=True, text=True, timeout=30)
    assert "created AF_VSOCK" in bare.stdout, (bare.stdout, bare.stderr)
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "run", "--no-daemon", "--", "/usr/bin/python3", "-c",
                        FAMILIES], capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert r.returncode == 128 + signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    assert "created AF_NETLINK" in r.stdout and "created AF_UNIX" in r.stdout, r.stdout
    assert "created AF_VSOCK" not in r.stdout
    assert "network.socket_family" in r.stderr and "AF_VSOCK" in r.stderr, r.stderr
