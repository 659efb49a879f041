"""cgroup connect4/6 + sendmsg4/6: denied destinations fail with EPERM and
nothing reaches the test host; allowed ones do; events tell what happened."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from pycontain.core.events import ConfigFlag, EventType, Flag, Mode, NetEvent, TcpStateEvent, Verdict

# connect to argv[1]:argv[2], send a few bytes, close
CONNECT = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((h, p))
    s.sendall(b"hello")
    s.close()
print(outcome(f))
"""

# sendto argv[1]:argv[2] argv[3] times on one unconnected UDP socket
UDP_SEND = r"""
h, p, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
def f():
    for i in range(n):
        s.sendto(b"dgram%d" % i, (h, p))
print(outcome(f))
"""

# TCP Fast Open: the destination comes with sendto(MSG_FASTOPEN), no connect()
TFO = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
    s.sendto(b"hello", socket.MSG_FASTOPEN, (h, p))   # blocking: returns once sent
    time.sleep(0.2)
    s.close()
print(outcome(f))
"""

# connect, then hold the connection until the server side has seen it, then close
CONNECT_HOLD = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.create_connection((h, p), timeout=3)
    s.sendall(b"x")
    time.sleep(0.2)
    s.close()
    time.sleep(0.2)
print(outcome(f))
"""

DENY_RULE = 10


def net_events(agent, pid, etype=EventType.CONNECT):
    return [e for e in agent.events if isinstance(e, NetEvent) and e.h.type == etype and e.h.pid == pid]


def test_denied_port_is_eperm_and_the_pool_accepts_nothing(net_agent, testhost):
    net_agent.tables(rules={DENY_RULE: "network.deny_ports[0]"}, ports={3333: (DENY_RULE, 0)})
    pool = testhost.tcp_listener(3333)
    web = testhost.tcp_listener(8080)

    denied = net_agent.python(CONNECT, testhost.peer_ip4, "3333")
    allowed = net_agent.python(CONNECT, testhost.peer_ip4, "8080")

    assert denied.out == "EPERM", denied.err
    assert allowed.out == "ok", allowed.err
    assert web.wait(contains=b"hello")
    assert pool.accepted == 0 and pool.received == b""
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == denied.pid)
    assert len(ev) == 1
    e = ev[0]
    assert (e.h.type, e.h.verdict, e.h.rule_id) == (EventType.CONNECT, Verdict.DENY, DENY_RULE)
    assert (e.daddr, e.dport, e.proto_name, e.family) == (testhost.peer_ip4, 3333, "tcp", socket.AF_INET)
    assert e.h.agent_id == net_agent.agent_id
    ok = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == allowed.pid)
    assert [(x.h.verdict, x.dport) for x in ok] == [(Verdict.ALLOW, 8080)]


def test_denied_cidr_blocks_every_port(net_agent, testhost):
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/{testhost.prefix4}", strict=False)
    net_agent.tables(rules={11: "network.deny[0]"}, deny4=[(net, 11)])
    web = testhost.tcp_listener(8080)
    r = net_agent.python(CONNECT, testhost.peer_ip4, "8080")
    assert r.out == "EPERM", r.err
    assert web.accepted == 0
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == r.pid)
    assert [(e.h.verdict, e.h.rule_id) for e in ev] == [(Verdict.DENY, 11)]


def test_ipv6_documentation_range_denied(net_agent, testhost):
    net_agent.tables(rules={12: "network.deny[1]"}, deny6=[(ipaddress.ip_network("2001:db8::/32"), 12)])
    web6 = testhost.tcp_listener(8080, family=6)
    web4 = testhost.tcp_listener(8080, family=4)
    r6 = net_agent.python(CONNECT, testhost.peer_ip6, "8080")
    r4 = net_agent.python(CONNECT, testhost.peer_ip4, "8080")
    assert r6.out == "EPERM", r6.err
    assert r4.out == "ok", r4.err
    assert web6.accepted == 0
    assert web4.wait(accepted=1)
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == r6.pid)
    assert [(e.family, e.daddr, e.h.verdict, e.h.rule_id) for e in ev] == \
        [(socket.AF_INET6, testhost.peer_ip6, Verdict.DENY, 12)]


def test_ipv4_mapped_destination_on_dual_stack_socket_uses_ipv4_rules(net_agent, testhost):
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/32")
    net_agent.tables(rules={13: "network.deny[2]", 14: "network.deny_ports[1]"},
                     deny4=[(net, 13)], ports={3333: (14, 14)})
    web = testhost.tcp_listener(8080)
    mapped = f"::ffff:{testhost.peer_ip4}"
    tcp = net_agent.python(CONNECT, mapped, "8080")
    udp = net_agent.python(UDP_SEND, mapped, "3333", "1")
    assert tcp.out == "EPERM", tcp.err
    assert udp.out == "EPERM", udp.err
    assert web.accepted == 0
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == tcp.pid)
    assert len(ev) == 1
    assert ev[0].family == socket.AF_INET6 and ev[0].h.flags & Flag.V4_MAPPED
    assert ev[0].daddr == testhost.peer_ip4 and ev[0].h.rule_id == 13
    # udpv6_sendmsg hands mapped destinations to udp_sendmsg before its own
    # hook: sendmsg4 judges them, as plain IPv4
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == udp.pid)
    assert [(e.h.type, e.h.rule_id, e.daddr) for e in ev] == [(EventType.SEND, 14, testhost.peer_ip4)]


