"""cgroup_skb egress (ebpf/egress.c): every packet of an agent judged on its
real destination. Each test first shows the move works from outside the
agent cgroup (bare), then that it fails inside, checked from the far side."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from pycontain.core.events import EventType, Flag, NetEvent, Verdict
from pycontain.core.kernel_rules import AddrRule

DENY = 40

# ICMP echo with a payload on an unprivileged ping socket: no connect/sendmsg hook runs
PING = r"""
h = sys.argv[1]
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01" + b"EXFIL-PING", (h, 0))
    time.sleep(0.3)
print(outcome(f))
"""

# a bind shell: listen, accept one connection from outside, answer it
BIND = r"""
s = socket.socket()
s.bind(("0.0.0.0", 0)); s.listen(1); s.settimeout(6)   # a free port: runs in parallel never collide
print("listening", s.getsockname()[1], flush=True)
def f():
    c, _ = s.accept()
    c.sendall(b"SHELL$ ")
    time.sleep(0.5)
print(outcome(f), flush=True)
"""

# UDP with an IPv4 loose source route through argv[1] to argv[1] (first hop = final)
LSRR = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hop = socket.inet_aton(h)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 0x83, 7, 4]) + hop)
    s.sendto(b"ROUTED", (h, p))
print(outcome(f))
"""

UDP = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"PLAIN", (h, p))
print(outcome(f))
"""


@pytest.fixture
def ping_group():
    """Unprivileged ping sockets for everyone while the test runs (restored after)."""
    path = "/proc/sys/net/ipv4/ping_group_range"
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write("0 2147483647")
    yield
    with open(path, "w") as f:
        f.write(old.replace("\t", " "))


def _icmp_sniffer(testhost):
    """A raw ICMP socket in the test host's namespace: sees every echo that arrives."""
    from pyroute2 import netns
    s = netns.create_socket(testhost.netns, family=socket.AF_INET, socket_type=socket.SOCK_RAW,
                            proto=socket.IPPROTO_ICMP, flags=0)
    s.settimeout(0.2)
    return s


def _seen(sniffer, marker: bytes, wait: float = 1.5) -> int:
    n, end = 0, time.monotonic() + wait
    while time.monotonic() < end:
        try:
            data = sniffer.recv(4096)
        except TimeoutError:
            continue
        n += marker in data
    return n


def _deny_host(net_agent, testhost, **kw):
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/32")
    return net_agent.tables(rules={DENY: "network.deny[0]"}, deny4=[(net, DENY)], **kw)


def test_icmp_echo_on_a_ping_socket_is_dropped(net_agent, testhost, ping_group):
    _deny_host(net_agent, testhost)
    sniffer = _icmp_sniffer(testhost)
    bare = net_agent.python(PING, testhost.peer_ip4, inside=False)
    assert bare.out == "ok", bare.err
    assert _seen(sniffer, b"EXFIL-PING") >= 1            # the move works bare
    agent = net_agent.python(PING, testhost.peer_ip4)
    assert _seen(sniffer, b"EXFIL-PING") == 0            # no echo reached the far side
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.type == EventType.PACKET)
    assert [(e.h.verdict, e.h.rule_id, e.daddr, e.protocol) for e in ev][:1] == \
        [(Verdict.DENY, DENY, testhost.peer_ip4, socket.IPPROTO_ICMP)]
    assert ev[0].h.pid == agent.pid


def test_replies_of_a_bind_shell_to_a_denied_peer_are_dropped(net_agent, testhost):
    _deny_host(net_agent, testhost)

    def attack(inside: bool) -> bytes:
        p = net_agent.popen([__import__("sys").executable, "-c", _client_prelude() + BIND], inside=inside)
        word, port = p.stdout.readline().split()
        assert word == "listening"
        got = testhost.run(["python3", "-c", _FAR_CLIENT, testhost.host_ip4, str(port)],
                           stdout=__import__("subprocess").PIPE, text=True)
        out, _ = got.communicate(timeout=15)
        p.kill()
        p.wait()
        return out.strip().encode()

    assert attack(False) == b"SHELL$"               # bare: the far side gets a prompt
    assert attack(True) in (b"timeout", b"refused", b"")  # agent: not even the handshake


