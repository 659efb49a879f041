"""Agents started through the daemon (app/agent_api.py, app/daemon_run.py)
with fake cgroups: unique names, labels checked and escaped, nothing left
behind by a client that never launched or died, --daemon-only / fallback."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from pycontain.actuate.actuators import proc_start_ns
from pycontain.actuate.identity_pool import IdentityPool
from pycontain.app import agent_api
from pycontain.app.runner import RunOptions, own_probe_options
from pycontain.core.errors import EnvironmentProblem, UsageError
from pycontain.core.labels import MAX_VALUE, clean_labels
from tests.unit.lease_fakes import Leases, User


class Cg:
    made: list = []

    def __init__(self, name):
        self.name, self.procs, self.removed = name, [], False
        Cg.made.append(self)

    @classmethod
    def create(cls, name, parent=None, plan=None):
        return cls(name)

    def pids(self):
        return list(self.procs)

    def remove(self):
        self.removed = True
        Cg.events.append(("remove", self.name))

    def send_kill(self):
        Cg.events.append(("kill", self.name))

    def to_dict(self):
        return {"name": self.name}


Cg.events = []


class Ctl:
    def __init__(self, policy=None):
        self.cgroups, self.labels, self.policy = {}, {}, policy

    def add_agent(self, name, cg, labels=None):
        self.cgroups[name], self.labels[name] = cg, labels

    def remove_agent(self, name):
        self.cgroups.pop(name)


@pytest.fixture
def starter(monkeypatch):
    monkeypatch.setattr(agent_api, "AgentCgroup", Cg)
    t = [0.0]
    leases = Leases()
    s = agent_api.AgentStarter(Ctl(), threading.RLock(), clock=lambda: t[0],
                               identities=IdentityPool(leases))
    s.t, s.leases = t, leases
    return s


def test_start_names_are_unique_and_labels_recorded(starter):
    a = starter.start({"name": "agent", "labels": {"episode": 17}})
    b = starter.start({"name": "agent"})
    assert (a["agent"], b["agent"]) == ("agent", "agent-2")
    assert starter.ctl.labels["agent"] == {"episode": "17"}


def test_stop_removes_cgroup_and_untracks(starter):
    starter.start({"name": "x"})
    cg = starter.started["x"].cgroup
    starter.stop({"name": "x"})
    assert cg.removed and "x" not in starter.ctl.cgroups
    with pytest.raises(UsageError):
        starter.stop({"name": "x"})


def test_client_that_never_launches_leaves_nothing_after_the_deadline(starter):
    starter.start({"name": "x"})
    cg = starter.started["x"].cgroup
    assert starter.sweep() == []                       # within the deadline: kept
    starter.t[0] = agent_api.START_DEADLINE_S + 1
    assert starter.sweep() == ["x"] and cg.removed and not starter.ctl.cgroups


def test_agent_whose_client_died_is_removed_when_empty(starter):
    starter.start({"name": "x"})
    cg = starter.started["x"].cgroup
    cg.procs = [123]
    starter.t[0] = 1e9
    assert starter.sweep() == []                       # running: kept past the deadline
    cg.procs = []
    assert starter.sweep() == ["x"] and cg.removed


class Watchdog:
    """actuate/watchdog.py's Watchdog: what it was told, and whether it lives."""

    started: list = []

    def __init__(self, cgroups):
        self.cgroups, self.dropped, self.live, self.armed, self.closed = list(cgroups), [], True, True, False
        Watchdog.started.append(self)

    def add(self, cg):
        self.cgroups.append(cg)

    def drop(self, cg):
        self.dropped.append(cg)

    def alive(self):
        return self.live

    def disarm(self):
        self.armed = False

    def close(self):
        self.closed = True


def test_a_clean_stop_kills_every_agent_before_waiting_for_any(starter):
    """systemd gives a stop 20 s: one agent after another, each waited for
    up to 5 s, did not fit; all are sent SIGKILL first."""
    for _ in range(3):
        starter.start({"name": "ep"})
    Cg.events.clear()
    starter.close()
    assert [e[0] for e in Cg.events] == ["kill"] * 3 + ["remove"] * 3
    assert not starter.started and not starter.ctl.cgroups


