"""A test host in a network namespace, for kernel tests and the ROME demo.

``TestHost`` makes a network namespace joined to the host by a veth pair and
gives both ends addresses from documentation ranges (198.51.100.0/24,
2001:db8::/32). Traffic to ``peer_ip4``/``peer_ip6`` leaves the host's
network stack through the veth (so cgroup connect/sendmsg/egress hooks see
it) and never reaches a real network.

Several test hosts may run at once (tests of several engineers, the demo):
each takes a free /29 (IPv4) and /124 (IPv6) slice of its subnets, chosen
under a host-wide lock, and a netns name with a random suffix. It refuses to
start (EnvironmentProblem) when its ranges are already routed or assigned on
the host — it never shadows a real route — and it never uses 192.0.2.0/24 or
203.0.113.0/24, which this kind of host uses for its own network.

Listeners run inside the netns (their sockets are created there by pyroute2)
and count what really arrived, so tests check outcomes from outside::

    with TestHost(prefix="t") as host:
        pool = host.tcp_listener(3333)
        ...  # an agent tries to connect to host.peer_ip4:3333
        assert pool.accepted == 0
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator

from ..core.errors import EnvironmentProblem

ALLOWED_V4 = ipaddress.IPv4Network("198.51.100.0/24")
ALLOWED_V6 = ipaddress.IPv6Network("2001:db8::/32")
# the host's own network on VMs like this one: a route here breaks installs
FORBIDDEN = (ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv4Network("203.0.113.0/24"))
V4_SLICE = 29
V6_SLICE = 124
LOCK_FILE = "/run/pycontain-testhost.lock"
REGISTRY = "/run/pycontain-testhost.d"   # one file per live test host: "<owner pid> <host ifname>"
MAX_RECEIVED = 1 << 20      # bytes a listener keeps
IFA_F_NODAD = 0x02          # IPv6 address usable at once, no duplicate detection
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")


class Listener:
    """A socket inside the test host's netns that counts what arrives.

    TCP: ``accepted`` is the number of accepted connections and ``received``
    every byte read from them, in arrival order. UDP: ``accepted`` counts
    datagrams. At most MAX_RECEIVED bytes are kept (``received_total`` counts
    all).
    """

    def __init__(self, sock: socket.socket, proto: str, addr: tuple):
        self.proto = proto
        self.addr = addr
        self.accepted = 0
        self.received_total = 0
        self._chunks: list[bytes] = []
        self._kept = 0
        self._sock = sock
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock.settimeout(0.1)
        target = self._accept_loop if proto == "tcp" else self._udp_loop
        self._thread = threading.Thread(target=target, name=f"listener-{proto}-{addr[1]}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.addr[1]

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def _add(self, data: bytes) -> None:
        with self._lock:
            self.received_total += len(data)
            room = MAX_RECEIVED - self._kept
            if room > 0:
                self._chunks.append(data[:room])
                self._kept += min(room, len(data))

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._read_conn, args=(conn,), daemon=True).start()

    def _read_conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(0.1)
        except OSError:        # close() already closed it
            return
        while not self._closed.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self._add(data)

    def _udp_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, _ = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            self._add(data)

    def wait(self, *, accepted: int | None = None, contains: bytes | None = None,
             received: int | None = None, timeout: float = 5.0) -> bool:
        """Wait until at least `accepted` connections/datagrams, `received`
        bytes, or a received byte string containing `contains` arrived.
        Returns whether it did (never raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            ok = ((accepted is None or self.accepted >= accepted)
                  and (received is None or self.received_total >= received)
                  and (contains is None or contains in self.received))
            if ok or time.monotonic() >= deadline:
                return ok
            time.sleep(0.02)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass
        self._thread.join(1.0)
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


def _check_subnet(net, allowed, what: str):
    if net.version != allowed.version or not net.subnet_of(allowed):
        raise EnvironmentProblem(f"test host {what} {net} must lie inside {allowed}",
                                 hint="tests may only use documentation ranges in their own namespaces")
    for bad in FORBIDDEN:
        if net.version == bad.version and net.overlaps(bad):
            raise EnvironmentProblem(f"test host {what} {net} overlaps {bad}, which this host uses itself")
    return net


def slices(net, new_prefix: int) -> Iterator:
    """The subnets of `net` of length `new_prefix` (or `net` itself when it is smaller)."""
    if net.prefixlen >= new_prefix:
        yield net
        return
    count = 1 << (new_prefix - net.prefixlen)
    step = 1 << (net.max_prefixlen - new_prefix)
    base = int(net.network_address)
    for k in range(min(count, 1 << 16)):
        yield ipaddress.ip_network((base + k * step, new_prefix))


def first_free_pair(v4, v6, routed: list, rng: random.Random | None = None):
    """Pick a (v4 slice, v6 slice) pair that overlaps nothing in `routed`
    (networks already routed or assigned on the host), or None. The default
    route does not count: it overlaps everything and says nothing."""
    used = [r for r in routed if r.prefixlen > 0]
    pairs = list(zip(slices(v4, V4_SLICE), slices(v6, V6_SLICE), strict=False))   # as many as the fewer
    (rng or random.Random()).shuffle(pairs)
    for s4, s6 in pairs:
        if not any(r.version == s.version and r.overlaps(s) for s in (s4, s6) for r in used):
            return s4, s6
    return None


class TestHost:
    """A network namespace reachable from the host over a veth pair (a context manager)."""

    __test__ = False   # not a pytest test class

    def __init__(self, prefix: str = "pc", v4_subnet: str = "198.51.100.0/24",
                 v6_subnet: str = "2001:db8:100::/64"):
        if not _PREFIX_RE.match(prefix):
            raise ValueError("prefix: 1-6 lower-case letters/digits, starting with a letter")
        self.v4_subnet = _check_subnet(ipaddress.ip_network(v4_subnet), ALLOWED_V4, "IPv4 subnet")
        self.v6_subnet = _check_subnet(ipaddress.ip_network(v6_subnet), ALLOWED_V6, "IPv6 subnet")
        suffix = secrets.token_hex(4)
        self.netns = f"{prefix}-{suffix}"
        self.host_ifname = f"{prefix}{suffix}h"[:15]
        self.peer_ifname = f"{prefix}{suffix}p"[:15]
        self.host_ip4 = self.peer_ip4 = self.host_ip6 = self.peer_ip6 = ""
        self.prefix4 = self.prefix6 = 0
        self._listeners: list[Listener] = []
        self._procs: list[subprocess.Popen] = []
        self._created_ns = False
        self._created_link = False
        self._finalizer: weakref.finalize | None = None

    # ---- life cycle -------------------------------------------------------

    def __enter__(self) -> TestHost:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise EnvironmentProblem("a test host (network namespace + veth) needs root")
        try:
            from pyroute2 import IPRoute  # noqa: F401
        except Exception as e:
            raise EnvironmentProblem(f"pyroute2 is not importable ({e})") from None
        try:
            with open(LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                reap_stale()
                self._register()
                self._setup()
        except EnvironmentProblem:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise EnvironmentProblem(f"could not set up the test host {self.netns}: {e}") from e
        self._finalizer = weakref.finalize(self, _cleanup, self.netns, self.host_ifname)

    def _setup(self) -> None:
        from pyroute2 import IPRoute, netns

        with IPRoute() as ipr:
            routed = _host_networks(ipr)
            pair = first_free_pair(self.v4_subnet, self.v6_subnet, routed)
            if pair is None:
                busy = [str(r) for r in routed if r.prefixlen > 0 and
                        (r.overlaps(self.v4_subnet) if r.version == 4 else r.overlaps(self.v6_subnet))]
                raise EnvironmentProblem(
                    f"test host ranges {self.v4_subnet} / {self.v6_subnet} are already routed or in use "
                    f"on this host ({', '.join(busy[:4]) or 'every slice taken'})",
                    hint="remove the stale namespace (ip netns list) or pass other subnets")
            s4, s6 = pair
            if self.netns in netns.listnetns():
                raise EnvironmentProblem(f"network namespace {self.netns} already exists")
            netns.create(self.netns)
            self._created_ns = True
            ipr.link("add", ifname=self.host_ifname, kind="veth",
                     peer={"ifname": self.peer_ifname, "net_ns_fd": self.netns})
            self._created_link = True
            idx = ipr.link_lookup(ifname=self.host_ifname)[0]
            h4, p4 = (str(s4.network_address + 1), str(s4.network_address + 2))
            h6, p6 = (str(s6.network_address + 1), str(s6.network_address + 2))
            ipr.addr("add", index=idx, address=h4, prefixlen=s4.prefixlen)
            ipr.addr("add", index=idx, address=h6, prefixlen=s6.prefixlen, flags=IFA_F_NODAD)
            ipr.link("set", index=idx, state="up")
        with IPRoute(netns=self.netns) as ipn:
            ipn.link("set", index=ipn.link_lookup(ifname="lo")[0], state="up")
            pidx = ipn.link_lookup(ifname=self.peer_ifname)[0]
            ipn.addr("add", index=pidx, address=p4, prefixlen=s4.prefixlen)
            ipn.addr("add", index=pidx, address=p6, prefixlen=s6.prefixlen, flags=IFA_F_NODAD)
            ipn.link("set", index=pidx, state="up")
        self.host_ip4, self.peer_ip4, self.host_ip6, self.peer_ip6 = h4, p4, h6, p6
        self.prefix4, self.prefix6 = s4.prefixlen, s6.prefixlen
        self._wait_reachable()

    def _wait_reachable(self, timeout: float = 5.0) -> None:
        """The veth carrier comes up asynchronously: wait until the peer answers."""
        probe = self.tcp_listener(0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    with socket.create_connection((self.peer_ip4, probe.port), timeout=1):
                        return
                except OSError as e:
                    if time.monotonic() >= deadline:
                        raise EnvironmentProblem(f"test host {self.peer_ip4} unreachable over the veth: {e}") from None
                    time.sleep(0.05)
        finally:
            probe.close()
            self._listeners.remove(probe)

    def close(self) -> None:
        """Stop listeners and processes, delete the veth and the netns. Idempotent."""
        for l in self._listeners:
            l.close()
        self._listeners.clear()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self._procs.clear()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _cleanup(self.netns if self._created_ns else None, self.host_ifname if self._created_link else None)
        self._created_ns = self._created_link = False
        try:
            os.unlink(os.path.join(REGISTRY, self.netns))
        except OSError:
            pass

    def _register(self) -> None:
        os.makedirs(REGISTRY, mode=0o700, exist_ok=True)
        with open(os.path.join(REGISTRY, self.netns), "w") as f:
            f.write(f"{os.getpid()} {self.host_ifname}\n")

    # ---- inside the namespace ----------------------------------------------

    def run(self, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` inside the netns; killed at close() if still running."""
        ip = shutil.which("ip")
        if ip:
            cmd = [ip, "netns", "exec", self.netns, *argv]
        else:
            cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]
        p = subprocess.Popen(cmd, **popen_kwargs)
        self._procs.append(p)
        return p

    def _listen(self, proto: str, port: int, family: int) -> Listener:
        from pyroute2 import netns

        if family not in (4, 6):
            raise ValueError("family must be 4 or 6")
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        ip = self.peer_ip4 if family == 4 else self.peer_ip6
        sock = netns.create_socket(self.netns, family=fam, socket_type=kind, flags=0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            if proto == "tcp":
                sock.listen(64)
        except OSError:
            sock.close()
            raise
        l = Listener(sock, proto, sock.getsockname()[:2])
        self._listeners.append(l)
        return l

    def tcp_listener(self, port: int, family: int = 4) -> Listener:
        """Listen on peer_ip4/peer_ip6:port inside the netns (port 0: any free port)."""
        return self._listen("tcp", port, family)

    def udp_listener(self, port: int, family: int = 4) -> Listener:
        return self._listen("udp", port, family)


def _host_networks(ipr) -> list:
    """Every destination routed in any table of the host netns, plus every
    address assigned to a host interface (as its connected network)."""
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in ipr.route("dump", family=fam):
            dst = r.get("dst") or r.get("RTA_DST")
            plen = r.get("dst_len", 0)
            if dst is None:
                dst = "0.0.0.0" if fam == socket.AF_INET else "::"
            try:
                out.append(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
            except ValueError:
                continue
        for a in ipr.get_addr(family=fam):
            addr = a.get("address") or a.get("IFA_ADDRESS")
            if addr:
                try:
                    out.append(ipaddress.ip_network(f"{addr}/{a.get('prefixlen', 0)}", strict=False))
                except ValueError:
                    continue
    return out


def reap_stale() -> list[str]:
    """Remove test hosts whose owner process died without cleaning up (a
    SIGKILLed test run): their netns, veth and registry entry. Returns the
    netns names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(REGISTRY)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(REGISTRY, name)
        try:
            with open(path) as f:
                pid_s, ifname = f.read().split()
            os.kill(int(pid_s), 0)
            continue                      # owner alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue                      # unreadable or not ours to judge
        _cleanup(name, ifname)
        try:
            os.unlink(path)
        except OSError:
            pass
        removed.append(name)
    return removed


def _cleanup(ns: str | None, host_ifname: str | None) -> None:
    """Delete the veth (its peer goes with it) and the netns; ignore what is gone."""
    try:
        from pyroute2 import IPRoute, netns
    except Exception:  # pragma: no cover
        return
    if host_ifname:
        try:
            with IPRoute() as ipr:
                if ipr.link_lookup(ifname=host_ifname):
                    ipr.link("del", ifname=host_ifname)
        except Exception:
            pass
    if ns:
        try:
            if ns in netns.listnetns():
                netns.remove(ns)
        except Exception:
            pass
