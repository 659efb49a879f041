"""Checks of `run` and `daemon` options that must fail before the probes
compile (~1.5 s): one UsageError each, naming the option and a fix.

They check what the later step will do, the same way (open the audit log for
append, bind the metrics port, stat the socket dir, look up the user), so a
pass here means the later step will not fail on that input.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket

from ..core.errors import UsageError


def check_audit_log(path: str | None) -> None:
    if not path or path == "-":
        return
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise UsageError(f"--audit-log {path}: cannot append: {e.strerror}",
                         hint="give a writable file, or '-' for stdout") from None


def check_metrics(port: int | None, addr: str) -> None:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"--metrics-addr {addr!r} is not an IP address",
                         hint="e.g. 127.0.0.1, 0.0.0.0 or ::") from None
    if port is None:
        return
    if not 1 <= port <= 65535:
        raise UsageError(f"--metrics-port {port} is out of range 1-65535")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as client_python's server does
        try:
            s.bind((addr, port))
        except OSError as e:
            raise UsageError(f"--metrics-port {port} on {addr}: {e.strerror}",
                             hint="another process listens there; pick a free port") from None


def check_socket(path: str | None) -> None:
    if not path:
        return
    if len(os.fsencode(path)) > 107:
        raise UsageError(f"--socket {path}: longer than a Unix socket path may be (107 bytes)")
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--socket {path}: {probe} is not a writable directory",
                         hint="give a path in a writable directory, e.g. /run/pycontain/pycontain.sock")
    if os.path.isdir(path):
        raise UsageError(f"--socket {path} is a directory", hint="give a file path for the socket")


def check_user(user: str | None) -> None:
    if not user:
        return
    try:
        pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None


def check_cgroup_parent(parent: str | None) -> None:
    if parent and not os.path.isdir(parent):
        raise UsageError(f"--cgroup-parent {parent}: no such directory",
                         hint="give an existing cgroup2 directory")


def check_serving(*, audit_log: str | None, metrics_port: int | None, metrics_addr: str,
                  socket_path: str | None) -> None:
    check_audit_log(audit_log)
    check_metrics(metrics_port, metrics_addr)
    check_socket(socket_path)
