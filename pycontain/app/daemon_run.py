"""`pycontain run` through the node daemon (issue 14 part 1).

No BPF is loaded and nothing is compiled: the daemon creates and contains the
agent's cgroup with its one program set (app/agent_api.py); this process
launches CMD into it, relays SIGINT/SIGTERM/SIGHUP to the agent's process
group and kills the whole agent after --stop-timeout (app/stopping.py), kills
the agent if the daemon goes away (fail closed), and exits with the agent's
status. If this process is killed outright, the daemon ends the agent
(app/agent_api.py: agents end with the process that asked for them).
"""

from __future__ import annotations

import signal
import sys

from ..core.errors import EnvironmentProblem, UsageError
from ..core.labels import clean_labels
from ..observe.report import Reporter
from .agent_client import DaemonAgent, daemon_problem, relay_signals, socket_path
from .stopping import Stopping, kill_whole_agent


def parse_labels(items) -> dict[str, str]:
    raw = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep:
            raise UsageError(f"--label {item!r}: use KEY=VALUE")
        raw[key] = value
    return clean_labels(raw)


def try_daemon_run(cmd: list[str], opts) -> int | None:
    """The agent's exit status, or None when no daemon answers (one line on
    stderr; run then loads its own probes). --daemon-only: exit 1 instead."""
    labels = parse_labels(opts.labels)
    path = socket_path(opts.daemon_socket)
    problem = daemon_problem(path)
    if problem is not None:
        if opts.daemon_only or problem.startswith("permission denied"):
            raise EnvironmentProblem(problem, "start `pycontain daemon`, or run without --daemon-only"
                                     if opts.daemon_only else "run as root: the state API is root-only")
        print(f"pycontain: {problem}; loading this run's own probes (--no-daemon skips the check)",
              file=sys.stderr)
        return None
    return DaemonRun(cmd, opts, path, labels).run()


class DaemonRun:
    def __init__(self, cmd: list[str], opts, path: str, labels: dict[str, str]):
        self.cmd, self.opts = cmd, opts
        self.agent = DaemonAgent(path, name=opts.name, labels=labels)
        self.reporter = Reporter(as_json=opts.as_json, verbose=opts.verbose)
        self.stopping = Stopping(opts.stop_timeout, self.reporter.note,
                                 lambda: kill_whole_agent(self.agent.cgroup, self.agent.proc))

    def run(self) -> int:
        old = relay_signals(lambda: self.agent.proc, self.stopping.signalled)
        try:
            self.agent.start()      # the node policy's privileges and the agent's uid come with it
            proc = self.agent.launch(self.cmd, user=self.opts.user)
            rc = self.agent.supervise(proc, on_gone=lambda: self.reporter.note(
                "the pycontain daemon stopped answering: killing the agent (fail closed)"),
                on_tick=self.stopping.check)
            code = 128 - rc if rc < 0 else rc
            self.reporter.finished(self.agent.name or self.opts.name, code)
            return code
        finally:
            self.agent.finish()
            for s, h in old.items():
                signal.signal(s, h)