def test_udp_sendto_denied_port_is_eperm_and_nothing_arrives(net_agent, testhost):
    net_agent.tables(rules={15: "network.deny_ports[2]"}, ports={5353: (0, 15)})
    denied_l = testhost.udp_listener(5353)
    tcp_same_port = testhost.tcp_listener(5353)
    r = net_agent.python(UDP_SEND, testhost.peer_ip4, "5353", "3")
    t = net_agent.python(CONNECT, testhost.peer_ip4, "5353")
    assert r.out == "EPERM", r.err
    assert t.out == "ok", t.err        # the rule is for UDP only
    assert tcp_same_port.wait(accepted=1)
    assert denied_l.accepted == 0 and denied_l.received == b""
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == r.pid)
    assert [(e.h.type, e.h.verdict, e.proto_name, e.dport) for e in ev] == \
        [(EventType.SEND, Verdict.DENY, "udp", 5353)]


def test_allowed_udp_sends_arrive_and_are_reported_once_per_destination(net_agent, testhost):
    net_agent.tables()
    l = testhost.udp_listener(5000)
    r = net_agent.python(UDP_SEND, testhost.peer_ip4, "5000", "20")
    assert r.out == "ok", r.err
    assert l.wait(accepted=20)
    net_agent.drain(0.3)
    sends = net_events(net_agent, r.pid, EventType.SEND)
    assert [(e.h.verdict, e.dport, e.daddr) for e in sends] == [(Verdict.ALLOW, 5000, testhost.peer_ip4)]


def test_tcp_fast_open_sendto_is_judged_like_connect(net_agent, testhost):
    net_agent.tables(rules={16: "network.deny_ports[3]"}, ports={3333: (16, 0)})
    pool = testhost.tcp_listener(3333)
    web = testhost.tcp_listener(8080)
    denied = net_agent.python(TFO, testhost.peer_ip4, "3333")
    allowed = net_agent.python(TFO, testhost.peer_ip4, "8080")
    assert denied.out == "EPERM", denied.err
    assert allowed.out == "ok", allowed.err
    assert web.wait(contains=b"hello")
    assert pool.accepted == 0
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == denied.pid)
    assert [(e.h.verdict, e.h.rule_id, e.dport) for e in ev] == [(Verdict.DENY, 16, 3333)]


def test_default_deny_allows_only_the_allow_list(net_agent, testhost):
    net4 = ipaddress.ip_network(f"{testhost.peer_ip4}/{testhost.prefix4}", strict=False)
    net_agent.tables(flags=ConfigFlag.NET_DEFAULT_DENY, rules={17: "network.allow[0]"}, allow4=[(net4, 17)])
    web4 = testhost.tcp_listener(8080)
    web6 = testhost.tcp_listener(8080, family=6)
    ok = net_agent.python(CONNECT, testhost.peer_ip4, "8080")
    no = net_agent.python(CONNECT, testhost.peer_ip6, "8080")
    assert ok.out == "ok", ok.err
    assert no.out == "EPERM", no.err
    assert web4.wait(accepted=1)
    assert web6.accepted == 0
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == no.pid)
    assert [(e.h.verdict, e.h.rule_id) for e in ev] == [(Verdict.DENY, 1)]   # "network.default"


def test_monitor_mode_lets_it_through_and_reports_would_deny(net_agent, testhost):
    net_agent.tables(mode=Mode.MONITOR, rules={18: "network.deny_ports[4]"}, ports={3333: (18, 0)})
    pool = testhost.tcp_listener(3333)
    r = net_agent.python(CONNECT, testhost.peer_ip4, "3333")
    assert r.out == "ok", r.err
    assert pool.wait(contains=b"hello")
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.pid == r.pid)
    assert [(e.h.verdict, e.h.rule_id) for e in ev] == [(Verdict.WOULD_DENY, 18)]


