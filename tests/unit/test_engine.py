"""The decision engine: kernel verdicts, user-space rules, budgets, escalation, monitor mode."""

from __future__ import annotations

import dataclasses

import pytest

from pycontain.core.decisions import Action, Breach, GpuDetail
from pycontain.core.engine import Engine
from pycontain.core.events import (
    EventType,
    ExecEvent,
    ExitEvent,
    Flag,
    ForkEvent,
    Header,
    NetEvent,
    SocketEvent,
    StratumEvent,
    Verdict,
)
from pycontain.core.kernel_rules import compile_policy, exec_verdict, net_verdict
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.core.samples import CgroupSample

AGENT_ID = 7
NO_FLAGS = Flag(0)


def header(etype, pid=100, start_ns=1000, verdict=Verdict.ALLOW, rule_id=0, ppid=1, agent_id=AGENT_ID,
           ts_ns=5000, flags=NO_FLAGS):
    return Header(type=etype, verdict=verdict, flags=flags, rule_id=rule_id, pid=pid, tid=pid, ppid=ppid, uid=0,
                  agent_id=agent_id, ts_ns=ts_ns, start_ns=start_ns, cgroup_id=1, comm=b"x")


def exec_event(filename: bytes, argv, **kw) -> ExecEvent:
    return ExecEvent(h=header(EventType.EXEC, **kw), filename=filename, argv=tuple(argv), argc=len(argv))


def net_event(daddr: str, dport: int, proto: int = 6, kind=EventType.CONNECT, **kw) -> NetEvent:
    fam = 10 if ":" in daddr else 2
    return NetEvent(h=header(kind, **kw), family=fam, protocol=proto, daddr=daddr, dport=dport, saddr="", sport=0)


def fork_event(parent: int, child: int, ts_ns: int) -> ForkEvent:
    return ForkEvent(h=header(EventType.FORK, pid=parent, ts_ns=ts_ns), child_pid=child)


def engine(policy=None, **kw) -> Engine:
    e = Engine(policy or builtin_policy("default"), **kw)
    e.add_agent(AGENT_ID, "trainer")
    return e


def kernel_exec(e: Engine, filename: bytes, argv, verdict=Verdict.DENY, **kw):
    """An exec as the kernel would report it under e's policy."""
    tables = compile_policy(e.policy)
    rid = exec_verdict(tables, filename=filename.decode(), argv=[a.decode() for a in argv])
    v = verdict if rid else Verdict.ALLOW
    return exec_event(filename, argv, verdict=v, rule_id=rid, **kw)


# ---- exec ---------------------------------------------------------------------------------

def test_kernel_denied_exec_is_a_violation_naming_the_rule():
    e = engine()
    ds = e.on_event(kernel_exec(e, b"/tmp/xmrig", [b"xmrig"]), 1.0)
    assert [(d.action, d.rule, d.monitor) for d in ds] == [(Action.DENY, "exec.deny:xmrig", False)]
    assert ds[0].agent == "trainer" and ds[0].pid == 100 and "killed before it ran" in ds[0].reason


def test_exec_action_kill_adds_an_agent_kill():
    p = load_policy_text("exec: {deny: [xmrig]}\nactions: {exec: kill}\n")
    e = engine(p)
    ds = e.on_event(kernel_exec(e, b"/tmp/xmrig", [b"xmrig"]), 1.0)
    assert [d.action for d in ds] == [Action.DENY, Action.KILL]


def test_would_deny_is_monitor_only():
    e = engine()
    ds = e.on_event(kernel_exec(e, b"/tmp/xmrig", [b"xmrig"], verdict=Verdict.WOULD_DENY), 1.0)
    assert ds and all(d.monitor for d in ds)


def test_unknown_agent_is_ignored():
    e = engine()
    assert e.on_event(exec_event(b"/tmp/xmrig", [b"xmrig"], verdict=Verdict.DENY, rule_id=4, agent_id=99), 1.0) == []