def test_source_routed_packets_are_dropped(net_agent, testhost):
    net_agent.tables(rules={DENY: "network.deny[0]", 41: "network.source_route"})
    testhost.run(["sysctl", "-qw", "net.ipv4.conf.all.accept_source_route=1",
                  "net.ipv4.conf.default.accept_source_route=1"]).wait()
    testhost.run(["sh", "-c", "for f in /proc/sys/net/ipv4/conf/*/accept_source_route; do echo 1 > $f; done"]).wait()
    bare_l = testhost.udp_listener(47011)
    bare = net_agent.python(LSRR, testhost.peer_ip4, "47011", inside=False)
    assert bare.out == "ok", bare.err
    assert bare_l.wait(contains=b"ROUTED")                 # the move works bare
    l = testhost.udp_listener(47012)
    net_agent.python(LSRR, testhost.peer_ip4, "47012")
    plain = net_agent.python(UDP, testhost.peer_ip4, "47012")
    assert plain.out == "ok"
    assert l.wait(contains=b"PLAIN")                       # plain datagrams still pass
    assert b"ROUTED" not in l.received
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.type == EventType.PACKET)
    assert any(e.h.flags & Flag.SOURCE_ROUTED and e.h.rule_id == 41 for e in ev)


def test_address_and_port_rule_is_enforced_in_the_kernel(net_agent, testhost):
    """A deny rule on one address+port: that port is dropped for every
    protocol path, other ports of the address pass, no user-space kill."""
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/32")
    net_agent.tables(rules={DENY: "network.deny[0]"},
                     addr_rules=[AddrRule("deny", DENY, "udp", ((47021, 47021),), (net,))])
    denied = testhost.udp_listener(47021)
    other = testhost.udp_listener(47022)
    bare = net_agent.python(UDP, testhost.peer_ip4, "47021", inside=False)
    assert denied.wait(contains=b"PLAIN") and bare.out == "ok"
    denied_before = denied.received
    r = net_agent.python(UDP, testhost.peer_ip4, "47021")
    ok = net_agent.python(UDP, testhost.peer_ip4, "47022")
    assert r.out == "EPERM" and ok.out == "ok"
    assert other.wait(contains=b"PLAIN")
    assert denied.received == denied_before


def test_loopback_aliases_are_judged_as_loopback(net_agent):
    """A rule denying 127.0.0.1 holds for 127.0.0.2, 0.0.0.0, ::ffff:127.0.0.1 and ::1."""
    srv6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv6.bind(("::", 0))
    srv6.listen(16)
    port = srv6.getsockname()[1]
    net_agent.tables(rules={DENY: "network.deny[0]"}, deny4=[(ipaddress.ip_network("127.0.0.1/32"), DENY)])
    code = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
    s.settimeout(2)
    s.connect((h, p))
print(outcome(f))
"""
    for h in ("127.0.0.2", "0.0.0.0", "::ffff:127.0.0.1", "::1", "::"):
        bare = net_agent.python(code, h, str(port), inside=False)
        assert bare.out == "ok", (h, bare.err)
        r = net_agent.python(code, h, str(port))
        assert r.out == "EPERM", (h, r.out, r.err)
    srv6.close()


_FAR_CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.settimeout(3)
    print(s.recv(100).decode().strip())
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def _client_prelude() -> str:
    from conftest import CLIENT
    return CLIENT


# an agent's own server and a client of it whose source port is a denied port
# (default's mining ports, all inside Linux's ephemeral range)
ACCEPTED_REPLY = r"""
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(("127.0.0.1", 45560)); c.settimeout(3)
try:
    c.connect(l.getsockname()); a, _ = l.accept(); a.sendall(b"hi"); print("reply", c.recv(2))
except OSError as e:
    print("failed", e)
"""


def test_replies_of_an_accepted_connection_are_not_judged_by_the_peers_port(privileged):
    """Port rules are for the destinations an agent chooses: the replies of a
    connection it accepted go to the peer's ephemeral port (here 45560, a
    denied mining port); they reach it, bare and under `run`."""
    import subprocess
    import sys
    bare = subprocess.run([sys.executable, "-c", ACCEPTED_REPLY], capture_output=True, text=True, timeout=30)
    assert "reply b'hi'" in bare.stdout, bare.stdout + bare.stderr
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "run", "--no-daemon", "--", sys.executable, "-c",
                        ACCEPTED_REPLY], capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert "reply b'hi'" in r.stdout, r.stdout + r.stderr
