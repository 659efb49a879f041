"""Issue 10 parts 4 and 7: local services are not a way out.

Each test first shows the move works bare, then that it fails under
`pycontain run`, checked from outside: the listener the test started got
nothing, the sentinel the outside service would write is never written."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
PY = "/usr/bin/python3"


def run(args, timeout=120):
    return subprocess.run(PYCONTAIN + ["run", "--no-daemon", *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/tmp")


class Listener:
    """A service outside the agent (standing for the node's sshd or a database):
    records every connection it accepted."""

    def __init__(self, family=socket.AF_INET, addr=("127.0.0.1", 0), kind=socket.SOCK_STREAM):
        self.sock = socket.socket(family, kind)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.addr = self.sock.getsockname()
        self.got: list[bytes] = []
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        threading.Thread(target=self._serve, args=(kind,), daemon=True).start()

    def _serve(self, kind):
        while True:
            try:
                if kind == socket.SOCK_DGRAM:
                    data, peer = self.sock.recvfrom(512)
                    self.got.append(data)
                    self.sock.sendto(data, peer)
                    continue
                c, _ = self.sock.accept()
                self.got.append(c.recv(64))
                c.sendall(b"ok")
                c.close()
            except OSError:
                return

    def close(self):
        self.sock.close()


CLIENT = ("import socket,sys\n"
          "fam={'4':socket.AF_INET,'6':socket.AF_INET6,'u':socket.AF_UNIX}[sys.argv[1]]\n"
          "s=socket.socket(fam)\n"
          "addr=sys.argv[2] if fam==socket.AF_UNIX else (sys.argv[2],int(sys.argv[3]))\n"
          "try:\n s.connect(addr); s.sendall(b'hello'); print('reached', s.recv(8))\n"
          "except OSError as e: print('refused', e.errno)\n")


@pytest.fixture
def tcp_service(privileged):
    svc = Listener()
    yield svc
    svc.close()


def test_loopback_service_reachable_bare_refused_under_run(tcp_service):
    port = str(tcp_service.addr[1])
    bare = subprocess.run([PY, "-c", CLIENT, "4", "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert "reached" in bare.stdout and tcp_service.got == [b"hello"]
    tcp_service.got.clear()
    each = " ; ".join(f"{PY} -c \"$0\" {fam} {addr} {port}"
                      for fam, addr in (("4", "127.0.0.1"), ("4", "0.0.0.0"), ("6", "::ffff:127.0.0.1")))
    r = run(["--", "sh", "-c", each, CLIENT])                         # one agent, the three spellings
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n").count("refused 1") == 3, (r.stdout, r.stderr)     # EPERM
    assert tcp_service.got == []                                      # checked from outside
    assert "network.local_services" in r.stderr


NODE_ADDED = "198.51.100.250"     # put on lo while the agent runs: an address the node gains later

# waits for the test to add NODE_ADDED, then connects to each address given
CLIENT_MANY = ("import os,socket,sys,time\n"
               "port=int(sys.argv[1])\n"
               "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
               "for a in sys.argv[3:]:\n"
               " s=socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET)\n"
               " try: s.connect((a,port)); s.sendall(b'hello'); print(a,'reached')\n"
               " except OSError as e: print(a,'refused',e.errno)\n")


def _own_addresses() -> list[str]:
    """The node's non-loopback addresses this test may connect to (not link-local)."""
    import ipaddress

    from pycontain.kernel.node_addrs import node_addresses
    out = []
    for fam, packed in node_addresses():
        a = ipaddress.ip_address(packed[:4] if fam == socket.AF_INET else packed)
        if not (a.is_loopback or a.is_link_local):
            out.append(str(a))
    return sorted(out)


def test_the_nodes_own_addresses_are_local_too(privileged):
    """A wildcard listener (sshd on 0.0.0.0:22) answers on eth0's address as on
    loopback; an address the node gains while the agent runs counts too."""
    svc = Listener(socket.AF_INET6, ("::", 0))     # dual-stack wildcard, as sshd listens
    port = svc.addr[1]
    own = _own_addresses()
    assert own, "the node has no non-loopback address"
    from pathlib import Path
    d = Path(tempfile.mkdtemp(prefix="pc-go-", dir="/tmp"))
    os.chmod(d, 0o755)                          # the agent's dynamic uid polls for the go file
    go = d / "go"
    go.touch()
    bare = subprocess.run([PY, "-c", CLIENT_MANY, str(port), str(go), *own], capture_output=True, text=True,
                          timeout=30)
    assert bare.stdout.count("reached") == len(own), bare.stdout
    assert len(svc.got) == len(own)
    svc.got.clear()
    go.unlink()
    agent = subprocess.Popen(PYCONTAIN + ["run", "--no-daemon", "--", PY, "-c", CLIENT_MANY, str(port), str(go),
                                          *own, NODE_ADDED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd="/tmp")
    added = False
    try:
        import time
        time.sleep(5)                           # the agent is running and polling for the go file
        subprocess.run(["ip", "addr", "add", f"{NODE_ADDED}/32", "dev", "lo"], check=True)
        added = True
        time.sleep(0.3)
        go.touch()
        out, err = agent.communicate(timeout=120)
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", f"{NODE_ADDED}/32", "dev", "lo"], check=False)
        agent.kill()
        svc.close()
        shutil.rmtree(d, ignore_errors=True)
    for a in [*own, NODE_ADDED]:
        assert f"{a} refused 1" in out, (a, out, err)
    assert svc.got == []                                            # checked from outside


# Each spelling of "the node itself" through the any address; argv: MOVE:PORT...
# and the interface of the node's own address.
ANY_MOVES = ("import socket,struct,sys\n"
             "dev=sys.argv[1]\n"
             "for arg in sys.argv[2:]:\n"
             " move,port=arg.split(':'); port=int(port)\n"
             " try:\n"
             "  if move=='tcp-src':\n"
             "   s=socket.socket(); s.bind(('127.0.0.2',0)); s.connect(('0.0.0.0',port))\n"
             "  elif move=='tcp-dev':\n"
             "   s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,dev.encode())\n"
             "   s.connect(('0.0.0.0',port))\n"
             "  elif move=='tcp6-mapped':\n"
             "   s=socket.socket(socket.AF_INET6); s.bind(('::ffff:127.0.0.1',0)); s.connect(('::',port))\n"
             "  elif move=='udp-pktinfo':\n"
             "   s=socket.socket(2,2); s.settimeout(2)\n"
             "   src=struct.pack('I4s4s',0,socket.inet_aton('127.0.0.2'),bytes(4))\n"
             "   s.sendmsg([b'hello'],[(0,8,src)],0,('0.0.0.0',port))\n"
             "  else:\n"
             "   s=socket.socket(2,2); s.settimeout(2)\n"
             "   s.setsockopt(0,50,struct.pack('!I',socket.if_nametoindex(dev)))   # IP_UNICAST_IF\n"
             "   s.connect(('0.0.0.0',port))\n"
             "  if move!='udp-pktinfo': s.send(b'hello')\n"
             "  print(move,'reached',s.recv(8))\n"
             " except OSError as e: print(move,'refused',e.errno)\n")


def _iface_of(addr: str) -> str:
    out = subprocess.run(["ip", "-o", "addr", "show", "to", addr], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def test_the_any_address_is_judged_where_it_lands(privileged):
    """connect/send to 0.0.0.0 goes to the source address it was given (bind,
    IP_PKTINFO), or to an interface's address (SO_BINDTODEVICE, and for UDP
    IP_UNICAST_IF, which the hook cannot see); :: from an IPv4-mapped source
    goes to 127.0.0.1. None of these reaches a node service under run."""
    own = _own_addresses()
    own4 = [a for a in own if ":" not in a]
    assert own4, "the node has no IPv4 address"
    dev = _iface_of(own4[0])
    services = {"tcp-src": Listener(addr=("127.0.0.2", 0)),
                "udp-pktinfo": Listener(addr=("127.0.0.2", 0), kind=socket.SOCK_DGRAM),
                "tcp-dev": Listener(addr=(own4[0], 0)),
                "udp-unicast-if": Listener(addr=(own4[0], 0), kind=socket.SOCK_DGRAM),
                "tcp6-mapped": Listener(addr=("127.0.0.1", 0))}
    moves = [dev, *(f"{m}:{svc.addr[1]}" for m, svc in services.items())]
    try:
        bare = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", ANY_MOVES,
                               *moves], capture_output=True, text=True, timeout=60)
        for m, svc in services.items():
            assert f"{m} reached" in bare.stdout and svc.got == [b"hello"], (m, bare.stdout, bare.stderr)
            svc.got.clear()
        r = run(["--", PY, "-c", ANY_MOVES, *moves])
        assert r.returncode == 0, r.stderr
        for m, svc in services.items():
            assert f"{m} refused 1" in r.stdout, (m, r.stdout, r.stderr)   # EPERM
            assert svc.got == [], m                                       # checked from outside
    finally:
        for svc in services.values():
            svc.close()


def test_the_agents_own_loopback_server_stays_reachable(privileged):
    own = ("import socket,threading\n"
           "l=socket.socket(socket.AF_INET6); l.bind(('::',0)); l.listen(); p=l.getsockname()[1]\n"
           "def srv():\n c,_=l.accept(); c.sendall(c.recv(5))\n"
           "threading.Thread(target=srv).start()\n"
           "c=socket.socket(); c.connect(('127.0.0.1',p)); c.sendall(b'hello'); print('own', c.recv(5))\n")
    r = run(["--", PY, "-c", own])
    assert r.returncode == 0 and "own b'hello'" in r.stdout, (r.stdout, r.stderr)


def test_the_node_resolver_stays_reachable(privileged):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.53", 53))          # nothing listens there: stand in for systemd-resolved
    except OSError:
        pytest.skip("127.0.0.53:53 is taken by a real resolver")   # pragma: no cover
    probe.close()
    dns = Listener(addr=("127.0.0.53", 53), kind=socket.SOCK_DGRAM)
    try:
        ask = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
               "s.sendto(b'query',('127.0.0.53',53)); print('answer', s.recv(16))\n")
        r = run(["--", PY, "-c", ask])
        assert "answer b'query'" in r.stdout, (r.stdout, r.stderr)
        assert dns.got == [b"query"]
    finally:
        dns.close()


