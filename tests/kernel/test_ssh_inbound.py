"""SSH recognised on any port (ebpf/detect.bpf.h + egress.c) and the inbound
policy of agent listeners (ebpf/inbound.c), issue 12 parts 4 and 7. Each
test shows the move works bare, then fails inside, checked from the far side."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys

import pytest
from conftest import send_once

from pycontain.core.events import ConfigFlag, Flag, NetEvent, Verdict

SSH_RULE, INBOUND_RULE = 62, 63

BANNER = send_once(b"SSH-2.0-x\r\n", 0.5)


def _ssh_tables(net_agent, allow4=()):
    return net_agent.tables(rules={SSH_RULE: "network.ssh"}, flags=ConfigFlag.SSH,
                            ssh_allow4=[(ipaddress.ip_network(a), 1) for a in allow4])


def test_ssh_banner_on_port_443_is_dropped(net_agent, testhost):
    _ssh_tables(net_agent)
    bare = testhost.tcp_listener(443)
    assert net_agent.python(BANNER, testhost.peer_ip4, "443", inside=False).out == "ok"
    assert bare.wait(contains=b"SSH-2.0-x")                  # bare: the banner arrives
    bare.close()
    inside = testhost.tcp_listener(443)
    net_agent.python(BANNER, testhost.peer_ip4, "443")
    assert not inside.wait(contains=b"SSH-", timeout=1.5)    # inside: the session cannot start
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.rule_id == SSH_RULE)
    assert ev and ev[0].h.verdict == Verdict.DENY and ev[0].h.flags & Flag.SSH
    assert ev[0].daddr == testhost.peer_ip4 and ev[0].dport == 443


# a relay in front of an ssh client (ProxyCommand) writes the banner in
# pieces: each send() its own segment (TCP_NODELAY), the first ones short.
# argv: host, then PORT=PARTS (parts as a Python literal), one connection
# each, all at once
SPLIT = r"""
import ast, threading
h = sys.argv[1]
def send(port, parts):
    s = socket.create_connection((h, port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for part in parts:
        s.send(part)
        time.sleep(0.3)
    time.sleep(1.5)
def f():
    ts = [threading.Thread(target=send, args=(int(a.split("=", 1)[0]), ast.literal_eval(a.split("=", 1)[1])))
          for a in sys.argv[2:]]
    for t in ts: t.start()
    for t in ts: t.join()
print(outcome(f))
"""
SPLITS = [(b"S", b"SH-2.0-x\r\n"), (b"SSH-2.0-", b"x\r\n"), (b"SS", b"H-2", b".0-x\r\n")]


def _split_run(net_agent, testhost, inside: bool) -> list:
    listeners = [testhost.tcp_listener(0) for _ in SPLITS]
    args = [f"{lst.port}={parts!r}" for lst, parts in zip(listeners, SPLITS, strict=True)]
    net_agent.python(SPLIT, testhost.peer_ip4, *args, inside=inside)
    return listeners


def test_an_ssh_banner_split_over_segments_is_dropped(net_agent, testhost):
    _ssh_tables(net_agent)
    for lst in _split_run(net_agent, testhost, inside=False):
        assert lst.wait(contains=b"SSH-2.0-x")                # bare: sshd would read a whole banner
    for lst, parts in zip(_split_run(net_agent, testhost, inside=True), SPLITS, strict=True):
        assert not lst.wait(contains=b"S", timeout=0.5), parts    # inside: not even its first byte arrives
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.rule_id == SSH_RULE)
    assert ev and ev[0].h.verdict == Verdict.DENY and ev[0].h.flags & Flag.SSH


def test_a_short_first_segment_of_another_protocol_passes(net_agent, testhost):
    """SOCKS5 greets with 3 bytes and waits for the answer; Redis may send
    PING alone: only what could begin an SSH banner is held back."""
    _ssh_tables(net_agent)
    lst = testhost.tcp_listener(0)
    greeting = (b"\x05\x01\x00", b"PING\r\n")
    net_agent.python(SPLIT, testhost.peer_ip4, f"{lst.port}={greeting!r}")
    assert lst.wait(contains=b"\x05\x01\x00PING")


def test_ssh_to_an_allowed_destination_passes(net_agent, testhost):
    _ssh_tables(net_agent, allow4=[f"{testhost.peer_ip4}/32"])
    lst = testhost.tcp_listener(2222)
    net_agent.python(BANNER, testhost.peer_ip4, "2222")
    assert lst.wait(contains=b"SSH-2.0-x")


@pytest.mark.skipif(not shutil.which("ssh"), reason="no ssh client (scripts/install-test-tools.sh)")
def test_renamed_ssh_client_is_seen(net_agent, testhost, tmp_path):
    _ssh_tables(net_agent)
    prog = tmp_path / "not-a-shell"
    shutil.copy(shutil.which("ssh"), prog)
    os.chmod(prog, 0o755)
    argv = [str(prog), "-o", "BatchMode=yes", "-o", "ConnectTimeout=1", "-o", "StrictHostKeyChecking=no",
            "-p", "8443", f"x@{testhost.peer_ip4}", "true"]

    def run(inside: bool, port: int):
        lst = testhost.tcp_listener(port)
        argv[-3] = str(port)
        p = net_agent.popen(["timeout", "3", *argv], inside=inside)
        p.communicate(timeout=15)
        return lst
    assert run(False, 8443).wait(contains=b"SSH-2.0-")
    assert not run(True, 8444).wait(contains=b"SSH-", timeout=1.5)


LISTEN = r"""
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 0)); s.listen(4); s.settimeout(5)
print("listening", s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[2])):
    try:
        c, _ = s.accept(); c.sendall(b"HELLO"); c.close()
    except socket.timeout:
        break
