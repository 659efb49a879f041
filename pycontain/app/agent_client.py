"""The client side of agents started through the node daemon (issue 14).

`pycontain run` (when a daemon answers) and pycontain.client use
:class:`DaemonAgent`: ask the daemon to create and contain a cgroup
(app/agent_api.py), launch the agent into it (actuate/launch.py: the child
joins the cgroup before exec, then runs as the fresh uid the daemon leased
for it, unless the caller names a user, with the node policy's
`privileges:`, as in a standalone run), then, when it has exited, tell the
daemon to remove what is left (and give the uid back).

Fail closed: the daemon's watchdog kills every agent it started when the
daemon dies (app/agent_api.py); `pycontain run` (:meth:`DaemonAgent.supervise`)
also checks once a second that the daemon still answers and kills its agent
once it has been gone for DAEMON_GRACE_S. pycontain.client does not poll.
No BPF is loaded here.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time

from ..actuate.cgroups import AgentCgroup
from ..actuate.dynamic_user import DynamicUser, Identity, dynamic_user, identity_from_dict
from ..actuate.launch import launch
from ..core.errors import EnvironmentProblem, PolicyError
from ..core.policy import Privileges, privileges_from_dict
from ..observe.state_api import ApiError, StateClient, daemon_answers

DEFAULT_SOCKET = "/run/pycontain/pycontain.sock"
DAEMON_GRACE_S = 3.0


def socket_path(path: str | None = None) -> str:
    return path or os.environ.get("PYCONTAIN_SOCKET") or DEFAULT_SOCKET


def daemon_problem(path: str) -> str | None:
    """None when a daemon answers at path, else why not (one line)."""
    if not os.path.exists(path):
        return f"no pycontain daemon at {path}"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"permission denied on {path} (the state API is root-only)"
    if not daemon_answers(path):
        return f"the pycontain daemon at {path} does not answer"
    return None


class DaemonAgent:
    """One agent started through the daemon: start(), launch(), finish()."""

    def __init__(self, path: str | None = None, *, name: str = "agent", labels: dict | None = None,
                 timeout: float = 10.0):
        self.path = socket_path(path)
        self.client = StateClient(self.path, timeout=timeout)
        self.want_name, self.labels = name, dict(labels or {})
        self.name: str | None = None
        self.cgroup: AgentCgroup | None = None
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}      # from the daemon: CUDA_VISIBLE_DEVICES of the GPU grant
        self.privileges = Privileges()     # from the daemon: the node policy's; until then all taken
        self.identity: Identity | None = None     # from the daemon: the agent's fresh uid
        self._own_user: DynamicUser | None = None     # taken here when an older daemon sent none
        self._last_seen = time.monotonic()

    def start(self) -> AgentCgroup:
        return self.take(self.client.post("/v1/start", {"name": self.want_name, "labels": self.labels}))

    def take(self, out: dict) -> AgentCgroup:
        """Adopt the daemon's start answer (one entry of /v1/starts, or /v1/start's)."""
        self.name = str(out["agent"])
        self.cgroup = AgentCgroup.from_dict(out["cgroup"])
        self.env = {str(k): str(v) for k, v in (out.get("env") or {}).items()}
        self.privileges = _privileges_of(json.dumps(out.get("privileges"), sort_keys=True))
        self.identity = identity_from_dict(out["identity"]) if out.get("identity") else None
        return self.cgroup

    def launch(self, argv: list[str], *, user: str | None = None, env: dict | None = None,
               cwd: str | None = None, finish_on_error: bool = True, **popen) -> subprocess.Popen:
        if self.cgroup is None:
            self.start()
        assert self.cgroup is not None
        if self.env:        # the daemon's values win: they match what the kernel lets the agent open
            env = {**(os.environ if env is None else env), **self.env}
        try:
            identity = None if user is not None else self._agent_identity()
            self.proc = launch(argv, self.cgroup, user=user, env=env, cwd=cwd, privileges=self.privileges,
                               identity=identity, **popen)
        except BaseException:
            if finish_on_error:
                self.finish()
            raise
        return self.proc

    def _agent_identity(self) -> Identity | None:
        """The daemon's uid for the agent; one taken here if the policy wants
        one and the daemon (an older one) sent none: never the caller's."""
        if self.identity is None and self.privileges.dynamic_user:
            self._own_user = self._own_user or dynamic_user(None, self.privileges)
            return self._own_user.identity if self._own_user else None
        return self.identity

    @classmethod
    def start_many(cls, path: str | None, labels: list[dict], *, name: str = "agent") -> list[DaemonAgent]:
        """One agent per label set, made by one request (all or none)."""
        out = StateClient(socket_path(path)).post("/v1/starts", {"name": name, "labels": labels})
        agents = []
        for answer, one in zip(out["agents"], labels, strict=True):
            agent = cls(path, name=name, labels=one)
            agent.take(answer)
            agents.append(agent)
        return agents

    def daemon_alive(self) -> bool:
        """False once the daemon has not answered for DAEMON_GRACE_S."""
        now = time.monotonic()
        if daemon_answers(self.path):
            self._last_seen = now
        return now - self._last_seen < DAEMON_GRACE_S

    def kill(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()

    def finish(self) -> None:
        """Tell the daemon the agent is done (it kills leftovers, removes the cgroup)."""
        if self.name is None:
            return
        name, self.name = self.name, None
        try:
            self.client.post("/v1/stop", {"name": name})
        except (EnvironmentProblem, ApiError):
            # the daemon is gone, or a new one does not know the agent (it
            # ended an earlier daemon's): nothing contains leftovers any more
            if self.cgroup is not None:
                self.cgroup.kill()
        if self._own_user is not None:
            self._own_user.release()
            self._own_user = None

    def supervise(self, proc: subprocess.Popen, on_gone=None, on_tick=None) -> int:
        """Wait for proc; kill the agent if the daemon is gone. Returns its returncode."""
        checked = time.monotonic()
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if on_tick:
                on_tick()
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if not self.daemon_alive():
                    if on_gone:
                        on_gone()
                    self.kill()


@functools.lru_cache(maxsize=8)
def _privileges_of(answer: str) -> Privileges:
    """The answer's `privileges`, parsed once per distinct text: every start
    of a node carries the same, and 32 starts at once share the interpreter."""
    try:
        return privileges_from_dict(json.loads(answer))
    except PolicyError as e:
        raise EnvironmentProblem(f"the daemon's start answer: {e}") from None


def relay_signals(get_proc, on_signal=None) -> dict:
    """Forward SIGINT/SIGTERM/SIGHUP to the agent's process group; returns the old handlers."""
    def forward(signum, _frame):
        proc = get_proc()
        if proc is not None and proc.poll() is None:
            if on_signal:
                on_signal(signum)
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
    return {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
