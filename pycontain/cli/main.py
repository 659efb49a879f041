"""The `pycontain` command line.

Every error is a PycontainError: one line ``error: …`` plus a ``hint: …``
line, the traceback only with -v, and exit 2 for usage or policy errors.
Commands import their heavy edges (bcc, pynvml, pyroute2) lazily so that
`pycontain policy check` works anywhere.
"""

from __future__ import annotations

import json
import sys
import traceback

import click

from .. import __version__
from ..core.errors import PycontainError, UsageError

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
@click.option("--metrics-port", type=int, metavar="PORT", help="Serve Prometheus metrics on this port.")
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
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, cmd, **opts):
    """Run CMD as a contained agent:  pycontain run [OPTIONS] -- CMD [ARG...]"""
    from ..app.runner import RunOptions, run_agent
    code = run_agent(list(cmd), RunOptions(verbose=ctx.obj["verbose"], **opts))
    sys.exit(code)


# ---- trace -------------------------------------------------------------------

@cli.command()
@click.option("--all", "all_host", is_flag=True, help="Stream exec/fork/exit of every process on the host.")
@click.option("--cgroup", "cgroups", multiple=True, metavar="DIR", help="Trace this cgroup2 dir (repeatable).")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Daemon state API to ask for agent cgroups.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.option("--duration", type=float, default=None, metavar="SECONDS", help="Stop after this long.")
@click.pass_context
def trace(ctx, all_host, cgroups, socket_path, as_json, duration):
    """Stream the events of tracked agents (or the whole host with --all)."""
    from .trace import run_trace
    sys.exit(run_trace(all_host=all_host, cgroups=list(cgroups), socket_path=socket_path,
                       as_json=as_json, duration=duration))


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
    """Validate FILE; exit 2 with file:line: key: problem if it is invalid."""
    from ..core.kernel_rules import compile_policy, compile_report
    from ..core.policy import load_policy
    p = load_policy(file)
    compile_policy(p)
    _gpu_rule_notes(p)
    if as_json:
        click.echo(json.dumps({"file": file, "ok": True, "policy": p.name, "mode": p.mode,
                               "enforcement": compile_report(p)}))
    else:
        click.echo(f"{file}: OK (policy {p.name!r}, mode {p.mode})")
        from ..core.kernel_rules import local_services_report, selector_report
        for line in selector_report(p) + local_services_report(p):
            click.echo(f"  {line}")


def _gpu_rule_notes(p) -> None:
    """Rules the policy asks for that this node cannot run (stderr, exit 0)."""
    if getattr(p.gpu, "signature", None) is None:
        return
    try:
        from ..gpu.devices import gpm_status
        st = gpm_status()
    except Exception as e:      # no pynvml here: policy check works anywhere
        st = f"unavailable: {e}"
    if not st.startswith("ok"):
        click.echo(f"note: gpu.signature: {st}", err=True)


@policy.command("show")
@click.argument("file", required=False)
@click.option("--builtin", default=None, help="Show a built-in policy: default or strict.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def policy_show(file, builtin, as_json):
    """Print the effective policy (defaults merged) as YAML."""
    import yaml

    from ..core.policy import builtin_policy, load_policy, policy_to_dict
    if file and builtin:
        raise UsageError("give FILE or --builtin, not both")
    p = load_policy(file) if file else builtin_policy(builtin or "default")
    if as_json:
        click.echo(json.dumps(policy_to_dict(p), indent=2))
    else:
        click.echo(yaml.safe_dump(policy_to_dict(p), sort_keys=False), nl=False)


# ---- daemon and its controls ------------------------------------------------

@cli.command()
@click.option("--policy", "policy_path", default=None, metavar="FILE",
              help="Node policy (default: the built-in default policy).")
@click.option("--audit-log", metavar="FILE")
@click.option("--metrics-port", type=int, metavar="PORT")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True)
@click.option("--socket", "socket_path", default="/run/pycontain/pycontain.sock", show_default=True)
@click.option("--allow-no-gpu", is_flag=True)
@click.option("--scan-interval", type=float, default=2.0, show_default=True, help="Seconds between cgroup scans.")
@click.pass_context
def daemon(ctx, **opts):
    """Node-wide mode: contain agents started by others (selected by the policy)."""
    from ..app.daemon import DaemonOptions, run_daemon
    sys.exit(run_daemon(DaemonOptions(verbose=ctx.obj["verbose"], **opts)))


def _client(socket_path):
    from ..observe.state_api import StateClient
    return StateClient(socket_path)


SOCKET_OPT = click.option("--socket", "socket_path", default="/run/pycontain/pycontain.sock", show_default=True)


def _control(verb: str):
    @cli.command(name=verb, help=f"Emergency stop: {verb} every process of AGENT (via the running daemon).")
    @click.argument("agent")
    @SOCKET_OPT
    def cmd(agent, socket_path):
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
def replay(audit_log, policy_path, as_json):
    """Evaluate a policy offline against a recorded audit log."""
    from ..core.policy import builtin_policy, load_policy
    from .replay import format_replay
    from .replay import replay as do_replay
    p = load_policy(policy_path) if policy_path else builtin_policy("default")
    click.echo(format_replay(do_replay(audit_log, p), json=as_json))


def main(argv: list[str] | None = None) -> None:
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="pycontain", standalone_mode=False)
    except PycontainError as e:
        if verbose:
            traceback.print_exc()
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