def test_a_listed_local_service_stays_reachable(tcp_service, tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text(f"name: t\nnetwork:\n  local_services: ['127.0.0.1:{tcp_service.addr[1]}']\n")
    r = run(["--policy", str(pol), "--", PY, "-c", CLIENT, "4", "127.0.0.1", str(tcp_service.addr[1])])
    assert "reached" in r.stdout, (r.stdout, r.stderr)
    assert tcp_service.got == [b"hello"]


@pytest.fixture
def unix_service(privileged):
    d = tempfile.mkdtemp(prefix="pc-unix-", dir="/tmp")
    os.chmod(d, 0o755)
    path = os.path.join(d, "svc.sock")
    svc = Listener(socket.AF_UNIX, path)
    os.chmod(path, 0o777)                      # any uid may connect: only the hook stands in the way
    yield svc
    svc.close()
    shutil.rmtree(d, ignore_errors=True)


def test_unix_socket_outside_reachable_bare_refused_under_run(unix_service, tmp_path):
    path = unix_service.addr
    bare = subprocess.run([PY, "-c", CLIENT, "u", path], capture_output=True, text=True, timeout=30)
    assert "reached" in bare.stdout and unix_service.got == [b"hello"]
    unix_service.got.clear()
    audit = tmp_path / "audit.jsonl"
    r = run(["--audit-log", str(audit), "--", PY, "-c", CLIENT, "u", path])
    assert "refused 1" in r.stdout, (r.stdout, r.stderr)
    assert unix_service.got == []
    # the refusal is in the audit log, as the inet ones are
    recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    assert any(x["kind"] == "unix" and x.get("unix") == path and x.get("verdict") == "deny" for x in recs), \
        ([(x["kind"], x.get("unix"), x.get("verdict")) for x in recs], r.stderr[-3000:])
    assert any(x["kind"] == "violation" and x.get("rule") == "network.local_services" and path in x.get("reason", "")
               for x in recs)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"name: t\nnetwork:\n  local_services: ['{path}']\n")
    r = run(["--policy", str(pol), "--", PY, "-c", CLIENT, "u", path])
    assert "reached" in r.stdout, (r.stdout, r.stderr)
    assert unix_service.got == [b"hello"]


