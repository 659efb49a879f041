"""Fixtures for the kernel network tests (and anyone who needs them).

* ``agent_cgroup`` — a fresh cgroup v2 directory nested under this test
  process's own v2 cgroup (unique name); processes in it are killed and the
  directory removed in a finalizer.
* ``net_probes`` — the full Probes program, loaded once per module.
* ``net_agent`` — an agent cgroup tracked by net_probes (cgroup programs
  attached), plus event collection and helpers to run clients in it.
* ``testhost`` — a pycontain.demo.testhost.TestHost (netns + veth).

Clients put themselves into the agent cgroup by writing their pid to
cgroup.procs before exec (the way `pycontain run` launches agents).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from exec_harness import Collector

from pycontain.core.events import Event
from pycontain.core.kernel_rules import KernelTables
from tests.conftest import skip_or_fail

PY = sys.executable

# a client that performs one network operation and prints the outcome:
# "ok", or the errno name (EPERM, ECONNREFUSED...)
CLIENT = r"""
import errno, socket, sys, time
def outcome(f):
    try:
        r = f()
        return "ok" if r is None else str(r)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
"""

SEND_ONCE = r"""
h, p = sys.argv[1], int(sys.argv[2])
def f():
    s = socket.create_connection((h, p), timeout=3)
    s.sendall(%r)
    time.sleep(%s)
print(outcome(f))
"""


def send_once(payload: bytes, linger: float) -> str:
    """Code for net_agent.python(code, host, port): connect, send payload,
    keep the connection linger seconds; prints the outcome."""
    return SEND_ONCE % (payload, linger)


def _kill_and_remove(path: str) -> None:
    kill = os.path.join(path, "cgroup.kill")
    for _ in range(100):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return
        if not pids:
            break
        if os.path.exists(kill):
            with open(kill, "w") as f:
                f.write("1")
        else:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


@pytest.fixture
def agent_cgroup(privileged, request) -> str:
    """Path of a new, empty cgroup v2 directory under our own v2 cgroup."""
    from pycontain.actuate.cgroups import detect_layout

    base = detect_layout().own_v2()
    path = os.path.join(base, f"pcnet-{os.getpid()}-{secrets.token_hex(3)}")
    os.mkdir(path)
    request.addfinalizer(lambda: _kill_and_remove(path))
    return path


@pytest.fixture(scope="module")
def net_probes(privileged):
    """The full program, as the product loads it (exec hooks included: the
    loader's set_tables writes their maps too)."""
    from pycontain.kernel.loader import Probes

    p = Probes(ringbuf_pages=256)
    p.load()
    yield p
    p.close()


@pytest.fixture
def testhost(privileged):
    from pycontain.demo.testhost import TestHost

    with TestHost(prefix="tnet") as host:
        yield host


_agent_ids = iter(range(20_000, 30_000))


@dataclass
class Result:
    pid: int          # the client's pid (sh execs it: same pid)
    returncode: int
    out: str          # stdout, stripped
    err: str


@dataclass
class NetAgent(Collector):
    """A tracked agent cgroup, its events, and a way to run clients in it."""

    path: str = ""
    agent_id: int = 0

    def wait_for(self, pred, timeout: float = 3.0) -> list[Event]:
        return super().wait_for(pred, timeout)

    def tables(self, **kw) -> KernelTables:
        """Write tables to the kernel (rule names 1..4 are the reserved ones)."""
        rules = {1: "network.default", 2: "network.stratum", 3: "network.raw_socket",
                 4: "network.packet_socket"}
        rules.update(kw.pop("rules", {}))
        t = KernelTables(rules=rules, **kw)
        self.probes.set_tables(t)
        return t

    def popen(self, argv: list[str], *, inside: bool = True, **kw) -> subprocess.Popen:
        """Start argv; with inside=True it first moves itself into the agent cgroup."""
        if inside:
            argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path, *argv]
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(argv, **kw)

    def python(self, code: str, *args: str, inside: bool = True, timeout: float = 15) -> Result:
        """Run CLIENT + code with args to completion."""
        p = self.popen([PY, "-c", CLIENT + code, *args], inside=inside)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return Result(p.pid, p.returncode, out.strip(), err)


@pytest.fixture
def net_agent(net_probes, agent_cgroup):
    agent = NetAgent(net_probes, path=agent_cgroup, agent_id=next(_agent_ids))
    net_probes.set_tables(KernelTables())
    net_probes.track_cgroup(agent_cgroup, agent.agent_id)
    net_probes.poll(0)
    net_probes.on_event = agent
    yield agent
    net_probes.on_event = None
    net_probes.untrack_cgroup(agent_cgroup)
    net_probes.set_tables(KernelTables())



PIN_PREFIX = "/sys/fs/bpf/pctest-"


def pin_root_for(tag: str = "run") -> str:
    """A bpffs dir for the pins of daemons this test run starts: named by
    this pytest's pid, so a later run can tell it from a live run's."""
    return f"{PIN_PREFIX}{os.getpid()}-{tag}"


def _release_stale_pins() -> None:
    """Pins are meant to outlive their daemon (enforcement survives a
    SIGKILL), so a test run that was killed leaves its daemons' programs
    enforcing: its birth globs would make the next run's test cgroups
    agents of a dead controller. Release those of runs no longer alive."""
    from pycontain.kernel.pins import release_all
    parent = os.path.dirname(PIN_PREFIX)
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        if not name.startswith(os.path.basename(PIN_PREFIX)):
            continue
        pid = name.removeprefix(os.path.basename(PIN_PREFIX)).split("-")[0]
        if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
            release_all(os.path.join(parent, name))


@pytest.fixture(scope="session", autouse=True)
def _own_pin_root():
    """Daemons started by tests pin into a bpffs dir of this run (never the
    node's /sys/fs/bpf/pycontain), released at the end; pins left by runs
    that were killed are released first."""
    if os.geteuid() == 0:
        _release_stale_pins()
    root = pin_root_for()
    old = os.environ.get("PYCONTAIN_BPFFS")
    os.environ["PYCONTAIN_BPFFS"] = root
    yield root
    if old is None:
        os.environ.pop("PYCONTAIN_BPFFS", None)
    else:
        os.environ["PYCONTAIN_BPFFS"] = old
    if os.geteuid() == 0:
        from pycontain.kernel.pins import release_all
        release_all(root)


@pytest.fixture(params=["native", "python"])
def spawn_path(request, monkeypatch):
    """Run the test once per way of starting an agent (actuate/spawn.py): the
    vfork child of the C module, and the Python fork child. The native module
    must be built (scripts/install.sh; `python setup.py build_ext --inplace`
    in a checkout); under CI a missing one fails."""
    from pycontain.actuate import spawn
    if request.param == "native" and spawn._spawn is None:
        skip_or_fail("pycontain.actuate._spawn is not built (scripts/install.sh builds it)")
    monkeypatch.setenv("PYCONTAIN_SPAWN", request.param)
    return request.param