@pytest.mark.parametrize("argv", [
    [b"ssh", b"-NfR", b"2222:localhost:22", b"198.51.100.1"],
    [b"ssh", b"-R2222:localhost:22", b"h"],
    [b"ssh", b"h", b"-R", b"2222:localhost:22"],
    [b"ssh", b"-oRemoteForward=2222 localhost:22", b"h"],
    [b"ssh", b"-o", b"remoteforward 2222 localhost:22", b"h"],
    [b"ssh", b"-D", b"1080", b"h"],
    [b"ssh", b"-w", b"0:0", b"h"],
])
def test_ssh_reverse_tunnels_are_killed_in_user_space(argv):
    e = engine()
    ev = kernel_exec(e, b"/usr/bin/ssh", argv, pid=321, start_ns=999)
    assert ev.h.verdict == Verdict.ALLOW                     # the kernel cannot tell ssh -R from grep -R
    ds = e.on_event(ev, 1.0)
    assert len(ds) == 1 and ds[0].action == Action.KILL_PROCESS
    assert (ds[0].pid, ds[0].start_ns) == (321, 999) and ds[0].rule.startswith("exec.deny_program_args:ssh ")


@pytest.mark.parametrize("filename,argv", [
    (b"/usr/bin/ssh", [b"ssh", b"host", b"uptime"]),
    (b"/usr/bin/ssh", [b"ssh", b"-p", b"2222", b"host", b"grep", b"-R", b"x", b"/"]),
    (b"/usr/bin/ssh", [b"ssh", b"-L", b"8080:localhost:80", b"host"]),
    (b"/usr/bin/grep", [b"grep", b"-R", b"foo", b"."]),
    (b"/bin/cp", [b"cp", b"-R", b"a", b"b"]),
    (b"/usr/bin/git", [b"git", b"push"]),
    (b"/usr/bin/curl", [b"curl", b"https://pypi.org"]),
    (b"/usr/bin/python3", [b"python3", b"train.py"]),
])
def test_ordinary_commands_pass(filename, argv):
    e = engine()
    assert e.on_event(kernel_exec(e, filename, argv), 1.0) == []


def test_prefix_glob_is_enforced_in_the_kernel():
    """issue 11: "xmr-stak*" compiles to the kernel pattern "/xmr-stak" (was user space)."""
    e = engine()
    ev = kernel_exec(e, b"/opt/xmr-stak-rx", [b"xmr-stak-rx"])
    ds = e.on_event(ev, 1.0)
    assert [d.action for d in ds] == [Action.DENY] and ds[0].rule == "exec.deny:xmr-stak*"


def test_exec_allow_list():
    p = load_policy_text("exec:\n  mode: allow-list\n  allow: ['python*', pycontain, bash, '/opt/tools/*']\n")
    e = engine(p)
    assert e.on_event(exec_event(b"/usr/bin/python3.11", [b"python3.11"]), 1.0) == []
    assert e.on_event(exec_event(b"/opt/tools/fetch", [b"fetch"]), 1.0) == []
    ds = e.on_event(exec_event(b"/usr/bin/curl", [b"curl"], pid=5), 1.0)
    assert [(d.action, d.rule) for d in ds] == [(Action.KILL_PROCESS, "exec.allow")]


def test_untrusted_bytes_are_escaped_in_reasons():
    p = load_policy_text("exec:\n  deny: ['/tmp/*']\n")
    e = engine(p)
    ds = e.on_event(exec_event(b"/tmp/\x1b[31mevil\n", [b"x"]), 1.0)
    assert ds and "\x1b" not in ds[0].reason and "\n" not in ds[0].reason


# ---- network ------------------------------------------------------------------------------