# bind NAME in a directory of one's own, then connect to NAME from the
# service's directory: the kernel resolves a relative path from the cwd
RELATIVE = ("import os,socket,sys,tempfile\n"
            "svc_dir,name=os.path.split(sys.argv[1])\n"
            "own=tempfile.mkdtemp(); os.chdir(own)\n"
            "l=socket.socket(socket.AF_UNIX); l.bind(name); l.listen()\n"
            "c=socket.socket(socket.AF_UNIX); c.connect(name); print('own reached')\n"
            "os.chdir(svc_dir)\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try: s.connect(name); s.sendall(b'hello'); print('service reached', s.recv(8))\n"
            "except OSError as e: print('service refused', e.errno)\n")


def test_a_relative_name_the_agent_bound_does_not_open_a_service_of_that_name(unix_service):
    path = unix_service.addr
    bare = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", RELATIVE, path],
                          capture_output=True, text=True, timeout=30, cwd="/tmp")
    assert "service reached" in bare.stdout and unix_service.got == [b"hello"], (bare.stdout, bare.stderr)
    unix_service.got.clear()
    r = run(["--", PY, "-c", RELATIVE, path])
    assert "own reached" in r.stdout, (r.stdout, r.stderr)            # its own socket, by a relative name
    assert "service refused 1" in r.stdout, (r.stdout, r.stderr)
    assert unix_service.got == []                                     # checked from outside


