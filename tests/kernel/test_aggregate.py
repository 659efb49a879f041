"""Issue 14 part 3 (ebpf/aggregate.bpf.h): repeat allowed connects to a
destination user space entered in pc_net_quiet are counted in the kernel, not
reported; anything the kernel denies is reported every time, entry or not."""

from __future__ import annotations

import socket

import pytest
from test_connect import CONNECT, CONNECT_HOLD

from pycontain.app.routine import raw_addr
from pycontain.core.events import NetEvent, TcpStateEvent, Verdict
from pycontain.kernel.quiet_maps import QuietKey


@pytest.fixture
def quiet(net_agent):
    yield net_agent
    net_agent.probes.quiet_clear()


def _key(agent, ev: NetEvent) -> QuietKey:
    raw = raw_addr(ev.family, ev.daddr)
    assert raw is not None
    return QuietKey(agent.agent_id, ev.family, ev.protocol, ev.dport, raw)


def _of(agent, pid, cls):
    return [e for e in agent.events if isinstance(e, cls) and e.h.pid == pid]


def test_repeat_allowed_connects_are_counted_not_reported(quiet, testhost):
    quiet.tables()
    web = testhost.tcp_listener(8080)
    first = quiet.python(CONNECT_HOLD, testhost.peer_ip4, "8080")
    assert first.out == "ok", first.err
    assert quiet.wait_for(lambda e: isinstance(e, TcpStateEvent) and e.h.pid == first.pid and e.newstate == 7)
    (ev,) = _of(quiet, first.pid, NetEvent)
    assert quiet.probes.quiet_add(_key(quiet, ev))
    repeats = [quiet.python(CONNECT_HOLD, testhost.peer_ip4, "8080") for _ in range(3)]
    assert [r.out for r in repeats] == ["ok"] * 3
    assert web.wait(accepted=4)                       # the connections happened (seen by the listener)
    quiet.drain(0.3)
    for r in repeats:
        assert _of(quiet, r.pid, NetEvent) == [] and _of(quiet, r.pid, TcpStateEvent) == []
    (count,) = quiet.probes.quiet_read()
    assert count.total == 3


def test_a_denied_connect_is_reported_even_to_a_counted_destination(quiet, testhost):
    quiet.tables()
    testhost.tcp_listener(8080)
    first = quiet.python(CONNECT, testhost.peer_ip4, "8080")
    assert first.out == "ok", first.err
    quiet.drain(0.3)
    (ev,) = _of(quiet, first.pid, NetEvent)
    assert quiet.probes.quiet_add(_key(quiet, ev))
    quiet.tables(rules={21: "network.deny_ports[0]"}, ports={8080: (21, 21)})
    denied = [quiet.python(CONNECT, testhost.peer_ip4, "8080") for _ in range(2)]
    assert [r.out for r in denied] == ["EPERM"] * 2
    quiet.drain(0.3)
    for r in denied:
        (d,) = _of(quiet, r.pid, NetEvent)
        assert (d.h.verdict, d.h.rule_id) == (Verdict.DENY, 21)
    assert [c.total for c in quiet.probes.quiet_read()] == [0]


def test_another_destination_is_still_reported(quiet, testhost):
    quiet.tables()
    testhost.tcp_listener(8080)
    testhost.tcp_listener(8081)
    first = quiet.python(CONNECT, testhost.peer_ip4, "8080")
    quiet.drain(0.3)
    (ev,) = _of(quiet, first.pid, NetEvent)
    assert quiet.probes.quiet_add(_key(quiet, ev))
    other = quiet.python(CONNECT, testhost.peer_ip4, "8081")
    assert other.out == "ok", other.err
    quiet.drain(0.3)
    (o,) = _of(quiet, other.pid, NetEvent)
    assert (o.dport, o.family) == (8081, socket.AF_INET)