def test_kernel_denied_connect():
    e = engine()
    tables = compile_policy(e.policy)
    rid = net_verdict(tables, daddr="198.51.100.1", dport=3333)
    ds = e.on_event(net_event("198.51.100.1", 3333, verdict=Verdict.DENY, rule_id=rid), 1.0)
    assert [(d.action, d.rule) for d in ds] == [(Action.DENY, "miner-pool-ports")]


def test_address_and_port_rule_is_user_space():
    p = load_policy_text("network:\n  deny:\n    - {cidr: 198.51.100.0/24, ports: [8080]}\n")
    e = engine(p)
    assert e.on_event(net_event("198.51.100.1", 443), 1.0) == []
    ds = e.on_event(net_event("198.51.100.1", 8080, pid=42), 1.0)
    assert [(d.action, d.rule, d.pid) for d in ds] == \
        [(Action.KILL_PROCESS, "network.deny:198.51.100.0/24 any/8080", 42)]


def test_stratum_kills_the_agent():
    e = engine()
    ev = StratumEvent(h=header(EventType.STRATUM, verdict=Verdict.DENY, rule_id=2), family=2, protocol=6,
                      daddr="198.51.100.1", dport=443, saddr="", sport=0,
                      payload=b'{"id":1,"method":"mining.subscribe"}')
    ds = e.on_event(ev, 1.0)
    assert [d.action for d in ds] == [Action.DENY, Action.KILL] and ds[0].rule == "network.stratum"


def test_denied_socket():
    e = engine()
    ev = SocketEvent(h=header(EventType.SOCKET, verdict=Verdict.DENY, rule_id=3), family=17, sock_type=3, protocol=0)
    ds = e.on_event(ev, 1.0)
    assert [(d.action, d.rule) for d in ds] == [(Action.DENY, "network.raw_socket")]


def test_unapproved_connect_is_recorded_and_inherited():
    e = engine()
    e.on_event(exec_event(b"/usr/bin/python3", [b"python3"], pid=10, start_ns=10), 1.0)
    e.on_event(net_event("127.0.0.1", 8080, pid=10, ts_ns=100), 1.0)
    assert e.processes.lookup(10).unapproved_connect_ns is None            # loopback is approved
    e.on_event(net_event("198.51.100.5", 443, pid=10, ts_ns=150), 1.0)
    assert e.processes.lookup(10).unapproved_connect_ns is None            # no allow list: plain HTTPS is fine
    e.on_event(net_event("198.51.100.5", 3333, pid=10, ts_ns=200), 1.0)    # a pool port the policy denies
    assert e.processes.lookup(10).unapproved_connect_ns == 200
    e.on_event(fork_event(10, 11, 300), 1.0)
    e.on_event(exec_event(b"/tmp/gpu-job", [b"gpu-job"], pid=11, start_ns=301, ppid=10, ts_ns=302), 1.0)
    child = e.processes.lookup(11)
    assert child.unapproved_connect_ns == 200 and child.exec_ts_ns == 302 and child.ancestors[0][0] == 10


def test_allow_list_defines_approved():
    p = load_policy_text("network:\n  allow:\n    - {cidr: 198.51.100.0/28, ports: [443]}\n")
    e = engine(p)
    e.on_event(net_event("198.51.100.2", 443, pid=10), 1.0)
    assert e.processes.lookup(10).unapproved_connect_ns is None
    e.on_event(net_event("198.51.100.2", 22, pid=10, ts_ns=77), 1.0)
    assert e.processes.lookup(10).unapproved_connect_ns == 77


def test_reused_pid_does_not_inherit():
    e = engine()
    e.on_event(exec_event(b"/usr/bin/a", [b"a"], pid=10, start_ns=1), 1.0)
    e.on_event(net_event("198.51.100.5", 3333, pid=10, ts_ns=5), 1.0)
    e.on_event(ExitEvent(h=header(EventType.EXIT, pid=10, start_ns=1), exit_code=0), 1.0)
    e.on_event(exec_event(b"/usr/bin/b", [b"b"], pid=10, start_ns=50, ppid=1), 1.0)
    assert e.processes.lookup(10).unapproved_connect_ns is None
    assert e.processes.get(10, 1) is None and e.processes.get(10, 50).filename == b"/usr/bin/b"


