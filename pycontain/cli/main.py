"""The `pycontain` command line.

Every error is a PycontainError: one line ``error: …`` plus a ``hint: …``
line, the traceback only with -v, and exit 2 for usage or policy errors.
Commands import their heavy edges (bcc, pynvml, pyroute2) lazily so that
`pycontain policy check` works anywhere.
"""

from __future__ import annotations

import json
import re
import sys
import traceback

import click

from .. import __version__
from ..core.errors import PolicyError, PycontainError, UsageError

CONTEXT = dict(help_option_names=["-h", "--help"])


@click.group(context_settings=CONTEXT)
@click.option("-v", "--verbose", count=True, help="More detail on errors (tracebacks) and progress.")
@click.version_option(__version__, prog_name="pycontain")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Contain autonomous AI agents at the kernel level (eBPF + cgroups + NVML)."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


# ---- run ---------------------------------------------------------------------

@cli.command(context_settings=dict(CONTEXT, ignore_unknown_options=True, allow_interspersed_args=False))
@click.option("--policy", "policy_path", metavar="FILE", help="Policy YAML (default: the built-in ROME policy).")
@click.option("--name", default="agent", show_default=True, help="Agent name (a metric label: [a-z0-9_.-], ≤32).")
@click.option("--audit-log", metavar="FILE", help="Append JSON Lines audit records here ('-' = stdout).")
@click.option("--user", metavar="USER", help="Run CMD as this user.")
@click.option("--monitor", is_flag=True, help="Force monitor mode: record what would be denied, enforce nothing.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option("--socket", "socket_path", metavar="PATH", help="Serve the state API (for `pycontain top`) here.")
@click.option("--cgroup-parent", metavar="DIR", help="Create the agent cgroup under this cgroup2 dir.")
@click.option("--allow-no-gpu", is_flag=True,
              help="Run even if the policy requires GPU enforcement and NVML is unavailable.")
@click.option("--gpus", metavar="LIST", help="GPUs the agent may open: indexes or UUIDs (0,2), all, or none.")
@click.option("--json", "as_json", is_flag=True, help="Print violations as JSON Lines on stderr.")
@click.option("--no-daemon", is_flag=True, help="Load this run's own probes even if a node daemon runs.")
@click.option("--daemon-only", is_flag=True, help="Exit 1 unless the node daemon starts the agent.")
@click.option("--daemon-socket", metavar="PATH",
              help="The node daemon's state API (default: $PYCONTAIN_SOCKET or /run/pycontain/pycontain.sock).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Per-episode label for the audit log and state API (daemon path; repeatable).")
@click.option("--stop-timeout", type=click.FloatRange(0, 3600), default=10.0, show_default=True, metavar="SECONDS",
              help="On SIGTERM/SIGINT the agent gets the signal; after this long the whole agent is killed.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, cmd, **opts):
    """Run CMD as a contained agent:  pycontain run [OPTIONS] -- CMD [ARG...]"""
    from ..app.runner import RunOptions, run_agent
    if is_root_user(opts.get("user")):
        from ..observe.report import Reporter
        Reporter(as_json=opts.get("as_json", False)).record({"kind": "notice", "message": ROOT_USER_NOTE})
    code = run_agent(list(cmd), RunOptions(verbose=ctx.obj["verbose"], **opts))
    sys.exit(code)


# uid 0 keeps owning the node's files and the daemon's process whatever capabilities
# it loses: said, not refused (docs/threat-model.md)
ROOT_USER_NOTE = ("warning: an agent run as root is no boundary for the node's files or the daemon: it can "
                  "remove pycontain's BPF pins, kill the daemon and write root-owned files; leave out --user "
                  "for a fresh dynamic uid (docs/threat-model.md)")


def is_root_user(user: str | None) -> bool:
    """Whether --user names uid 0 (by name or number); a name that does not
    resolve is left to run's own check."""
    from ..actuate.launch import lookup_user
    from ..core.errors import UsageError
    if not user:
        return False
    try:
        return lookup_user(user).pw_uid == 0
    except UsageError:
        return False


# ---- trace -------------------------------------------------------------------

@cli.command()
@click.option("--all", "all_host", is_flag=True, help="Stream exec/fork/exit of every process on the host.")
@click.option("--cgroup", "cgroups", multiple=True, metavar="DIR", help="Trace this cgroup2 dir (repeatable).")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Daemon state API to ask for agent cgroups.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.option("--duration", type=float, default=None, metavar="SECONDS", help="Stop after this long.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only these record kinds (exec, connect, send, fork, exit, ...; repeatable).")
@click.option("--pid", "pids", multiple=True, type=click.IntRange(1), metavar="PID", help="Only these pids.")
@click.option("--program", "programs", multiple=True, metavar="GLOB",
              help="Only records of programs whose name (comm) or executed file matches (repeatable).")
@click.pass_context
def trace(ctx, all_host, cgroups, socket_path, as_json, duration, kinds, pids, programs):
    """Stream the events of tracked agents (or the whole host with --all).
    Piped, every column is kept (tab-separated)."""
    from .trace import TraceFilter, check_kinds, run_trace
    only = TraceFilter(check_kinds(kinds), tuple(pids), tuple(programs))
    sys.exit(run_trace(all_host=all_host, cgroups=list(cgroups), socket_path=socket_path,
                       as_json=as_json, duration=duration, only=only))


# ---- doctor ------------------------------------------------------------------

@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Check the host: root, BPF, BTF, ring buffer, cgroups, hooks, headers, NVML."""
    from .doctor import run_doctor
    sys.exit(run_doctor(as_json=as_json))


# ---- policy ------------------------------------------------------------------

@cli.group()
def policy():
    """Validate and show policies."""


@policy.command("check")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result, with where each rule is enforced.")
def policy_check(file, as_json):
    """Validate FILE ('-': stdin; or a built-in name); exit 2 listing every
    file:line: key: problem found."""
    from ..core.kernel_rules import compile_policy, compile_report
    try:
        p = _load_policy_arg(file)
        compile_policy(p)
    except PolicyError as e:
        if not as_json:
            raise
        click.echo(json.dumps({"file": file, "ok": False, "errors": [x.as_dict() for x in e.all()]}))
        sys.exit(e.exit_code)
    _gpu_rule_notes(p)
    if as_json:
        click.echo(json.dumps({"file": file, "ok": True, "policy": p.name, "mode": p.mode,
                               "enforcement": compile_report(p)}))
    else:
        click.echo(f"{file}: OK (policy {p.name!r}, mode {p.mode})")
        from ..core.kernel_rules import local_services_report, selector_report
        for line in selector_report(p) + local_services_report(p):
            click.echo(f"  {line}")


def _load_policy_arg(ref: str):
    """A policy named on the command line: a file, '-' for stdin, or a built-in name."""
    from ..core.policy import load_policy, load_policy_text
    if ref == "-":
        return load_policy_text(sys.stdin.read(), "<stdin>")
    return load_policy(ref)


def _gpu_rule_notes(p) -> None:
    """Rules the policy asks for that this node cannot run (stderr, exit 0)."""
    if getattr(p.gpu, "signature", None) is None:
        return
    _signature_window_note(p.gpu)
    try:
        from ..gpu.devices import gpm_status
        st = gpm_status()
    except Exception as e:      # no pynvml here: policy check works anywhere
        st = f"unavailable: {e}"
    if not st.startswith("ok"):
        click.echo(f"note: gpu.signature: {st}", err=True)


def _signature_window_note(g) -> None:
    """gpu.signature judges a share of readings and needs a few of them: a
    window shorter than that never fires, which the policy's author should hear."""
    from ..core.gpu_signature import MIN_READINGS
    if g.signature.window_s < (MIN_READINGS - 1) * g.sample_interval_s:
        click.echo(f"note: gpu.signature: window {g.signature.window_s:g}s holds fewer than {MIN_READINGS} "
                   f"readings at gpu.sample_interval {g.sample_interval_s:g}s: the rule never fires", err=True)


@policy.command("show")
@click.argument("file", required=False)
@click.option("--builtin", default=None, help="Show a built-in policy: default or strict.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def policy_show(file, builtin, as_json):
    """Print the effective policy (defaults merged) as YAML."""
    import yaml

    from ..core.policy import builtin_policy, policy_to_dict
    if file and builtin:
        raise UsageError("give FILE or --builtin, not both")
    p = _load_policy_arg(file) if file else builtin_policy(builtin or "default")
    if as_json:
        click.echo(json.dumps(policy_to_dict(p), indent=2))
    else:
        click.echo(yaml.safe_dump(policy_to_dict(p), sort_keys=False), nl=False)


# ---- daemon and its controls ------------------------------------------------

@cli.command()
@click.option("--policy", "policy_path", default=None, metavar="FILE",
              help="Node policy (default: the built-in default policy).")
@click.option("--release", is_flag=True,
              help="Remove the pinned programs of stopped daemons: agents are no longer contained. "
                   "Stopping the daemon (systemctl stop) does not do this.")
@click.option("--audit-log", metavar="FILE")
@click.option("--audit-max-bytes", callback=lambda _c, _p, v: _size_option("--audit-max-bytes", v), metavar="SIZE",
              help="Rotate the audit log at this size (e.g. 100MiB); SIGUSR1 reopens it (logrotate).")
@click.option("--audit-keep", type=click.IntRange(1, 1000), default=5, show_default=True, metavar="N",
              help="Rotated audit logs kept (FILE.1 ... FILE.N).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True)
@click.option("--socket", "socket_path", default="/run/pycontain/pycontain.sock", show_default=True)
@click.option("--allow-no-gpu", is_flag=True)
@click.option("--scan-interval", type=float, default=2.0, show_default=True, help="Seconds between cgroup scans.")
@click.option("--policy-poll", type=click.FloatRange(0, 3600), default=3.0, show_default=True, metavar="SECONDS",
              help="Check the policy file this often and reload it when it changed (a ConfigMap edit); 0: SIGHUP only.")
@click.pass_context
def daemon(ctx, release, **opts):
    """Node-wide mode: contain agents started by others (selected by the policy).

    Kernel enforcement is pinned in bpffs ($PYCONTAIN_BPFFS, default
    /sys/fs/bpf/pycontain): it holds while the daemon is stopped, crashed or
    upgraded, and a restarted daemon takes it over. `--release` ends it.
    Without --policy the built-in default policy applies."""
    from ..app.daemon import DaemonOptions, release_pinned, run_daemon
    if release:
        gone = release_pinned(opts["socket_path"])
        click.echo(json.dumps({"ok": True, "released": gone}))
        return
    sys.exit(run_daemon(DaemonOptions(verbose=ctx.obj["verbose"], **opts)))


def _size_option(option: str, value: str | None) -> int | None:
    from ..core.policy_yaml import parse_size
    if value is None:
        return None
    n = parse_size(value)
    if n is None or n < 4096:
        raise UsageError(f"{option} {value!r} is not a size of at least 4KiB", hint="e.g. 100MiB, 1GiB or bytes")
    return n


def _client(socket_path):
    from ..observe.state_api import StateClient
    return StateClient(socket_path)


AGENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _check_agent_name(name: str) -> None:
    if not AGENT_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not an agent name",
                         hint="agent names are 1-64 of A-Z a-z 0-9 _ . : - (see `pycontain status`)")


SOCKET_OPT = click.option("--socket", "socket_path", default="/run/pycontain/pycontain.sock", show_default=True)


def _control(verb: str):
    @cli.command(name=verb, help=f"Emergency stop: {verb} every process of AGENT (via the running daemon).")
    @click.argument("agent")
    @SOCKET_OPT
    def cmd(agent, socket_path):
        _check_agent_name(agent)
        out = _client(socket_path).post(f"/v1/agents/{agent}/{verb}", {})
        click.echo(json.dumps(out))
    return cmd


for _verb in ("kill", "freeze", "thaw"):
    _control(_verb)


@cli.command()
@click.option("--cgroup", required=True, metavar="DIR", help="cgroup2 dir of the job/agent.")
@click.option("--name", required=True)
@SOCKET_OPT
def adopt(cgroup, name, socket_path):
    """Tell the daemon to contain an existing cgroup (Slurm prolog)."""
    click.echo(json.dumps(_client(socket_path).post("/v1/adopt", {"cgroup": cgroup, "name": name})))


@cli.command()
@click.argument("name")
@SOCKET_OPT
def release(name, socket_path):
    """Stop containing an adopted agent (Slurm epilog)."""
    _check_agent_name(name)
    click.echo(json.dumps(_client(socket_path).post("/v1/release", {"name": name})))


@cli.command()
@SOCKET_OPT
@click.option("--interval", type=float, default=1.0, show_default=True)
def top(socket_path, interval):
    """Live view of agents: CPU, memory, GPU, connections, violations."""
    from ..observe.top import run_top
    run_top(_client(socket_path), interval)


@cli.command()
@SOCKET_OPT
@click.option("--json", "as_json", is_flag=True)
def status(socket_path, as_json):
    """State of the running daemon (or `pycontain run --socket`)."""
    from ..observe.top import render, status_json
    client = _client(socket_path)
    if as_json:
        click.echo(status_json(client))
    else:
        from rich.console import Console
        Console().print(render(client.state()))


# ---- replay ------------------------------------------------------------------

@cli.command()
@click.argument("audit_log")
@click.option("--policy", "policy_path", default=None, metavar="FILE", help="Policy to evaluate (default: built-in).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--resolve", "resolves", multiple=True, metavar="HOST=ADDR[,ADDR]",
              help="Addresses a host name of the policy resolved to when the log was written (repeatable); "
                   "replay never queries DNS.")
def replay(audit_log, policy_path, as_json, resolves):
    """Evaluate a policy offline against a recorded audit log (streamed: any size)."""
    from .replay import iter_replay, replay_lines
    p = _load_policy_arg(policy_path) if policy_path else _load_policy_arg("default")
    resolved = _resolved_option(resolves)
    for line in replay_lines(iter_replay(audit_log, p, resolved), json=as_json):
        click.echo(line)


def _resolved_option(items) -> dict[str, list[str]]:
    """--resolve HOST=ADDR[,ADDR] as name -> addresses, each checked."""
    import ipaddress
    out: dict[str, list[str]] = {}
    for item in items:
        host, sep, addrs = item.partition("=")
        try:
            if not sep or not host:
                raise ValueError
            ips = [str(ipaddress.ip_address(a.strip())) for a in addrs.split(",")]
        except ValueError:
            raise UsageError(f"--resolve {item!r} is not HOST=ADDR[,ADDR]",
                             hint="e.g. --resolve pool.example.org=198.51.100.7,2001:db8::7") from None
        out.setdefault(host.lower().rstrip("."), []).extend(ips)
    return out


def _verbosity(args: list[str]) -> int:
    """-v count among the global options (before the command name)."""
    n = 0
    for a in args:
        if a == "--verbose":
            n += 1
        elif len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"}:
            n += len(a) - 1
        elif not a.startswith("-"):
            break
    return n


def main(argv: list[str] | None = None) -> None:
    verbose = _verbosity(list(sys.argv[1:] if argv is None else argv))
    try:
        cli.main(args=argv, prog_name="pycontain", standalone_mode=False)
    except PycontainError as e:
        if verbose:
            traceback.print_exc()
        for err in e.all() if isinstance(e, PolicyError) else [e]:
            click.echo(f"error: {err.message}", err=True)
            if err.hint:
                click.echo(f"hint: {err.hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            click.echo(f"hint: see `{ctx.command_path} --help`", err=True)
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
