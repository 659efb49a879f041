"""What `pycontain run` was asked for, and how its exit status is made: shared
by the input checks (app/runner.py) and the standalone run (app/standalone.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunOptions:
    policy_path: str | None = None
    name: str = "agent"
    audit_log: str | None = None
    user: str | None = None
    monitor: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    socket_path: str | None = None
    cgroup_parent: str | None = None
    allow_no_gpu: bool = False
    gpus: str | None = None                  # --gpus: indexes / UUIDs / all / none
    as_json: bool = False
    verbose: int = 0
    no_daemon: bool = False                  # --no-daemon: always load our own probes
    daemon_only: bool = False                # --daemon-only: exit 1 when no daemon answers
    daemon_socket: str | None = None         # the node daemon's state API (default: agent_client)
    labels: tuple = ()                       # --label KEY=VALUE: per-episode labels (daemon path)
    stop_timeout: float = 10.0               # SIGTERM/SIGINT -> agent; after this long, the whole agent is killed


def exit_status(returncode: int) -> int:
    """The agent's own status, or 128+N if signal N ended it (shell convention)."""
    return 128 - returncode if returncode < 0 else returncode