# ---- budgets and escalation ---------------------------------------------------------------------

BUDGETS = """\
budgets: {cpu: 1, memory: 1GiB, memory_high: 512MiB, pids: 100}
actions:
  cpu: {ladder: [alert, throttle, freeze, kill], grace: 10s}
  memory: throttle-then-kill
  pids: alert
"""


def sample(cpu_s=0.0, mem=0, pids=1):
    return CgroupSample(cpu_usage_seconds=cpu_s, memory_bytes=mem, pids=pids)


def test_cpu_needs_two_hot_samples_then_climbs_the_ladder_one_step_per_grace():
    e = engine(load_policy_text(BUDGETS))
    assert e.on_cgroup_sample("trainer", sample(0), 0) == []
    assert e.on_cgroup_sample("trainer", sample(1), 1) == []            # one hot sample: not yet
    ds = e.on_cgroup_sample("trainer", sample(2), 2)
    assert [(d.action, d.rule) for d in ds] == [(Action.ALERT, "budget.cpu")]
    steps = []
    for t in range(3, 40):
        steps += [d.action for d in e.on_cgroup_sample("trainer", sample(t), t)]
    assert steps == [Action.THROTTLE, Action.FREEZE, Action.KILL]      # 12s, 22s, 32s: one per grace


def test_cleared_budget_thaws():
    e = engine(load_policy_text(BUDGETS))
    ds = e.on_cgroup_sample("trainer", sample(mem=600 << 20), 0)
    assert [d.action for d in ds] == [Action.THROTTLE]
    assert e.on_cgroup_sample("trainer", sample(mem=600 << 20), 1) == []
    assert e.on_cgroup_sample("trainer", sample(mem=100 << 20), 2) == []    # one sample under is no cure
    assert e.tick(3) == []
    ds = e.on_cgroup_sample("trainer", sample(mem=100 << 20), 4) + e.tick(4)   # under for the hold (3 s)
    assert [(d.action, d.rule) for d in ds] == [(Action.THAW, "budget.memory")]
    ds = e.on_cgroup_sample("trainer", sample(mem=600 << 20), 5)        # a new breach starts over
    assert [d.action for d in ds] == [Action.THROTTLE]


def test_dipping_under_a_budget_now_and_then_does_not_reset_its_ladder():
    """9 s over memory_high, 1 s under, again and again: before, each dip
    cleared the breach, so the throttle was lifted and set 60 times in ten
    minutes and the kill never came."""
    e = engine(load_policy_text(BUDGETS))
    actions = []
    for t in range(600):
        mem = (100 if t % 10 == 9 else 600) << 20
        actions += [d.action for d in e.on_cgroup_sample("trainer", sample(mem=mem), t) + e.tick(t)]
    assert actions[:2] == [Action.THROTTLE, Action.KILL], actions[:6]


def test_pids_alert():
    e = engine(load_policy_text(BUDGETS))
    ds = e.on_cgroup_sample("trainer", sample(pids=96), 0)
    assert [(d.action, d.rule) for d in ds] == [(Action.ALERT, "budget.pids")]


def test_gpu_breaches_share_the_ladder_and_carry_throttle_detail():
    p = load_policy_text("gpu: {sm_util: {max: 50}, throttle: {duty_cycle: 0.25, period: 2s}}\n"
                         "actions: {gpu_util: {ladder: [throttle, kill], grace: 5s}}\n")
    e = engine(p)
    br = Breach("trainer", "gpu.sm_util", "gpu_util", "SM 90%", gpu=GpuDetail(sm_util=90.0))
    ds = e.on_breaches([br], 0)
    assert [d.action for d in ds] == [Action.THROTTLE]
    assert (ds[0].gpu.throttle is not None and ds[0].gpu.throttle.duty_cycle == 0.25
            and ds[0].gpu.throttle.period_s == 2.0)
    assert ds[0].gpu.sm_util == 90.0
    assert e.on_breaches([br], 2) == []
    assert [d.action for d in e.on_breaches([br], 6)] == [Action.KILL]
    assert e.tick(7) == []                                                # not cleared yet