def test_without_a_home_each_started_agent_is_guarded_and_a_dead_watchdog_replaced(starter):
    Watchdog.started.clear()
    assert starter.arm(Watchdog) == []             # no home: nothing of an earlier daemon to end
    first = Watchdog.started[0]
    starter.start({"name": "a"})
    starter.start({"name": "b"})
    a, b = starter.started["a"].cgroup, starter.started["b"].cgroup
    assert first.cgroups == [a, b]                 # told before the answer: before the agent's first process
    starter.stop({"name": "a"})
    assert first.dropped == [a]
    first.live = False                             # killed (an OOM kill): the next sweep starts a new one
    starter.sweep()
    assert len(Watchdog.started) == 2 and Watchdog.started[1].cgroups == [b] and first.closed
    starter.close()                                # nothing left: disarmed, so its EOF kills nothing
    assert not Watchdog.started[1].armed and Watchdog.started[1].closed and starter.guard is None


def test_no_agent_is_started_without_a_watchdog(starter):
    def cannot(cgroups):
        raise EnvironmentProblem("the watchdog process did not start; refusing to run an agent unguarded")
    Cg.made.clear()
    starter.arm(cannot)                            # the daemon still serves (adopted agents) ...
    with pytest.raises(EnvironmentProblem):
        starter.start({"name": "x"})               # ... but starts none unguarded
    assert not Cg.made and not starter.started and not starter.ctl.cgroups


def test_bad_name_and_labels_refused(starter):
    with pytest.raises(UsageError):
        starter.start({"name": "../etc"})
    with pytest.raises(UsageError):
        starter.start({"name": "a", "labels": {"Bad Key": "v"}})
    assert not starter.started


def test_labels_bounded_and_escaped():
    out = clean_labels({"task": "\x1b[31mred" + "x" * 1000})
    assert "\x1b" not in out["task"] and len(out["task"]) <= MAX_VALUE + 12
    with pytest.raises(UsageError):
        clean_labels({f"k{i}": "v" for i in range(17)})


def test_daemon_only_excludes_own_probe_options():
    with pytest.raises(UsageError):
        own_probe_options(RunOptions(daemon_only=True, policy_path="p.yaml"))
    with pytest.raises(UsageError):
        own_probe_options(RunOptions(daemon_only=True, no_daemon=True))
    assert own_probe_options(RunOptions(audit_log="x")) == ["--audit-log"]


def test_no_daemon_falls_back_in_one_line_or_exits_under_daemon_only(tmp_path, capsys):
    from pycontain.app.daemon_run import try_daemon_run
    sock = str(tmp_path / "none.sock")
    assert try_daemon_run(["true"], RunOptions(daemon_socket=sock)) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pycontain daemon" in err
    with pytest.raises(EnvironmentProblem) as e:
        try_daemon_run(["true"], RunOptions(daemon_socket=sock, daemon_only=True))
    assert e.value.exit_code == 1