def test_process_outside_the_agent_cgroup_is_untouched(net_agent, testhost):
    net_agent.tables(rules={19: "network.deny_ports[5]"}, ports={3333: (19, 0)})
    pool = testhost.tcp_listener(3333)
    outside = net_agent.python(CONNECT, testhost.peer_ip4, "3333", inside=False)
    assert outside.out == "ok", outside.err
    assert pool.wait(contains=b"hello")
    net_agent.drain(0.3)
    assert [e for e in net_agent.events if e.h.pid == outside.pid] == []


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_state_changes_of_an_agent_connection_are_reported(net_agent, testhost, family):
    """Followed by the sock_ops program on the agent cgroup (connect.c)."""
    peer, host = (testhost.peer_ip4, testhost.host_ip4) if family == 4 else (testhost.peer_ip6, testhost.host_ip6)
    net_agent.tables()
    web = testhost.tcp_listener(8080, family)
    r = net_agent.python(CONNECT_HOLD, peer, "8080")
    assert r.out == "ok", r.err
    assert web.wait(contains=b"x")
    states = net_agent.wait_for(lambda e: isinstance(e, TcpStateEvent) and e.h.pid == r.pid
                                and e.newstate == 7)   # TCP_CLOSE: the last one
    assert states
    seq = [(e.oldstate, e.newstate) for e in net_agent.events if isinstance(e, TcpStateEvent) and e.h.pid == r.pid]
    assert seq[0] == (2, 1)          # SYN_SENT -> ESTABLISHED (softirq: matched by socket)
    assert {n for _o, n in seq} == {1, 7}   # only ESTABLISHED and CLOSE are reported
    assert seq[-1][1] == 7
    e = states[0]
    assert (e.daddr, e.dport, e.h.agent_id) == (peer, 8080, net_agent.agent_id)
    assert e.sport != 0 and e.saddr == host


def test_policy_reload_removes_stale_entries(net_agent, testhost):
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/32")
    net_agent.tables(rules={20: "network.deny[3]", 21: "network.deny_ports[6]"},
                     deny4=[(net, 20)], ports={8080: (21, 21)})
    web = testhost.tcp_listener(8080)
    before = net_agent.python(CONNECT, testhost.peer_ip4, "8080")
    net_agent.tables(rules={22: "network.deny_ports[0]"}, ports={3333: (22, 0)})
    after = net_agent.python(CONNECT, testhost.peer_ip4, "8080")
    assert (before.out, after.out) == ("EPERM", "ok"), (before.err, after.err)
    assert web.wait(accepted=1)
    tries = {name: len(list(net_agent.probes.bpf[name.encode()].keys())) for name in ("pc_deny4", "pc_allow4")}
    assert tries == {"pc_deny4": 0, "pc_allow4": 0}
    ports = net_agent.probes.bpf[b"pc_ports"]
    assert (ports[ports.Key(8080)].tcp_rule, ports[ports.Key(3333)].tcp_rule) == (0, 22)


def test_untracked_cgroup_is_no_longer_judged(net_agent, testhost):
    net_agent.tables(rules={23: "network.deny_ports[7]"}, ports={3333: (23, 0)})
    pool = testhost.tcp_listener(3333)
    assert net_agent.python(CONNECT, testhost.peer_ip4, "3333").out == "EPERM"
    net_agent.probes.untrack_cgroup(net_agent.path)       # detaches our cgroup programs
    r = net_agent.python(CONNECT, testhost.peer_ip4, "3333")
    assert r.out == "ok", r.err
    assert pool.wait(accepted=1)
    net_agent.probes.track_cgroup(net_agent.path, net_agent.agent_id)   # the fixture untracks again


FOREIGN = r"""
BPF_ARRAY(calls, u64, 1);
int foreign_connect4(struct bpf_sock_addr *ctx) {
    int zero = 0;
    u64 *n = calls.lookup(&zero);
    if (n) __sync_fetch_and_add(n, 1);
    return 1;
}
"""


def test_programs_already_on_the_cgroup_keep_running(net_agent, testhost):
    """Another tool's connect4 program attached first (ALLOW_MULTI) still runs
    while ours is attached, and is still there after ours is detached."""
    import ctypes
    import os

    from bcc import BPF, BPFAttachType, BPFProgType

    from pycontain.kernel.cgroup_attach import BPF_F_ALLOW_MULTI

    probes, path = net_agent.probes, net_agent.path
    probes.untrack_cgroup(path)
    other = BPF(text=FOREIGN.encode())
    fn = other.load_func(b"foreign_connect4", BPFProgType.CGROUP_SOCK_ADDR,
                         attach_type=BPFAttachType.CGROUP_INET4_CONNECT)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    BPF.attach_func(fn, fd, BPFAttachType.CGROUP_INET4_CONNECT, BPF_F_ALLOW_MULTI)
    try:
        net_agent.tables(rules={24: "network.deny_ports[8]"}, ports={3333: (24, 0)})
        probes.track_cgroup(path, net_agent.agent_id)
        denied = net_agent.python(CONNECT, testhost.peer_ip4, "3333")
        probes.untrack_cgroup(path)
        after = net_agent.python(CONNECT, testhost.peer_ip4, "3333")
        assert (denied.out, after.out) == ("EPERM", "ECONNREFUSED")   # nothing listens on 3333
        assert other[b"calls"][ctypes.c_int(0)].value == 2              # it saw both connects
    finally:
        BPF.detach_func(fn, fd, BPFAttachType.CGROUP_INET4_CONNECT)
        os.close(fd)
        other.cleanup()
        probes.track_cgroup(path, net_agent.agent_id)   # the fixture untracks