def test_gpu_breach_cleared_by_silence_thaws_with_gpu_detail():
    p = load_policy_text("gpu: {sm_util: {max: 50}}\nactions: {gpu_util: throttle-then-kill}\n")
    e = engine(p)
    br = Breach("trainer", "gpu.sm_util", "gpu_util", "SM 90%")
    e.on_breaches([br], 0)
    assert e.tick(1) == []
    ds = e.tick(10)
    assert [d.action for d in ds] == [Action.THAW] and ds[0].gpu.throttle is not None


def test_gpu_program_breach_targets_the_process():
    e = engine()
    br = Breach("trainer", "gpu.program", "gpu_program", "x on GPU", pid=55, start_ns=66, gpu=GpuDetail(device=0))
    ds = e.on_breaches([br], 0)
    assert [(d.action, d.pid, d.start_ns, d.gpu.device) for d in ds] == [(Action.KILL_PROCESS, 55, 66, 0)]


def test_monitor_mode_marks_everything():
    p = dataclasses.replace(load_policy_text(BUDGETS), mode="monitor")
    e = engine(p)
    ds = e.on_cgroup_sample("trainer", sample(mem=600 << 20), 0)
    ds += e.on_event(exec_event(b"/usr/bin/ssh", [b"ssh", b"-R", b"1:h:2", b"h"]), 0)
    assert ds and all(d.monitor for d in ds)


def test_replace_policy_and_remove_agent():
    e = engine(load_policy_text(BUDGETS))
    assert [d.action for d in e.on_cgroup_sample("trainer", sample(mem=600 << 20), 0)] == [Action.THROTTLE]
    e.replace_policy(load_policy_text("name: lax\n"))              # no budgets any more: the throttle is lifted
    assert [d.action for d in e.on_cgroup_sample("trainer", sample(mem=600 << 20), 1)] == [Action.THAW]
    assert e.on_cgroup_sample("trainer", sample(mem=600 << 20), 2) == []
    e.remove_agent("trainer")
    assert e.on_event(exec_event(b"/tmp/xmrig", [b"xmrig"], verdict=Verdict.DENY, rule_id=5), 3) == []


def test_reused_pid_running_a_tunnel_again_is_killed_again():
    e = engine()
    argv = [b"ssh", b"-R", b"1:h:2", b"h"]
    first = e.on_event(kernel_exec(e, b"/usr/bin/ssh", argv, pid=77, start_ns=1), 1.0)
    again = e.on_event(kernel_exec(e, b"/usr/bin/ssh", argv, pid=77, start_ns=2), 2.0)
    assert [(d.action, d.pid, d.start_ns) for d in first] == [(Action.KILL_PROCESS, 77, 1)]
    assert [(d.action, d.pid, d.start_ns) for d in again] == [(Action.KILL_PROCESS, 77, 2)]


def test_monitor_mode_says_would_deny_not_killed():
    """--monitor let the program run and the connect through: the reason must not say it was stopped."""
    e = engine()
    ds = e.on_event(kernel_exec(e, b"/tmp/xmrig", [b"xmrig"], verdict=Verdict.WOULD_DENY), 1.0)
    assert ds[0].reason.startswith("would deny exec /tmp/xmrig") and "killed" not in ds[0].reason
    tables = compile_policy(e.policy)
    rid = net_verdict(tables, daddr="198.51.100.1", dport=3333)
    ds = e.on_event(net_event("198.51.100.1", 3333, verdict=Verdict.WOULD_DENY, rule_id=rid), 1.0)
    assert ds[0].reason.startswith("would deny connect to 198.51.100.1:3333") and "EPERM" not in ds[0].reason
    enforced = engine().on_event(kernel_exec(e, b"/tmp/xmrig", [b"xmrig"]), 1.0)
    assert "killed before it ran" in enforced[0].reason and "would" not in enforced[0].reason


