"""The verdict egress.c keeps on an established TCP socket (pc_sk_infos)
is judged again after the rule tables change: a flow allowed and running,
then a policy reload that denies its destination, and the flow's next
segment never reaches the far side (checked at the listener)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from conftest import send_once

from pycontain.core.events import EventType, NetEvent, Verdict

DENY = 40
PRE = 12   # segments before the reload: past PC_VERDICT_KEEP_SEGS, so the verdict is kept

# connect, send PRE small segments, wait for a line on stdin (the test
# rewrote the tables meanwhile), send one more segment
FLOW = r"""
h, p, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((h, p), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(n):
    s.sendall(b"pre%02d;" % i)
    time.sleep(0.02)
print("sent", flush=True)
sys.stdin.readline()
def f():
    s.sendall(b"AFTER-RELOAD;")
    time.sleep(1.0)
print(outcome(f), flush=True)
"""


def _deny_host(net_agent, testhost):
    net = ipaddress.ip_network(f"{testhost.peer_ip4}/32")
    net_agent.tables(rules={DENY: "network.deny[0]"}, deny4=[(net, DENY)])


def _flow(net_agent, testhost, port: int, reload, *, inside: bool = True) -> bool:
    """Run FLOW to the test host, call reload() once its segments arrived,
    then let it send one more: whether that one reached the listener."""
    listener = testhost.tcp_listener(port)
    from conftest import CLIENT
    p = net_agent.popen([sys.executable, "-c", CLIENT + FLOW, testhost.peer_ip4, str(port), str(PRE)],
                        inside=inside, stdin=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == "sent", p.stderr.read()
        assert listener.wait(contains=b"pre%02d;" % (PRE - 1))    # the flow was allowed and ran
        reload()
        p.stdin.write("\n")
        p.stdin.flush()
        p.communicate(timeout=15)
        return listener.wait(contains=b"AFTER-RELOAD;", timeout=2.0)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_kept_verdict_is_judged_again_after_a_reload(net_agent, testhost):
    net_agent.tables()
    # a reload that changes nothing: the kept verdict holds and the flow goes on
    assert _flow(net_agent, testhost, 47031, net_agent.tables)
    # bare: a reload that denies the host does not touch a flow outside the agent
    net_agent.tables()
    assert _flow(net_agent, testhost, 47032, lambda: _deny_host(net_agent, testhost), inside=False)
    # the agent's running, allowed flow: its next segment is dropped
    net_agent.tables()
    assert not _flow(net_agent, testhost, 47033, lambda: _deny_host(net_agent, testhost))
    ev = net_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.type == EventType.PACKET
                            and e.dport == 47033)
    assert ev and ev[0].h.verdict == Verdict.DENY and ev[0].h.rule_id == DENY
    assert ev[0].daddr == testhost.peer_ip4


CONNECT = send_once(b'NEW-CONNECTION;', 0.3)


def test_a_remembered_destination_is_judged_again_after_a_reload(net_agent, testhost):
    """pc_net_judge's per-CPU memo (net.bpf.h): connects to one destination
    are allowed (and remembered), then a reload denies it: the next connect
    is refused, at the listener nothing new arrives."""
    net_agent.tables()
    listener = testhost.tcp_listener(47041)
    for _ in range(5):   # every CPU that runs the client remembers the verdict
        assert net_agent.python(CONNECT, testhost.peer_ip4, "47041").out == "ok"
    assert listener.wait(accepted=5)
    _deny_host(net_agent, testhost)
    bare = net_agent.python(CONNECT, testhost.peer_ip4, "47041", inside=False)
    assert bare.out == "ok" and listener.wait(accepted=6)     # the move works outside the agent
    r = net_agent.python(CONNECT, testhost.peer_ip4, "47041")
    assert r.out == "EPERM"
    assert not listener.wait(accepted=7, timeout=1.0)
