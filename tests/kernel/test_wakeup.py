"""Adaptive ring-buffer wake-up (pc_wake_flags in ebpf/common.bpf.h).

Ordinary records are queued without waking the consumer, which drains the ring
on a short timer; a verdict or a held exec wakes it at once. Checked from outside:
when a consumer blocked in the kernel's ring-buffer wait actually wakes.
"""

from __future__ import annotations

import socket
import threading
import time

from conftest import CLIENT, PY

from pycontain.core.events import RULE_HOLD, EventType, ExecEvent, Flag, NetEvent, Verdict

# wait argv[2] seconds (the exec that started us is long drained), then send
UDP_SEND = r"""
time.sleep(float(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(outcome(lambda: s.sendto(b"x", ("127.0.0.1", int(sys.argv[1]))) and None))
"""


def _udp_sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _blocked_wait(probes, seconds: float) -> tuple[threading.Thread, list[float]]:
    """A consumer blocked in the kernel wait itself (no drain timer)."""
    woke: list[float] = []

    def wait():
        probes.bpf.ring_buffer_poll(int(seconds * 1000))
        woke.append(time.monotonic())
    th = threading.Thread(target=wait, daemon=True)
    th.start()
    time.sleep(0.2)   # let it enter epoll_wait
    return th, woke


def test_ordinary_records_wait_for_the_drain_not_wake_the_consumer(net_agent):
    probes = net_agent.probes
    probes.bpf[b"pc_wake"].clear()   # no CPU is near its every-Nth forced wake-up
    sink = _udp_sink()
    try:
        client = net_agent.popen([PY, "-c", CLIENT + UDP_SEND, str(sink.getsockname()[1]), "1.5"])
        time.sleep(0.7)
        probes.poll(0)                   # the client's exec record is drained
        th, woke = _blocked_wait(probes, 3.0)
        t0 = time.monotonic()
        out, _err = client.communicate(timeout=10)
        assert client.returncode == 0 and out.strip() == "ok", out
        th.join(5)
        # the send (at ~1.5 s) did not wake the blocked wait: it ran to its timeout
        assert woke and woke[0] - t0 > 2.0
        assert sink.recv(16) == b"x"
        # Probes.poll drains what was queued silently
        probes.poll(0)
        sends = [e for e in net_agent.events if isinstance(e, NetEvent) and e.h.type is EventType.SEND
                 and e.dport == sink.getsockname()[1]]
        assert sends and sends[0].h.verdict is Verdict.ALLOW
    finally:
        sink.close()


def test_a_verdict_wakes_the_consumer_at_once(net_agent):
    probes = net_agent.probes
    sink = _udp_sink()
    port = sink.getsockname()[1]
    net_agent.tables(rules={30: "network.deny_ports[0]"}, ports={port: (0, 30)})
    probes.bpf[b"pc_wake"].clear()
    try:
        client = net_agent.popen([PY, "-c", CLIENT + UDP_SEND, str(port), "1.0"])
        time.sleep(0.5)
        probes.poll(0)
        th, woke = _blocked_wait(probes, 10.0)
        t0 = time.monotonic()
        out, _err = client.communicate(timeout=10)
        assert out.strip() == "EPERM", out
        th.join(12)
        # woken by the denied send, long before the 10 s timeout
        assert woke and woke[0] - t0 < 5.0
        denied = [e for e in net_agent.events if isinstance(e, NetEvent) and e.dport == port]
        assert denied and denied[0].h.verdict is Verdict.DENY and denied[0].h.rule_id == 30
    finally:
        sink.close()


def test_an_allowed_exec_waits_for_the_drain(net_agent):
    """Every exec whose verdict user space could change is held (next test):
    an allowed one needs no wake-up (waking per exec cost agent exec loops
    8-12 %, scripts/bench_wakeup.py)."""
    probes = net_agent.probes
    probes.bpf[b"pc_wake"].clear()
    th, woke = _blocked_wait(probes, 2.5)
    t0 = time.monotonic()
    proc = net_agent.popen(["/bin/true"])
    proc.communicate(timeout=10)
    th.join(5)
    assert woke and woke[0] - t0 > 2.0      # ran to its timeout
    probes.poll(0)
    assert any(isinstance(e, ExecEvent) and e.filename == b"/bin/true" for e in net_agent.events)


def test_a_held_exec_wakes_the_consumer_at_once(net_agent):
    """User space must judge a held program (ssh -R) before it may run."""
    probes = net_agent.probes
    net_agent.tables(exec_names={"true": RULE_HOLD})
    probes.bpf[b"pc_wake"].clear()
    th, woke = _blocked_wait(probes, 10.0)
    t0 = time.monotonic()
    proc = net_agent.popen(["/bin/true"])
    th.join(12)
    assert woke and woke[0] - t0 < 5.0
    assert _state(proc.pid) == "T"          # stopped before its first instruction
    probes.poll(0)
    held = [e for e in net_agent.events if isinstance(e, ExecEvent) and e.h.pid == proc.pid]
    assert held and held[0].h.flags & Flag.HELD
    assert probes.release_held(proc.pid)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