def test_the_reporter_says_would_for_monitor_violations():
    import io

    from rich.console import Console

    from pycontain.observe.report import Reporter
    out = io.StringIO()
    r = Reporter(console=Console(file=out, width=300, color_system=None))
    r.record({"kind": "violation", "agent": "a", "action": "kill-process", "monitor": True, "pid": 1,
              "rule": "exec.deny:x", "reason": "exec /usr/bin/ssh: matches '-R*'"})
    r.record({"kind": "violation", "agent": "a", "action": "deny", "monitor": False, "pid": 1,
              "rule": "exec.deny:x", "reason": "exec /tmp/xmrig denied in the kernel: killed before it ran"})
    first, second = out.getvalue().splitlines()
    assert "MONITOR would kill-process" in first and "STOPPED" not in first
    assert "STOPPED" in second and "would" not in second


def test_remembered_exec_verdicts_end_with_the_policy():
    """The user-space exec verdict of a command is remembered (agents repeat
    commands), so the same command after a policy change must be judged by
    the new policy, both ways."""
    e = engine(load_policy_text("exec: {deny: ['/opt/tools/*']}\n"))
    tool = (b"/opt/tools/miner", [b"miner", b"--fast"])
    first = e.on_event(exec_event(*tool, pid=50, start_ns=1), 1.0)
    again = e.on_event(exec_event(*tool, pid=51, start_ns=2), 2.0)
    assert [(d.action, d.pid) for d in first] == [(Action.KILL_PROCESS, 50)]
    assert [(d.action, d.pid) for d in again] == [(Action.KILL_PROCESS, 51)]
    e.replace_policy(load_policy_text("name: lax\n"))
    assert e.on_event(exec_event(*tool, pid=52, start_ns=3), 3.0) == []
    e.replace_policy(load_policy_text("exec: {deny: ['/opt/tools/*']}\n"))
    assert [d.pid for d in e.on_event(exec_event(*tool, pid=53, start_ns=4), 4.0)] == [53]


@pytest.mark.parametrize(("fd", "said"), [(3, "executable mapping of xmrig"),
                                          (0xFFFFFFFF, "mprotect(PROT_EXEC) of a mapping of xmrig"),
                                          (0xFFFFFFFE, "mremap of a mapping of xmrig"),
                                          (0xFFFFFFFD, "more mappings of files it may not execute")])
def test_executable_mappings_say_which_call_was_refused(fd, said):
    """issue 11: an mmap, mprotect or mremap of a denied file's mapping, and
    the untracked case, each named in the decision and the audit record."""
    from pycontain.core.events import ExecMapEvent, ExeIdentity
    from pycontain.core.records import event_record
    e = engine()
    rid = compile_policy(e.policy).exec_names["xmrig"]
    for verdict in (Verdict.DENY, Verdict.WOULD_DENY):
        ev = ExecMapEvent(h=header(EventType.EXEC_MAP, verdict=verdict, rule_id=rid), prot=5, fd=fd,
                          exe=ExeIdentity(name=b"xmrig"))
        ds = e.on_event(ev, 1.0)
        assert ds[0].rule == "exec.deny:xmrig" and said in ds[0].reason
        assert ds[0].monitor == (verdict == Verdict.WOULD_DENY)
    rec = event_record(ev, "trainer", 1.0)
    assert rec["call"] == ("mmap" if fd == 3 else "mprotect" if fd != 0xFFFFFFFE else "mremap")
    assert ("fd" in rec) == (fd == 3) and rec.get("untracked", False) == (fd == 0xFFFFFFFD)
