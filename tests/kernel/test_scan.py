"""Scan detection in the kernel (ebpf/detect.bpf.h, issue 12 part 6): past
the per-agent limits new destinations are refused at connect (EPERM) and
dropped in egress; the far side counts the SYNs that arrived."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pycontain.core.events import ConfigFlag, NetEvent, Verdict

SCAN_RULE = 61
MAX_HOSTS, MAX_PORTS = 256, 64

SCAN = r"""
h, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
for port in range(first, first + n):
    s = socket.socket(); s.settimeout(1)
    r = outcome(lambda: s.connect((h, port)))
    res[r] = res.get(r, 0) + 1
    s.close()
print(" ".join(f"{k}={v}" for k, v in sorted(res.items())))
"""

HTTP = r"""
import json
targets = json.loads(sys.argv[1])
ok = 0
for h, port, times in targets:
    for _ in range(times):
        s = socket.create_connection((h, port), timeout=3)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"); s.close(); ok += 1
print(ok)
"""


class SynCounter:
    """A raw TCP socket in the test host's netns: distinct destination ports of arriving SYNs."""

    def __init__(self, testhost):
        from pyroute2 import netns
        self.sock = netns.create_socket(testhost.netns, family=socket.AF_INET, socket_type=socket.SOCK_RAW,
                                        proto=socket.IPPROTO_TCP, flags=0)
        self.sock.settimeout(0.2)
        self.ports: set[int] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pkt = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            ihl = (pkt[0] & 0xF) * 4
            if len(pkt) >= ihl + 14 and pkt[ihl + 13] & 0x12 == 0x02:
                self.ports.add(int.from_bytes(pkt[ihl + 2: ihl + 4], "big"))

    def stop(self) -> set[int]:
        time.sleep(0.5)
        self._stop.set()
        self._t.join(2)
        self.sock.close()
        return self.ports


@pytest.fixture
def scan_agent(net_agent):
    net_agent.tables(rules={SCAN_RULE: "network.scan"}, flags=ConfigFlag.SCAN,
                     scan_limits=(MAX_HOSTS, MAX_PORTS, 60 * 10**9))
    return net_agent


def test_connect_scan_stops_at_the_port_limit(scan_agent, testhost):
    bare_syns = SynCounter(testhost)
    bare = scan_agent.python(SCAN, testhost.peer_ip4, "20000", "1100", inside=False, timeout=120)
    assert "EPERM" not in bare.out, bare.out
    assert len({p for p in bare_syns.stop() if 20000 <= p < 21100}) == 1100   # bare: every port probed
    syns = SynCounter(testhost)
    agent = scan_agent.python(SCAN, testhost.peer_ip4, "30000", "1100", timeout=120)
    seen = {p for p in syns.stop() if 30000 <= p < 31100}
    assert len(seen) == MAX_PORTS, sorted(seen)[:5]       # nothing past the threshold reached the far side
    assert f"EPERM={1100 - MAX_PORTS}" in agent.out, agent.out
    ev = scan_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.rule_id == SCAN_RULE)
    assert ev and ev[0].h.verdict == Verdict.DENY and ev[0].daddr == testhost.peer_ip4


def test_many_requests_within_the_limits_are_untouched(scan_agent, testhost):
    """Benign: 8 services on 2 addresses of the test host, 25 requests each."""
    import json
    ports = list(range(47200, 47208))
    listeners = [testhost.tcp_listener(p) for p in ports] + [testhost.tcp_listener(p, family=6) for p in ports]
    targets = [[testhost.peer_ip4, p, 25] for p in ports] + [[testhost.peer_ip6, p, 25] for p in ports]
    r = scan_agent.python(HTTP, json.dumps(targets), timeout=120)
    assert r.out == str(25 * 16), r.err
    assert all(lst.wait(accepted=25) for lst in listeners)
    assert not scan_agent.wait_for(lambda e: isinstance(e, NetEvent) and e.h.verdict != Verdict.ALLOW,
                                   timeout=0.5)


def test_a_scan_timed_across_the_window_boundary_gets_no_second_allowance(net_agent, testhost):
    """The count slides: 64 ports just before the (2 s) window ends and 64
    just after are one burst of 128, not two fresh allowances of 64."""
    window_s = 2.0
    net_agent.tables(rules={SCAN_RULE: "network.scan"}, flags=ConfigFlag.SCAN,
                     scan_limits=(MAX_HOSTS, MAX_PORTS, int(window_s * 10**9)))

    def two_bursts(first: int, inside: bool) -> int:
        syns = SynCounter(testhost)
        net_agent.python(SCAN, testhost.peer_ip4, str(first), str(MAX_PORTS), inside=inside, timeout=60)
        time.sleep(window_s * 1.05)            # just past the boundary of the window the burst opened
        net_agent.python(SCAN, testhost.peer_ip4, str(first + MAX_PORTS), str(MAX_PORTS), inside=inside,
                         timeout=60)
        return len({p for p in syns.stop() if first <= p < first + 2 * MAX_PORTS})

    assert two_bursts(40000, inside=False) == 2 * MAX_PORTS        # bare: both bursts reach the far side
    reached = two_bursts(41000, inside=True)
    # a fixed window would let all 128 through; the sliding count lets the
    # second burst have only what the first one's age has freed (a few ports)
    assert MAX_PORTS <= reached < MAX_PORTS + MAX_PORTS // 4, reached
