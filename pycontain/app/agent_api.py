"""Agents started through the node daemon (issue 14): `pycontain run` and
pycontain.client ask the daemon over the state API; no per-agent compile.

    POST /v1/start  {"name", "labels"} -> {"agent", "cgroup": AgentCgroup.to_dict(), "env",
                                           "privileges", "identity"}
    POST /v1/starts {"name", "labels": [labels, ...]} -> {"agents": [start answer, ...]}
    POST /v1/stop   {"name"}

`/v1/starts` makes one agent per label set in one request (a rollout worker's
episodes: pycontain.client.popen_many), all or none.

The daemon creates the agent's cgroup, applies the node policy's budgets and
GPU grant, tracks it with its one program set (kernel rules and hooks apply
from the cgroup's first task on), and answers with the cgroup, the node
policy's `privileges:` and, unless the policy turns it off, a fresh uid of
the agent's own (leased ahead: actuate/identity_pool.py); the client
launches the agent into it (actuate/launch.py: the child joins the cgroup
before it execs, then takes that uid and drops privileges as the policy
says, as a standalone run does) and says stop when the agent has exited;
the daemon then kills what is left, removes the cgroup and gives the uid
back.

A client that dies mid-start leaves nothing behind: a started cgroup that no
process has joined by its deadline is removed, and one whose processes have
all exited (the client died without saying stop) is removed at the next
sweep. An agent ends with the process that asked for it (SO_PEERCRED of the
request, checked by pid and start time): a `pycontain run` killed by
SIGKILL (Slurm after KillWait) or a rollout worker that crashed does not
leave its agents running, outside the job's cgroup, on their GPUs. The
sweeps run in the daemon's loop (:meth:`AgentStarter.sweep`).

Fail closed when the daemon dies: the agents it started are contained by
what lives in its memory (their names, budgets, policy) and by programs the
next daemon retires, so a daemon that dies however (SIGKILL, OOM kill,
crash, systemd's SIGKILL after TimeoutStopSec) must not leave them running.
A watchdog process (actuate/watchdog.py), armed on their home cgroup, kills
them all when its pipe from the daemon closes; a new daemon ends whatever
an earlier one of its home left (its watchdog died with it) before it
takes over the pins (:meth:`AgentStarter.arm`). A clean stop ends them too
(:meth:`AgentStarter.close`). Adopted agents are not started here: they keep
their pinned kernel enforcement, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..actuate.actuators import proc_start_ns, process_exited
from ..actuate.cgroups import AgentCgroup, CreatePlan, detect_layout, home_cgroup, make_home, remove_home
from ..actuate.dynamic_user import DynamicUser, identity_to_dict
from ..actuate.identity_pool import IdentityPool
from ..actuate.watchdog import Watchdog
from ..core.errors import EnvironmentProblem, PycontainError, UsageError
from ..core.labels import clean_labels
from ..core.policy import Privileges, privileges_to_dict
from ..observe.state_api import PEER_PID
from .runner import check_name

log = logging.getLogger("pycontain.daemon")

DEFAULT_HOME = "pycontain-agents"

START_DEADLINE_S = 10.0     # from the start answer to the agent's first process
MAX_BATCH = 128             # agents one /v1/starts request may make


@dataclass
class _Started:
    cgroup: AgentCgroup
    deadline: float | None      # None once a process was seen in the cgroup
    user: DynamicUser | None = None   # its uid, given back once the cgroup is gone
    owner: tuple[int, int] | None = None   # (pid, start ns) of the process that asked: the agent ends with it


class AgentStarter:
    """The start/stop handlers; ``ctl`` is the daemon's Controller, ``lock``
    the lock its loop holds while it touches the controller."""

    def __init__(self, ctl, lock, cgroup_parent: str | None = None, clock=time.monotonic,
                 identities: IdentityPool | None = None, alive: Callable[[tuple[int, int]], bool] | None = None):
        self.ctl, self.lock, self.parent, self.clock = ctl, lock, cgroup_parent, clock
        self.alive = alive or same_process_lives
        self.identities = identities or IdentityPool()
        self.started: dict[str, _Started] = {}
        self._names = threading.Lock()
        self._plan: CreatePlan | None = None     # where started agents go (prepare)
        self._home = ""                           # the name of their home dirs
        self._home_cg: AgentCgroup | None = None  # those dirs as one cgroup (arm)
        self._start_watchdog: Callable[[list[AgentCgroup]], Watchdog] | None = None   # set by arm
        self.guard: Watchdog | None = None        # kills the started agents if the daemon dies

    def prepare(self, probes, home: str) -> str | None:
        """Once, before serving: make the dir `home` (under the cgroup parent,
        default the daemon's own cgroup) that holds the started agents, attach
        the cgroup programs there once (they filter by agent in the kernel, so
        a start adds map entries, not 13 links), and compute where each agent's
        dirs go. Returns why the programs stay per agent, or None."""
        priv = self._privileges()
        self.identities.start(priv.dynamic_user_range if priv.dynamic_user else None)
        layout = detect_layout()
        base = self.parent or layout.own_v2()
        try:
            path = make_home(base, home, layout)
            self._plan = AgentCgroup.plan(path, layout, v1_home=home)
            self._home = home
        except (OSError, PycontainError) as e:
            return f"started agents go directly under {base} ({e})"
        try:
            if probes is not None:
                probes.attach_at_ancestor(path)
        except (OSError, PycontainError) as e:
            return f"cgroup programs attached per started agent, not once at {path} ({e})"
        return None

    def arm(self, start_watchdog: Callable[[list[AgentCgroup]], Watchdog] = Watchdog.start) -> list[str]:
        """Once, after prepare and before serving: end what an earlier daemon
        of this home started and left running (it died hard, its watchdog
        with it: nothing holds their identity or policy any more, and the
        takeover retires the programs they are in), then start the watchdog
        that ends this daemon's agents if it dies. Armed on the home, it
        covers every agent from its mkdir on at no cost per start; without a
        home each agent is added as it is made. Returns the dirs ended."""
        self._home_cg = home_cgroup(self._plan, self._home) if self._plan is not None else None
        ended: list[str] = []
        if self._home_cg is not None:
            try:
                ended = self._home_cg.clear()
            except (OSError, PycontainError) as e:
                log.warning("could not end what an earlier daemon started under %s: %s", self._home_cg.v2_path, e)
        self._start_watchdog = start_watchdog
        try:
            with self._names:
                self._keep_guard()
        except EnvironmentProblem as e:
            log.warning("%s: agents are not started until a watchdog runs", e)
        return ended

    def _keep_guard(self) -> None:
        """A live watchdog, or EnvironmentProblem: no agent is started
        unguarded. Called with self._names held (adds read its answer)."""
        if self._start_watchdog is None or (self.guard is not None and self.guard.alive()):
            return
        if self.guard is not None:
            log.warning("the watchdog of the started agents died; starting a new one")
            self.guard.close()
            self.guard = None
        targets = [self._home_cg] if self._home_cg else [e.cgroup for e in list(self.started.values())]
        self.guard = self._start_watchdog(targets)

    def _create(self, name: str) -> AgentCgroup:
        self._keep_guard()
        if self._plan is not None:
            cg = AgentCgroup.create(name, plan=self._plan)
        else:
            cg = AgentCgroup.create(name, parent=self.parent)
        if self.guard is not None and self._home_cg is None:
            try:
                self.guard.add(cg)            # before the answer: before its first process
            except BaseException:
                cg.remove()
                raise
        return cg

    def handlers(self) -> dict:
        return {"start": self.start, "starts": self.start_many, "stop": self.stop}

    def _unique(self, name: str) -> str:
        """name, or name-N when an agent of that name runs (32 episodes may all say 'agent')."""
        taken = set(self.ctl.cgroups) | set(self.started)
        if name not in taken:
            return name
        n = 2
        while f"{name}-{n}"[:32] in taken:
            n += 1
        return f"{name}-{n}"[:32]

    def start(self, body: dict) -> dict:
        return self._start(body.get("name"), [body.get("labels")], asker(body))[0]

    def start_many(self, body: dict) -> dict:
        """One agent per entry of body["labels"], all or none (a failed start
        removes those this request made)."""
        sets = body.get("labels")
        if not isinstance(sets, list) or not 1 <= len(sets) <= MAX_BATCH:
            raise UsageError(f"/v1/starts makes 1 to {MAX_BATCH} agents: labels must be a list of that many "
                             "label sets, one per agent")
        return {"ok": True, "agents": self._start(body.get("name"), sets, asker(body))}

    def _start(self, want: object, label_sets: list, owner: tuple[int, int] | None) -> list[dict]:
        """One agent per label set, all or none; every input is checked
        before anything is made."""
        name = str(want or "agent")
        check_name(name)
        labels = [clean_labels(one) for one in label_sets]
        priv = self._privileges()
        users = self.identities.take(priv.dynamic_user_range, len(labels)) if priv.dynamic_user else []
        made: list[dict] = []
        try:
            for i, one in enumerate(labels):
                made.append(self._start_one(name, one, priv, users[i] if users else None, owner))
        except BaseException:
            for answer in made:
                self._forget(answer["agent"])          # gives its uid back
            self.identities.give_back(users[len(made) + 1:])   # the failed one's went back with it
            raise
        return made

    def _start_one(self, want: str, labels: dict, priv: Privileges, user: DynamicUser | None,
                   owner: tuple[int, int] | None) -> dict:
        with self._names:
            name = self._unique(want)
            try:
                cg = self._create(name)      # mkdirs: outside the loop's lock
            except BaseException:
                self.identities.give_back([user] if user else [])
                raise
            self.started[name] = _Started(cg, self.clock() + START_DEADLINE_S, user, owner)
        try:
            with self.lock:
                self.ctl.add_agent(name, cg, labels=labels)
        except BaseException:
            self._forget(name)
            raise
        answer = {"ok": True, "agent": name, "cgroup": cg.to_dict(), "env": self._gpu_env(name),
                  "privileges": privileges_to_dict(priv)}
        if user is not None:
            answer["identity"] = identity_to_dict(user.identity)
        return answer

    def _privileges(self) -> Privileges:
        """The node policy's (reloads included): what the client takes from the agent."""
        policy = getattr(self.ctl, "policy", None)
        return policy.privileges if policy is not None else Privileges()

    def _gpu_env(self, name: str) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES matching the agent's GPU grant (device
        confinement is the kernel's; this only renumbers what CUDA sees)."""
        devices = getattr(self.ctl, "gpu_devices", None)
        grant = devices.granted.get(name) if devices is not None else None
        visible = grant.cuda_visible_devices() if grant is not None else None
        return {"CUDA_VISIBLE_DEVICES": visible} if visible is not None else {}

    def stop(self, body: dict) -> dict:
        name = str(body.get("name", ""))
        if name not in self.started:
            raise UsageError(f"no agent {name!r} started through the daemon")
        self._forget(name)
        return {"ok": True, "agent": name}

    def _forget(self, name: str) -> None:
        entry = self.started.pop(name, None)
        if entry is None:
            return
        # remove first, then untrack: programs stay with a dying cgroup's sockets
        try:
            entry.cgroup.remove()
        except (OSError, PycontainError) as e:
            log.warning("removing the cgroup of %s: %s", name, e)
        with self.lock:
            if name in self.ctl.cgroups:
                self.ctl.remove_agent(name)
        self._unguard(entry.cgroup)
        if entry.user is not None:
            # a process of the uid that outlived the removal keeps it from the
            # next lease: allocation skips uids a running process holds
            self.identities.give_back([entry.user])

    def _unguard(self, cg: AgentCgroup) -> None:
        guard = self.guard
        if guard is None or self._home_cg is not None:
            return
        try:
            guard.drop(cg)
        except EnvironmentProblem:
            pass                               # gone: _keep_guard starts one with what is left

    def sweep(self) -> list[str]:
        """Remove agents whose client is gone: never joined by the deadline,
        joined and now empty, or still running after the process that asked
        for them exited (its leftovers are killed). Returns their names.
        Also replaces a watchdog that died (fail closed needs a live one)."""
        try:
            with self._names:
                self._keep_guard()
        except EnvironmentProblem as e:
            log.warning("%s", e)
        now, gone = self.clock(), []
        for name, entry in list(self.started.items()):
            if entry.owner is not None and not self.alive(entry.owner):
                log.warning("agent %s: the process that started it (pid %d) is gone: ending it",
                            name, entry.owner[0])
                gone.append(name)
                continue
            try:
                busy = bool(entry.cgroup.pids())
            except OSError:
                busy = False
            if busy:
                entry.deadline = None
            elif entry.deadline is None or now > entry.deadline:
                gone.append(name)
        for name in gone:
            self._forget(name)
        return gone

    def close(self) -> None:
        """Clean stop: end every started agent at once. All are sent SIGKILL
        first, then each is waited for and removed, so a stop with many
        agents takes about the time of one (systemd's TimeoutStopSec is 20 s;
        one by one each could take 5 s). The watchdog is disarmed only when
        nothing is left: otherwise its EOF kills the rest."""
        cgroups = [e.cgroup for e in self.started.values()]
        for cg in cgroups:
            try:
                cg.send_kill()
            except (OSError, PycontainError) as e:
                log.warning("killing the agent in %s: %s", cg.v2_path, e)
        for name in list(self.started):
            self._forget(name)
        self.identities.close()
        if self._plan is not None:
            remove_home(self._plan, self._home)   # empty now; busy (an agent left over): kept, still attached
        self._close_guard(cgroups)

    def _close_guard(self, cgroups: list[AgentCgroup]) -> None:
        guard, self.guard = self.guard, None
        if guard is None:
            return
        try:
            if not any(cg.pids() for cg in ([self._home_cg] if self._home_cg else cgroups)):
                guard.disarm()
        except (OSError, EnvironmentProblem):
            pass                               # armed (or gone): its EOF kills what is left
        guard.close()


def asker(body: dict) -> tuple[int, int] | None:
    """(pid, start ns) of the process that sent the request (the state API
    server's SO_PEERCRED), or None: not visible in the daemon's pid
    namespace, or gone already (then no process joins and the start
    deadline removes the agent)."""
    pid = body.get(PEER_PID)
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        return pid, proc_start_ns(pid)
    except (OSError, ValueError, IndexError):
        return None


def same_process_lives(owner: tuple[int, int]) -> bool:
    """The pid still names the process that asked (not a reused pid) and it has not exited."""
    pid, start_ns = owner
    try:
        return not process_exited(pid) and proc_start_ns(pid) == start_ns
    except (OSError, ValueError, IndexError):
        return False


def home_name(socket_path: str, default_socket: str) -> str:
    """The started agents' parent dir: one per daemon socket, so daemons
    serving other sockets (tests, a second node daemon) never share it and a
    restarted daemon finds its own again."""
    if os.path.abspath(socket_path) == default_socket:
        return DEFAULT_HOME
    return f"{DEFAULT_HOME}-{hashlib.sha256(os.path.abspath(socket_path).encode()).hexdigest()[:8]}"
