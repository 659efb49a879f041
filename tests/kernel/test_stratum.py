"""cgroup_skb egress: mining JSON-RPC is dropped whatever the port; other
payload passes. Checked at the listener: the stratum bytes never arrive."""

from __future__ import annotations

import socket

from pycontain.core.events import ConfigFlag, Mode, StratumEvent, Verdict

# connect, send argv[3] (hex), wait, reset the connection (no orphan retransmitting)
SEND_TCP = r"""
import struct
h, p, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
def f():
    s = socket.create_connection((h, p), timeout=3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(data)
    time.sleep(0.3)
    s.close()
print(outcome(f))
"""

SEND_UDP = r"""
h, p, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(data, (h, p))
print(outcome(f))
"""

SUBSCRIBE = b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer-multi/1.3.7"]}\n'
AUTHORIZE = b'{"params":["wallet.rig1","x"],"id":2,"method":"mining.authorize"}\n'
XMRIG_LOGIN = (b'{"id":1,"jsonrpc":"2.0","method" :\t"login","params":{"login":"4' + b"A" * 94 +
               b'","pass":"x","agent":"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.4.0",'
               b'"algo":["rx/0","cn/r"]}}\n')
ETH_LOGIN = b'{"worker": "eth1.0", "jsonrpc": "2.0", "params": ["0xabc", "x"], "id": 2, "method": "eth_submitLogin"}\n'
GETWORK_HTTP = (b"POST / HTTP/1.1\r\nHost: pool\r\nContent-Type: application/json\r\n\r\n"
                b'{"jsonrpc":"2.0","method":"eth_submitWork","params":["0x1","0x2","0x3"],"id":73}')
HTTP = b"GET /index.html HTTP/1.1\r\nHost: example\r\nUser-Agent: mining.subscribe-guide\r\n\r\n"
PLAIN_LOGIN = b'{"id":1,"method":"login","params":{"user":"bob","password":"hunter2"}}\n'


def stratum_events(agent, pid):
    return [e for e in agent.events if isinstance(e, StratumEvent) and e.h.pid == pid]


def send(agent, host, payload: bytes, port: int = 443, *, family: int = 4, udp: bool = False, inside=True):
    ip = host.peer_ip4 if family == 4 else host.peer_ip6
    return agent.python(SEND_UDP if udp else SEND_TCP, ip, str(port), payload.hex(), inside=inside)


def test_stratum_on_443_is_dropped_and_http_passes(net_agent, testhost):
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    l = testhost.tcp_listener(443)
    miner = send(net_agent, testhost, SUBSCRIBE)
    web = send(net_agent, testhost, HTTP)
    assert miner.out == "ok" and web.out == "ok", (miner.err, web.err)
    assert l.wait(contains=HTTP)
    assert l.accepted == 2                     # the handshake is not payload: it passes
    assert b"mining" not in l.received.replace(HTTP, b"")
    ev = net_agent.wait_for(lambda e: isinstance(e, StratumEvent) and e.h.pid == miner.pid)
    assert len(ev) == 1
    e = ev[0]
    assert (e.h.verdict, e.h.rule_id, e.h.agent_id) == (Verdict.DENY, 2, net_agent.agent_id)   # 2: network.stratum
    assert (e.daddr, e.dport, e.proto_name) == (testhost.peer_ip4, 443, "tcp")
    assert b'"mining.subscribe"' in e.payload and len(e.payload) <= 64
    assert e.h.comm.startswith(b"python")
    assert stratum_events(net_agent, web.pid) == []


def test_every_mining_dialect_is_dropped(net_agent, testhost):
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    l = testhost.tcp_listener(443)
    runs = {name: send(net_agent, testhost, payload) for name, payload in
            [("authorize", AUTHORIZE), ("xmrig", XMRIG_LOGIN), ("eth", ETH_LOGIN), ("getwork", GETWORK_HTTP)]}
    control = send(net_agent, testhost, PLAIN_LOGIN)
    assert l.wait(contains=PLAIN_LOGIN)        # a JSON "login" without miner fields is not mining
    got = l.received
    for payload in (AUTHORIZE, XMRIG_LOGIN, ETH_LOGIN, GETWORK_HTTP):
        assert payload not in got
    assert b"mining" not in got and b"XMRig" not in got and b"eth_" not in got
    for name, r in runs.items():
        ev = net_agent.wait_for(lambda e, pid=r.pid: isinstance(e, StratumEvent) and e.h.pid == pid)
        assert [x.h.verdict for x in ev] == [Verdict.DENY], name
    assert stratum_events(net_agent, control.pid) == []


def test_stratum_over_ipv6_and_udp_is_dropped(net_agent, testhost):
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    l6 = testhost.tcp_listener(443, family=6)
    u = testhost.udp_listener(3478)
    tcp6 = send(net_agent, testhost, SUBSCRIBE, family=6)
    udp = send(net_agent, testhost, SUBSCRIBE, port=3478, udp=True)
    ok = send(net_agent, testhost, b"hello over udp", port=3478, udp=True)
    assert u.wait(contains=b"hello over udp")
    assert l6.accepted == 1 and b"mining" not in l6.received
    assert u.accepted == 1 and b"mining" not in u.received
    ev6 = net_agent.wait_for(lambda e: isinstance(e, StratumEvent) and e.h.pid == tcp6.pid)
    assert [(e.family, e.daddr) for e in ev6] == [(socket.AF_INET6, testhost.peer_ip6)]
    evu = net_agent.wait_for(lambda e: isinstance(e, StratumEvent) and e.h.pid == udp.pid)
    assert [(e.proto_name, e.dport) for e in evu] == [("udp", 3478)]
    assert ok.out == "ok"


def test_monitor_mode_passes_stratum_and_reports_would_deny(net_agent, testhost):
    net_agent.tables(mode=Mode.MONITOR, flags=ConfigFlag.DETECT_STRATUM)
    l = testhost.tcp_listener(443)
    r = send(net_agent, testhost, SUBSCRIBE)
    assert l.wait(contains=SUBSCRIBE)
    ev = net_agent.wait_for(lambda e: isinstance(e, StratumEvent) and e.h.pid == r.pid)
    assert [e.h.verdict for e in ev] == [Verdict.WOULD_DENY]


def test_detection_off_or_outside_the_agent_passes(net_agent, testhost):
    l = testhost.tcp_listener(443)
    net_agent.tables()
    off = send(net_agent, testhost, SUBSCRIBE)
    assert l.wait(contains=SUBSCRIBE)
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    outside = send(net_agent, testhost, AUTHORIZE, inside=False)
    assert l.wait(contains=AUTHORIZE)
    net_agent.drain(0.3)
    assert stratum_events(net_agent, off.pid) == [] and stratum_events(net_agent, outside.pid) == []