def test_start_answer_carries_cuda_visible_devices_of_the_grant(starter, monkeypatch):
    from pycontain.app import agent_client
    from pycontain.core.gpu_devices import GpuGrant, GpuInfo

    class Devices:
        granted = {"x": GpuGrant((GpuInfo(1, "GPU-b", 1), GpuInfo(3, "GPU-d", 3)), "policy")}
    starter.ctl.gpu_devices = Devices()
    out = starter.start({"name": "x"})
    assert out["env"] == {"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-d"}
    assert starter.start({"name": "y"})["env"] == {}             # no grant that confines: CUDA sees all

    seen = {}
    monkeypatch.setattr(agent_client, "launch", lambda argv, cg, env=None, **kw: seen.setdefault("env", env))
    monkeypatch.setattr(agent_client.AgentCgroup, "from_dict", classmethod(lambda cls, d: d))
    a = agent_client.DaemonAgent("/nonexistent.sock")
    monkeypatch.setattr(a.client, "post", lambda path, body: out)
    a.start()
    a.launch(["true"], env={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert seen["env"] == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "GPU-b,GPU-d"}     # the daemon's value wins


def test_home_is_one_per_daemon_socket():
    default = "/run/pycontain/pycontain.sock"
    assert agent_api.home_name(default, default) == "pycontain-agents"
    a, b = agent_api.home_name("/tmp/a/pc.sock", default), agent_api.home_name("/tmp/b/pc.sock", default)
    assert a != b and a.startswith("pycontain-agents-")
    assert agent_api.home_name("/tmp/a/pc.sock", default) == a     # a restarted daemon finds its own


def test_prepare_attaches_once_at_the_home_and_starts_go_there(monkeypatch, starter):
    made, planned, attached = [], [], []
    monkeypatch.setattr(agent_api, "detect_layout", lambda: type("L", (), {"own_v2": lambda self: "/cg/own"})())
    monkeypatch.setattr(agent_api, "make_home", lambda base, name, layout: made.append(f"{base}/{name}")
                        or f"{base}/{name}")
    monkeypatch.setattr(Cg, "plan", classmethod(lambda cls, parent, layout, v1_home: planned.append(parent)
                                                or ("plan", parent)), raising=False)
    probes = type("P", (), {"attach_at_ancestor": lambda self, p: attached.append(p)})()
    assert starter.prepare(probes, "pycontain-agents") is None
    assert made == planned == attached == ["/cg/own/pycontain-agents"]
    assert starter._plan == ("plan", "/cg/own/pycontain-agents")      # every start's dirs go below it


def test_prepare_failing_keeps_starting_agents(monkeypatch, starter):
    monkeypatch.setattr(agent_api, "detect_layout", lambda: type("L", (), {"own_v2": lambda self: "/cg/own"})())

    def refuse(base, name, layout):
        raise OSError(13, "Permission denied")
    monkeypatch.setattr(agent_api, "make_home", refuse)
    assert "directly under /cg/own" in starter.prepare(None, "pycontain-agents")
    assert starter.start({"name": "agent"})["agent"] == "agent"      # per-start placement, as before


def test_start_many_makes_one_agent_per_label_set(starter):
    out = starter.start_many({"name": "ep", "labels": [{"episode": 1}, {"episode": 2}, {}]})
    assert [a["agent"] for a in out["agents"]] == ["ep", "ep-2", "ep-3"]
    assert starter.ctl.labels == {"ep": {"episode": "1"}, "ep-2": {"episode": "2"}, "ep-3": {}}


def test_start_many_is_all_or_none(starter, monkeypatch):
    with pytest.raises(UsageError):                 # bad input: refused before anything is made
        starter.start_many({"name": "ep", "labels": [{"episode": 1}, {"Bad Name": 2}]})
    assert not starter.ctl.cgroups and not starter.started and not starter.leases.calls
    made = []

    def create(name, parent=None, plan=None):
        if len(made) == 2:
            raise OSError(28, "No space left on device")
        made.append(Cg(name))
        return made[-1]
    monkeypatch.setattr(Cg, "create", staticmethod(create))
    with pytest.raises(OSError):
        starter.start_many({"name": "ep", "labels": [{}, {}, {}, {}]})
    assert not starter.ctl.cgroups and not starter.started and all(c.removed for c in made)
    assert starter.leases.calls == [((61184, 65519), 4)]                 # one lease call for the batch
    assert sorted(starter.leases.released) == [70000, 70001, 70002, 70003]   # each given back once


@pytest.mark.parametrize("labels", [None, {}, [], [{}] * (agent_api.MAX_BATCH + 1), "ep"])
def test_start_many_refuses_what_is_not_a_list_of_label_sets(starter, labels):
    with pytest.raises(UsageError, match="makes 1 to 128 agents"):
        starter.start_many({"name": "ep", "labels": labels})
    assert not starter.started


def test_popen_many_of_nothing_asks_no_daemon():
    from pycontain import client
    assert client.popen_many([], socket="/nonexistent/pc.sock") == []


# ---- the node policy's privileges and the agent's own uid -------------------

def test_start_answer_carries_node_privileges_and_a_uid_given_back_at_stop(starter):
    from pycontain.core.policy import load_policy_text
    starter.ctl.policy = load_policy_text("name: n\nprivileges: {seccomp: false, dynamic_user_range: 70000-70100}\n")
    out = starter.start({"name": "x"})
    assert out["privileges"]["seccomp"] is False and out["privileges"]["no_new_privs"] is True
    assert out["identity"] == {"uid": 70000, "gid": 70000, "name": "pycontain-70000",
                               "home": "/run/pycontain-agents/70000"}
    assert starter.leases.calls == [((70000, 70100), 1)] and not starter.leases.released
    starter.stop({"name": "x"})
    assert starter.leases.released == [70000]
    starter.ctl.policy = load_policy_text("name: n\nprivileges: {dynamic_user: false}\n")
    out = starter.start({"name": "y"})
    assert "identity" not in out and out["privileges"]["dynamic_user"] is False
    starter.t[0] = 1e9
    starter.sweep()                                # a client that died: its uid too goes back
    assert starter.leases.released == [70000]


def _client_with_answer(monkeypatch, answer):
    from pycontain.app import agent_client
    seen = {}
    monkeypatch.setattr(agent_client, "launch", lambda argv, cg, **kw: seen.update(kw))
    monkeypatch.setattr(agent_client.AgentCgroup, "from_dict", classmethod(lambda cls, d: d))
    a = agent_client.DaemonAgent("/nonexistent.sock")
    monkeypatch.setattr(a.client, "post", lambda path, body: answer)
    return a, seen


def test_client_launches_as_the_daemons_uid_with_its_privileges(starter, monkeypatch):
    from pycontain.core.policy import load_policy_text
    starter.ctl.policy = load_policy_text("name: n\nprivileges: {drop_capabilities: false}\n")
    a, seen = _client_with_answer(monkeypatch, starter.start({"name": "x"}))
    a.start()
    a.launch(["true"])
    assert seen["identity"].uid == 70000 and seen["user"] is None
    assert seen["privileges"].drop_capabilities is False and seen["privileges"].seccomp is True
    a.launch(["true"], user="nobody")              # a named user: the caller's choice
    assert seen["identity"] is None and seen["user"] == "nobody"


def test_client_never_runs_the_agent_as_itself_when_the_daemon_sent_no_uid(monkeypatch):
    from pycontain.app import agent_client
    mine = []
    monkeypatch.setattr(agent_client, "dynamic_user", lambda user, priv: mine.append(User(71000, mine)) or mine[0])
    a, seen = _client_with_answer(monkeypatch, {"agent": "x", "cgroup": {}})   # an older daemon's answer
    a.start()
    a.launch(["true"])
    assert seen["identity"].uid == 71000 and seen["privileges"].seccomp is True   # all taken, own uid
    a.finish()
    assert mine[1:] == [71000]                         # given back when the agent is done


@pytest.mark.parametrize("bad", [{"privileges": {"seccomp": "no"}}, {"privileges": {"x": 1}},
                                 {"identity": {"uid": 0, "gid": 0, "name": "root", "home": "/root"}},
                                 {"identity": {"uid": "a"}}])
def test_client_refuses_a_start_answer_it_cannot_follow(monkeypatch, bad):
    a, _ = _client_with_answer(monkeypatch, {"agent": "x", "cgroup": {}, **bad})
    with pytest.raises(EnvironmentProblem):
        a.start()


# ---- an agent ends with the process that asked for it -------------------------

def test_an_agent_ends_with_the_process_that_started_it(starter, monkeypatch):
    me = os.getpid()
    starter.alive = lambda owner: owner in live
    live = {agent_api.asker({"_peer_pid": me})}
    assert live == {(me, proc_start_ns(me))}
    a = starter.start({"name": "a", "_peer_pid": me})
    b = starter.start({"name": "b", "_peer_pid": 0})          # not visible in the daemon's pid namespace
    for name in (a["agent"], b["agent"]):
        starter.started[name].cgroup.procs = [4242]           # both running
    assert starter.sweep() == []
    live.clear()                                              # the asker exited (or its pid was reused)
    cg = starter.started["a"].cgroup
    assert starter.sweep() == ["a"] and cg.removed and "a" not in starter.ctl.cgroups
    assert "b" in starter.started                             # no known asker: ends when its processes do


def test_a_reused_pid_is_not_the_asker():
    me = (os.getpid(), proc_start_ns(os.getpid()))
    assert agent_api.same_process_lives(me)
    assert not agent_api.same_process_lives((me[0], me[1] - 10**9))   # same pid, another start
    assert agent_api.asker({"_peer_pid": 2**22 + 12345}) is None       # no such process
    assert agent_api.asker({"_peer_pid": "1"}) is None


def test_stopping_kills_once_after_the_timeout(monkeypatch):
    from pycontain.app import stopping
    t, notes, kills = [100.0], [], []
    monkeypatch.setattr(stopping.time, "monotonic", lambda: t[0])
    s = stopping.Stopping(2.0, notes.append, lambda: kills.append(t[0]))
    s.check()
    s.signalled(signal.SIGTERM)
    t[0] = 101.0
    s.signalled(signal.SIGINT)                   # a second signal does not restart the clock
    s.check()
    t[0] = 102.0
    s.check()
    s.check()
    assert kills == [102.0] and notes[0] == "stopping the agent (SIGTERM; killed after 2s)"
    assert notes[1] == "the agent did not stop within 2s: killing it"