"""

FAR = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); s.settimeout(2)
    print(s.recv(10).decode() or "closed")
except OSError as e:
    print(type(e).__name__)
"""


def _listen(net_agent, inside: bool, n: int, listen: str = LISTEN) -> tuple[subprocess.Popen, int]:
    """A listener on a port the kernel picks (a fixed one may be some
    client's ephemeral port at that moment), accepting n connections."""
    from conftest import CLIENT
    p = net_agent.popen([sys.executable, "-c", CLIENT + listen, "0", str(n)], inside=inside)
    said = p.stdout.readline().split()
    assert said[:1] == ["listening"], (said, p.stderr.read() if p.poll() is not None else "")
    return p, int(said[1])


def test_agent_listener_is_not_reachable_from_outside(net_agent, testhost):
    net_agent.tables(rules={INBOUND_RULE: "network.inbound"}, flags=ConfigFlag.INBOUND_LOOPBACK)

    def far(port: int) -> str:
        p = testhost.run(["python3", "-c", FAR, testhost.host_ip4, str(port)], stdout=subprocess.PIPE, text=True)
        return p.communicate(timeout=15)[0].strip()
    bare, port = _listen(net_agent, False, 1)
    assert far(port) == "HELLO"                                # bare: the test host connects
    bare.wait(10)
    agent, port = _listen(net_agent, True, 2)
    assert far(port) in ("TimeoutError", "timeout")          # inside: not even the handshake
    local = subprocess.run([sys.executable, "-c", FAR, "127.0.0.1", str(port)], capture_output=True, text=True,
                           timeout=15)
    assert local.stdout.strip() == "HELLO"                     # loopback still can
    agent.kill()
    agent.wait()
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.rule_id == INBOUND_RULE)
    assert ev and ev[0].h.verdict == Verdict.DENY and ev[0].saddr == testhost.peer_ip4   # the remote peer


LISTEN6 = LISTEN.replace('socket.socket()', 'socket.socket(socket.AF_INET6)').replace('"0.0.0.0"', '"::"')

# the far host puts an extension header (destination options: PadN) before
# TCP: ip6[6] is 60, not TCP; with many, more than the program walks
FAR6 = r"""
import socket, sys
opts = bytes([0, 0, 1, 4, 0, 0, 0, 0])
try:
    s = socket.socket(socket.AF_INET6); s.settimeout(2)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, opts)
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(s.recv(10).decode() or "closed")
except OSError as e:
    print(type(e).__name__)
"""


def test_a_syn_behind_an_ipv6_extension_header_is_refused_too(net_agent, testhost):
    net_agent.tables(rules={INBOUND_RULE: "network.inbound"}, flags=ConfigFlag.INBOUND_LOOPBACK)

    def far(port: int) -> str:
        p = testhost.run(["python3", "-c", FAR6, testhost.host_ip6, str(port)], stdout=subprocess.PIPE, text=True)
        return p.communicate(timeout=15)[0].strip()
    bare, port = _listen(net_agent, False, 1, LISTEN6)
    assert far(port) == "HELLO"                                # bare: the test host connects
    bare.wait(10)
    agent, port = _listen(net_agent, True, 1, LISTEN6)
    try:
        assert far(port) in ("TimeoutError", "timeout")      # inside: not even the handshake
    finally:
        agent.kill()
