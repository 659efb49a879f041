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


# ---- tolerant parse (issue 12 part 8) --------------------------------------

# send the hex chunks in argv[3:] as separate segments (TCP_NODELAY, a pause between)
SEND_CHUNKS = r"""
import struct
h, p, chunks = sys.argv[1], int(sys.argv[2]), [bytes.fromhex(c) for c in sys.argv[3:]]
def f():
    s = socket.create_connection((h, p), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for c in chunks:
        s.sendall(c)
        time.sleep(0.2)
    time.sleep(0.3)
    s.close()
print(outcome(f))
"""

CN_LOGIN = b'{"id":1,"method":"login","params":{"login":"x","pass":"x"}}\n'
CN_SPACED = b'{ "id" : 1 ,\n  "method"\n :\t "login" ,\r\n "params" : { "login" : "x" , "pass" : "x" } }\n'
CN_NESTED_FIRST = b'{"id":1,"params":{"method":"x","login":"x","pass":"x"},"method":"login"}\n'
CN_NESTED_AFTER = b'{"id":1,"method":"login","params":{"login":"x","pass":"x","opts":{"method":"x"}}}\n'
CN_GETJOB = b'{"id":2,"method":"getjob","params":{"id":"a1"}}\n'
CN_KEEPALIVED = b'{"id":3,"method":"keepalived","params":{"id":"a1"}}\n'
CN_SUBMIT = b'{"id":4,"method":"submit","params":{"id":"a1","job_id":"j7","nonce":"00","result":"ff"}}\n'
NOTIFY = b'{"id":null,"method":"mining.notify","params":["bf","4d16","01"]}\n'
EXTRANONCE = b'{"id":5,"method":"mining.extranonce.subscribe","params":[]}\n'
CN_SPLIT = (b'{"id":1,"method":"lo', b'gin","params":{"login":"x","pass":"x"}}\n')
RPC_BENIGN = b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":1}\n'
HTTP_POST = (b"POST /api HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n"
             b'{"method":"submit","params":{"form":"login"}}')
VARIANTS = {"minimal": CN_LOGIN, "spaced": CN_SPACED, "nested_first": CN_NESTED_FIRST,
            "nested_after": CN_NESTED_AFTER, "getjob": CN_GETJOB, "keepalived": CN_KEEPALIVED,
            "submit": CN_SUBMIT, "notify": NOTIFY, "extranonce": EXTRANONCE}


def send_chunks(agent, host, port: int, chunks, *, inside: bool):
    return agent.python(SEND_CHUNKS, host.peer_ip4, str(port), *(c.hex() for c in chunks), inside=inside)


def test_stratum_variants_arrive_bare_and_are_dropped_under_pycontain(net_agent, testhost):
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    bare, contained = testhost.tcp_listener(0), testhost.tcp_listener(0)
    for name, payload in VARIANTS.items():      # the attack works: every variant reaches a pool bare
        assert send(net_agent, testhost, payload, bare.port, inside=False).out == "ok", name
    assert send_chunks(net_agent, testhost, bare.port, CN_SPLIT, inside=False).out == "ok"
    for name, payload in VARIANTS.items():
        assert bare.wait(contains=payload), name
    assert bare.wait(contains=b"".join(CN_SPLIT))
    runs = {name: send(net_agent, testhost, payload, contained.port) for name, payload in VARIANTS.items()}
    split = send_chunks(net_agent, testhost, contained.port, CN_SPLIT, inside=True)
    assert contained.wait(accepted=len(VARIANTS) + 1)
    net_agent.drain(0.5)
    got = contained.received
    for name, payload in VARIANTS.items():
        assert payload not in got, name
    assert CN_SPLIT[1] not in got                  # the first half alone is not mining: it may pass
    for name, r in [*runs.items(), ("split", split)]:
        ev = net_agent.wait_for(lambda e, pid=r.pid: isinstance(e, StratumEvent) and e.h.pid == pid)
        assert ev and ev[0].h.verdict == Verdict.DENY, name


def test_benign_json_rpc_and_http_pass(net_agent, testhost):
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    l = testhost.tcp_listener(8545)
    runs = [send(net_agent, testhost, p, 8545) for p in (RPC_BENIGN, HTTP_POST, PLAIN_LOGIN)]
    split = send_chunks(net_agent, testhost, 8545, (RPC_BENIGN[:20], RPC_BENIGN[20:]), inside=True)
    for p in (RPC_BENIGN, HTTP_POST, PLAIN_LOGIN):
        assert l.wait(contains=p), p
    assert l.wait(accepted=4) and l.received.count(RPC_BENIGN) == 2
    net_agent.drain(0.3)
    for r in [*runs, split]:
        assert r.out == "ok" and stratum_events(net_agent, r.pid) == []


# a connection opened first, then n TCP connections to its own loopback
# listener, then the mining payload on the first: argv host, port, payload (hex), n
CHURN_THEN_MINE = r"""
import struct
h, p, data, n = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
def f():
    s = socket.create_connection((h, p), timeout=3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.listen(4096)
    for _ in range(n):           # connect + close to its own listener, accepted and closed
        u = socket.create_connection(own.getsockname())
        u.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        u.close()
        own.accept()[0].close()
    s.sendall(data)
    time.sleep(0.3)
    s.close()
print(outcome(f))
"""
OWNER_TABLE = 16384   # pc_sk_owners' entries (net.bpf.h)


def test_churned_sockets_do_not_evict_the_owner_of_a_live_one(net_agent, testhost):
    """The stratum record names the process that owns the mining socket even
    after the agent opened and closed more sockets than the owner table
    holds: a closed socket's owner leaves the table at release, so churn
    cannot push a live socket's out (with the LRU alone it did: the record
    named pid 0; checked on the code before the change)."""
    net_agent.tables(flags=ConfigFlag.DETECT_STRATUM)
    bare = testhost.tcp_listener(4443)
    outside = net_agent.python(CHURN_THEN_MINE, testhost.peer_ip4, "4443", SUBSCRIBE.hex(), "10", inside=False)
    assert outside.out == "ok" and bare.wait(contains=SUBSCRIBE)    # outside an agent the payload gets through
    l = testhost.tcp_listener(443)
    r = net_agent.python(CHURN_THEN_MINE, testhost.peer_ip4, "443", SUBSCRIBE.hex(), str(OWNER_TABLE + 4000))
    assert r.out == "ok", r.err
    assert l.wait(accepted=1) and b"mining" not in l.received
    ev = net_agent.wait_for(lambda e: isinstance(e, StratumEvent) and e.h.agent_id == net_agent.agent_id)
    assert ev and ev[0].h.pid == r.pid and ev[0].h.comm.startswith(b"python")
