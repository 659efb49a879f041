"""Fail-closed watchdog: if pycontain dies, its agents do not run on uncontained.

Before the agent is launched, the controller spawns this small process
(``python -m pycontain.actuate.watchdog``) in its own session, outside the agent
cgroups. It holds the read end of a pipe whose only write end is held by the
controller: the pipe is O_CLOEXEC (PEP 446) and every child pycontain starts
(the agent included) is started with close_fds, so nobody else keeps it open.
When the controller dies for any reason (SIGKILL, OOM kill, crash) the kernel
closes its fds, the watchdog reads EOF and at once kills (``mode="kill"``:
cgroup.kill, or v1 freeze + SIGKILL + thaw, then rmdir) or freezes
(``mode="freeze"``) every agent cgroup it was told about. A clean shutdown
writes ``bye`` first and the watchdog exits quietly on EOF.

Why not PR_SET_PDEATHSIG alone: it fires when the *thread* that forked exits,
not the process (spurious kills from a worker thread); it is cleared when the
child changes credentials (``--user``) or execs a set-uid program; it reaches
only the direct child, never a daemon that double-forked out of the process
tree; and an agent can reset it with prctl. The pipe's EOF has none of these
holes and the cgroup (not the process tree) says what belongs to the agent.

The node daemon keeps one for the agents it starts (app/agent_api.py), armed
on their home cgroup: its death ends them all, as its clean stop does.

Protocol on the pipe (one line each): ``add <json>`` (an AgentCgroup),
``drop <cgroup2 path>`` (an agent already ended: forget it), ``sync`` (the
watchdog answers ``ok`` on its stdout once everything before it is in
force), ``bye`` (disarm).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

from ..core.errors import EnvironmentProblem, UsageError
from .cgroups import AgentCgroup

MODES = ("kill", "freeze")
START_TIMEOUT_S = 15.0


class Watchdog:
    def __init__(self, proc: subprocess.Popen, wfd: int, mode: str):
        self.proc = proc
        self._wfd: int | None = wfd
        self.mode = mode
        self.armed = True

    @classmethod
    def start(cls, cgroups: list[AgentCgroup], mode: str = "kill") -> Watchdog:
        if mode not in MODES:
            raise UsageError(f"watchdog mode {mode!r}: use one of {', '.join(MODES)}")
        r, w = os.pipe()                        # both ends O_CLOEXEC
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pycontain.actuate.watchdog", "--fd", str(r), "--mode", mode],
                pass_fds=(r,), close_fds=True, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
        finally:
            os.close(r)                          # the watchdog holds the only read end
        wd = cls(proc, w, mode)
        try:
            for cg in cgroups:
                wd._send(f"add {json.dumps(cg.to_dict())}")
            wd._sync()
        except BaseException:
            wd.close()
            raise
        return wd

    def add(self, cgroup: AgentCgroup) -> None:
        """Guard one more cgroup; returns once the watchdog has it."""
        self._send(f"add {json.dumps(cgroup.to_dict())}")
        self._sync()

    def drop(self, cgroup: AgentCgroup) -> None:
        """Forget a cgroup that is gone (a long-lived controller's list stays short)."""
        self._send(f"drop {cgroup.v2_path}")

    def disarm(self) -> None:
        """Clean shutdown: the coming EOF must not kill anything."""
        if self._wfd is not None and self.armed:
            self._send("bye")
            self.armed = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe. Armed, this makes the watchdog act (kill/freeze)."""
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def _send(self, line: str) -> None:
        if self._wfd is None:
            raise EnvironmentProblem("watchdog already closed")
        data = (line + "\n").encode()
        try:
            while data:
                data = data[os.write(self._wfd, data):]
        except BrokenPipeError:
            raise EnvironmentProblem("the watchdog process is gone; refusing to run an agent unguarded") from None

    def _sync(self) -> None:
        self._send("sync")
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], START_TIMEOUT_S)
        line = out.readline() if ready else b""
        if line.strip() != b"ok":
            raise EnvironmentProblem("the watchdog process did not start; refusing to run an agent unguarded",
                                     f"check that `{sys.executable} -m pycontain.actuate.watchdog` runs")


# ---- the watchdog process ---------------------------------------------------------


def _say(msg: str) -> None:
    try:
        os.write(2, f"pycontain watchdog: {msg}\n".encode())
    except OSError:
        pass                                     # the terminal may be gone with the controller


def act(cgroups: list[AgentCgroup], mode: str) -> None:
    for cg in cgroups:
        try:
            if mode == "freeze":
                cg.freeze(wait=False)
                _say(f"controller gone: froze agent {cg.name} ({cg.v2_path})")
            else:
                cg.kill()
                cg.remove()
                _say(f"controller gone: killed agent {cg.name} and removed {cg.v2_path}")
        except Exception as e:                   # keep going: the next agent matters as much
            _say(f"could not {mode} agent {cg.name}: {e}")


def serve(fd: int, mode: str) -> int:
    cgroups: list[AgentCgroup] = []
    armed = True
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd, _, arg = line.decode(errors="replace").partition(" ")
            if cmd == "add":
                try:
                    cgroups.append(AgentCgroup.from_dict(json.loads(arg)))
                except (OSError, ValueError, KeyError) as e:
                    _say(f"cannot guard {arg[:200]!r}: {e}")
            elif cmd == "drop":
                cgroups = [cg for cg in cgroups if cg.v2_path != arg]
            elif cmd == "sync":
                try:
                    os.write(1, b"ok\n")
                except OSError:
                    pass
            elif cmd == "bye":
                armed = False
    if armed and cgroups:
        act(cgroups, mode)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="pycontain.actuate.watchdog")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--mode", choices=MODES, default="kill")
    args = ap.parse_args(argv)
    # the controller's terminal and its signals are not ours to follow
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGTSTP):
        signal.signal(s, signal.SIG_IGN)
    try:
        os.nice(-5)                              # act promptly on a busy node
    except OSError:
        pass
    return serve(args.fd, args.mode)


if __name__ == "__main__":
    sys.exit(main())
