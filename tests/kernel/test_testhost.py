"""The netns test host: addresses, reachability, listeners, refusal of routed
or forbidden ranges, and cleanup even after errors."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess

import pytest

from pycontain.core.errors import EnvironmentProblem
from pycontain.demo.testhost import TestHost, first_free_pair, slices


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _link_exists(ifname: str) -> bool:
    return os.path.exists(f"/sys/class/net/{ifname}")


# ---- pure parts (no root) ----------------------------------------------------------

def test_forbidden_and_foreign_ranges_are_refused_before_touching_anything():
    for v4 in ("192.0.2.0/24", "203.0.113.0/25", "10.0.0.0/24", "198.51.0.0/16"):
        with pytest.raises(EnvironmentProblem):
            TestHost(v4_subnet=v4)
    with pytest.raises(EnvironmentProblem):
        TestHost(v6_subnet="fd00::/64")
    with pytest.raises(ValueError):
        TestHost(prefix="Bad-Name")


def test_slices_and_free_pair_skip_routed_networks():
    v4 = ipaddress.ip_network("198.51.100.0/24")
    v6 = ipaddress.ip_network("2001:db8:100::/64")
    s4 = list(slices(v4, 29))
    assert len(s4) == 32 and s4[0] == ipaddress.ip_network("198.51.100.0/29")
    assert list(slices(ipaddress.ip_network("198.51.100.8/30"), 29)) == [ipaddress.ip_network("198.51.100.8/30")]
    taken = [ipaddress.ip_network(f"198.51.100.{8 * k}/29") for k in range(31)]
    pair = first_free_pair(v4, v6, taken + [ipaddress.ip_network("0.0.0.0/0")], random.Random(1))
    assert pair is not None and pair[0] == ipaddress.ip_network("198.51.100.248/29")
    assert first_free_pair(v4, v6, [ipaddress.ip_network("198.51.0.0/16")]) is None
    assert first_free_pair(v4, v6, [ipaddress.ip_network("2001:db8::/32")]) is None


# ---- real namespaces ---------------------------------------------------------------

def test_host_and_peer_addresses_reachability_and_cleanup(privileged):
    with TestHost(prefix="tth") as h:
        name, ifname = h.netns, h.host_ifname
        assert _netns_exists(name) and _link_exists(ifname)
        for ip, allowed in ((h.host_ip4, "198.51.100.0/24"), (h.peer_ip4, "198.51.100.0/24"),
                            (h.host_ip6, "2001:db8::/32"), (h.peer_ip6, "2001:db8::/32")):
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(allowed)
        p = h.run(["ip", "-o", "addr", "show"], stdout=subprocess.PIPE, text=True)
        inside = p.communicate(timeout=10)[0]
        assert h.peer_ip4 in inside and h.peer_ip6 in inside and h.host_ip4 not in inside
        t4, t6, u4 = h.tcp_listener(7000), h.tcp_listener(7000, family=6), h.udp_listener(7001)
        for ip, fam in ((h.peer_ip4, socket.AF_INET), (h.peer_ip6, socket.AF_INET6)):
            with socket.socket(fam) as c:
                c.connect((ip, 7000))
                c.sendall(b"ping")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"d1", (h.peer_ip4, 7001))
            u.sendto(b"d2", (h.peer_ip4, 7001))
        assert t4.wait(contains=b"ping") and t6.wait(contains=b"ping") and u4.wait(accepted=2)
        assert (t4.accepted, t6.accepted, u4.received) == (1, 1, b"d1d2")
        long_running = h.run(["sleep", "60"])
    assert not _netns_exists(name) and not _link_exists(ifname)
    assert long_running.poll() is not None      # killed at close
    net = ipaddress.ip_network(f"{h.peer_ip4}/{h.prefix4}", strict=False)
    routes = subprocess.run(["ip", "route", "show", "table", "all", "to", str(net)],
                            capture_output=True, text=True, check=True).stdout
    assert routes.strip() == ""                 # the connected route went with the veth


def test_cleans_up_after_an_error_inside(privileged):
    names = []
    with pytest.raises(RuntimeError):
        with TestHost(prefix="tth") as h:
            names.append((h.netns, h.host_ifname))
            h.tcp_listener(7000)
            raise RuntimeError("test body failed")
    (name, ifname), = names
    assert not _netns_exists(name) and not _link_exists(ifname)


def test_refuses_a_range_already_routed_on_the_host(privileged):
    with TestHost(prefix="tth") as first:
        taken4 = ipaddress.ip_network(f"{first.peer_ip4}/{first.prefix4}", strict=False)
        second = TestHost(prefix="tth", v4_subnet=str(taken4))
        with pytest.raises(EnvironmentProblem, match="already routed"):
            second.start()
        assert not _netns_exists(second.netns) and not _link_exists(second.host_ifname)


def test_refuses_a_range_routed_in_any_table(privileged):
    """A route in a table no rule uses changes no traffic, but still counts."""
    probe = TestHost(prefix="tth", v4_subnet="198.51.100.0/24")
    with probe:
        free = ipaddress.ip_network(f"{probe.peer_ip4}/{probe.prefix4}", strict=False)
    table = str(50_000 + os.getpid() % 10_000)
    subprocess.run(["ip", "route", "add", "unreachable", str(free), "table", table], check=True)
    try:
        with pytest.raises(EnvironmentProblem, match="already routed"):
            TestHost(prefix="tth", v4_subnet=str(free)).start()
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", str(free), "table", table], check=False)


def test_two_test_hosts_at_once_get_disjoint_ranges(privileged):
    with TestHost(prefix="tth") as a, TestHost(prefix="tth") as b:
        assert a.netns != b.netns
        na = ipaddress.ip_network(f"{a.peer_ip4}/{a.prefix4}", strict=False)
        nb = ipaddress.ip_network(f"{b.peer_ip4}/{b.prefix4}", strict=False)
        assert not na.overlaps(nb)
        la, lb = a.tcp_listener(7000), b.tcp_listener(7000)
        socket.create_connection((a.peer_ip4, 7000), timeout=2).close()
        assert la.wait(accepted=1) and lb.accepted == 0


def test_a_test_host_left_by_a_killed_process_is_reaped(privileged):
    import sys

    from pycontain.demo.testhost import reap_stale

    code = ("import time\nfrom pycontain.demo.testhost import TestHost\n"
            "h = TestHost(prefix='tstl'); h.start()\n"
            "print(h.netns, h.host_ifname, flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        name, ifname = p.stdout.readline().split()
    finally:
        p.kill()
        p.wait()
    assert _netns_exists(name) and _link_exists(ifname)      # SIGKILL: no cleanup ran
    assert name in reap_stale()
    assert not _netns_exists(name) and not _link_exists(ifname)