def test_the_agents_own_unix_sockets_stay_reachable(privileged):
    own = ("import socket,threading,tempfile,os\n"
           "p=os.path.join(tempfile.mkdtemp(),'s')\n"
           "for addr in (p, '\\0pc-own-%d' % os.getpid()):\n"
           " l=socket.socket(socket.AF_UNIX); l.bind(addr); l.listen()\n"
           " threading.Thread(target=lambda: l.accept()[0].sendall(b'ok')).start()\n"
           " c=socket.socket(socket.AF_UNIX); c.connect(addr); print('own', c.recv(2))\n")
    r = run(["--", PY, "-c", own])
    assert r.stdout.count("own b'ok'") == 2, (r.stdout, r.stderr)


# ---- part 7: same-uid spawners ------------------------------------------------

@pytest.fixture
def sshd(privileged):
    if not shutil.which("sshd") or not shutil.which("ssh"):
        pytest.skip("openssh-server / client not installed (scripts/install-test-tools.sh)")
    d = tempfile.mkdtemp(prefix="pc-sshd-", dir="/tmp")
    os.chmod(d, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/host"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/agent"], check=True)
    shutil.copy(f"{d}/agent.pub", f"{d}/authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(f"{d}/sshd_config", "w") as fh:
        fh.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n"
                 f"PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {d}/pid\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        __import__("time").sleep(0.05)
    yield d, port
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(d, ignore_errors=True)


def ssh_cmd(d: str, port: int, sentinel: str) -> list[str]:
    return ["ssh", "-i", f"{d}/agent", "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "root@127.0.0.1", f"touch {sentinel}"]


def test_the_nodes_sshd_runs_nothing_for_the_agent(sshd):
    d, port = sshd
    sentinel = os.path.join(d, "ran")
    bare = subprocess.run(ssh_cmd(d, port, sentinel), capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and os.path.exists(sentinel), bare.stderr
    os.unlink(sentinel)
    # --user root: the agent holds the key and an account sshd accepts; only the rule stands in the way
    r = run(["--user", "root", "--", *ssh_cmd(d, port, sentinel)])
    assert r.returncode != 0
    assert not os.path.exists(sentinel), r.stderr
    assert "network.local_services" in r.stderr


def test_a_tmux_server_outside_runs_nothing_for_the_agent(privileged):
    if not shutil.which("tmux"):
        pytest.skip("tmux not installed (scripts/install-test-tools.sh)")
    d = tempfile.mkdtemp(prefix="pc-tmux-", dir="/tmp")
    os.chmod(d, 0o777)
    sock, sentinel = os.path.join(d, "sock"), os.path.join(d, "ran")
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", "outside", "sleep 600"], check=True, timeout=30)
    os.chmod(sock, 0o777)
    try:
        cmd = ["tmux", "-S", sock, "new-session", "-d", f"cat /proc/self/cgroup > {sentinel}"]
        subprocess.run(cmd, check=True, timeout=30)
        for _ in range(100):
            if os.path.exists(sentinel) and os.path.getsize(sentinel):
                break
            __import__("time").sleep(0.05)
        assert os.path.exists(sentinel)                   # bare: the server outside ran it
        os.unlink(sentinel)
        for user in ("root", None):                       # a root agent, and the default fresh uid
            r = run((["--user", user] if user else []) + ["--", *cmd])
            assert r.returncode != 0, (r.stdout, r.stderr)
            __import__("time").sleep(0.3)
            assert not os.path.exists(sentinel), open(sentinel).read()
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def test_crontab_installs_nothing_under_run(privileged):
    if not shutil.which("crontab"):
        pytest.skip("cron not installed (scripts/install-test-tools.sh)")
    spool = "/var/spool/cron/crontabs/nobody"
    if os.path.exists(spool):
        pytest.skip("nobody already has a crontab")   # pragma: no cover
    job = "echo '* * * * * touch /tmp/pc-cron-ran' | crontab -"
    try:
        bare = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                               "sh", "-c", job], capture_output=True, text=True, timeout=30, cwd="/tmp")
        assert bare.returncode == 0 and os.path.exists(spool), bare.stderr    # setgid crontab wrote it
        os.unlink(spool)
        r = run(["--user", "nobody", "--", "sh", "-c", job])
        assert r.returncode != 0
        assert not os.path.exists(spool), r.stderr        # no_new_privs: crontab lost its setgid
    finally:
        if os.path.exists(spool):
            os.unlink(spool)
