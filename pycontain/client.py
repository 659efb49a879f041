"""Python API for programs that start agents (RL rollout workers, harnesses).

Talks to the node daemon (`pycontain daemon`) over its state API; no BPF is
loaded in the caller and nothing is compiled per agent. The caller must be
allowed to use the socket (root) and to write the agent's cgroup.procs.
Each agent runs as a fresh uid of its own, never as the caller (the node
policy's privileges.dynamic_user; `user=` names one instead), under the
node policy's other privileges: what it runs and reads must be readable by
other users.

    from pycontain import client

    # one process, subprocess.Popen-compatible
    p = client.Popen(["python", "episode.py"], name="rollout", labels={"episode": 17})
    p.wait()

    # a rollout worker's episodes: one request to the daemon for all of them
    ps = client.popen_many([["python", "episode.py", str(i)] for i in range(32)], name="rollout",
                           labels=[{"episode": i} for i in range(32)])

    # a block: everything started in it is one contained agent; leaving the
    # block ends what is left of it and removes its cgroup
    with client.contained(name="rollout", labels={"episode": 18}) as agent:
        agent.Popen(["python", "env_server.py"])
        agent.Popen(["python", "policy.py"]).wait()

Labels (at most 16; names [a-z][a-z0-9_.-]{0,31}; values escaped, cut at 256
characters) go to the audit log and the state API, never to metrics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .app.agent_client import DaemonAgent

__all__ = ["Agent", "Popen", "contained", "popen_many"]


class Popen:
    """subprocess.Popen in a fresh agent of the node daemon. Everything
    subprocess.Popen has (pid, stdin, stdout, returncode, kill, send_signal,
    ...) is there; wait, poll and communicate also end the agent (its
    leftovers are killed, its cgroup removed) once the process has exited."""

    def __init__(self, args: Sequence[str], *, name: str = "agent", labels: dict | None = None,
                 socket: str | None = None, user: str | None = None, _agent: DaemonAgent | None = None,
                 _own: bool | None = None, **popen: Any):
        self._own = _agent is None if _own is None else _own
        self._agent = _agent or DaemonAgent(socket, name=name, labels=labels)
        self._proc = self._agent.launch(list(args), user=user, finish_on_error=self._own, **popen)
        self.agent = self._agent.name          # the daemon's name for it (name, or name-N)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._proc, attr)

    def _done(self, rc: int | None) -> int | None:
        if rc is not None and self._own:
            self._agent.finish()
        return rc

    def poll(self) -> int | None:
        return self._done(self._proc.poll())

    def wait(self, timeout: float | None = None) -> int:
        rc = self._proc.wait(timeout)
        self._done(rc)
        return rc

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        out = self._proc.communicate(input, timeout)
        self._done(self._proc.returncode)
        return out

    def __enter__(self) -> Popen:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._proc.__exit__(exc_type, exc, tb)
        self._done(self._proc.returncode if self._proc.returncode is not None else 0)


class Agent:
    """One contained agent (a cgroup of the daemon) that several processes may share."""

    def __init__(self, agent: DaemonAgent):
        self._agent = agent
        self.name = agent.name
        self.cgroup = agent.cgroup.v2_path if agent.cgroup else None

    def Popen(self, args: Sequence[str], **popen: Any) -> Popen:  # noqa: N802 - mirrors subprocess.Popen
        return Popen(args, _agent=self._agent, **popen)

    def run(self, args: Sequence[str], **popen: Any) -> subprocess.CompletedProcess:
        p = self.Popen(args, **popen)
        out, err = p.communicate()
        return subprocess.CompletedProcess(list(args), p.returncode, out, err)


def popen_many(argvs: Sequence[Sequence[str]], *, name: str = "agent", labels: dict | Sequence[dict] | None = None,
               socket: str | None = None, user: str | None = None, **popen: Any) -> list[Popen]:
    """One Popen per argv, each in an agent of its own, the agents made by one
    daemon request and launched from this thread (a rollout worker starting
    its episodes: no request and no thread per episode). labels: one dict
    for all, or one per argv. All or none: if a launch fails, the processes
    already started are killed, every agent is ended, and the error raised."""
    argvs = [list(a) for a in argvs]
    if not argvs:
        return []
    sets = [dict(x) for x in labels] if isinstance(labels, Sequence) else [dict(labels or {})] * len(argvs)
    if len(sets) != len(argvs):
        raise ValueError(f"{len(argvs)} argvs but {len(sets)} label sets")
    agents = DaemonAgent.start_many(socket, sets, name=name)
    started: list[Popen] = []
    try:
        for argv, agent in zip(argvs, agents, strict=True):
            started.append(Popen(argv, user=user, _agent=agent, _own=True, **popen))
    except BaseException:
        for p in started:
            p.kill()
            p.wait()
        for agent in agents:
            agent.finish()
        raise
    return started


@contextmanager
def contained(name: str = "agent", labels: dict | None = None, socket: str | None = None) -> Iterator[Agent]:
    """Contain what the block starts through the yielded Agent; on exit the
    agent's remaining processes are killed and its cgroup removed."""
    agent = DaemonAgent(socket, name=name, labels=labels)
    agent.start()
    try:
        yield Agent(agent)
    finally:
        agent.finish()
