"""Forwarding in an ssh client's effective configuration (issue 12 part 7; pure).

The kernel recognises SSH sessions and lets them reach only the
destinations in `network.ssh.allow`. What a session to an allowed host may
carry is decided here, on what ssh itself would do: the configuration
`ssh -G` prints after reading -F files, ~/.ssh/config, Include and Match
(the controller runs it as the agent, actuate/ssh_config.py), never on the
spelling of the argv alone. Denied:

* remoteforward, localforward, dynamicforward: a tunnel through the session
  (ROME's reverse tunnel is `RemoteForward`);
* tunnel other than no: a tun/tap device over the session;
* controlmaster other than no, or a controlpath: a master socket through which
  forwards can be added later (`ssh -O forward -R ...`), out of sight;
* enableescapecommandline yes: on a pty the agent types `~C` then
  `-R 2222:localhost:22` and ssh opens the forward mid-session, where no
  argv or configuration check looks. OpenSSH >= 9.2 turns `~C` off by
  default and prints the setting; older clients have it on and print nothing,
  a limit documented in docs/network.md;
* control commands (-O) and stdio forwarding (-W, also behind -J) in the argv.
"""

from __future__ import annotations

from .policy_args import ssh_split
from .text import safe_text

RULE = "network.ssh.forward"
FORWARD_KEYS = ("remoteforward", "localforward", "dynamicforward")
OFF = ("no", "false", "none")
QUERY_MAX = 64 << 10          # bytes of `ssh -G` output read
# why a setting is a forward although the session starts without one
LATER = {"enableescapecommandline": ": `~C` on a pty opens forwards mid-session"}


def config_query(args: list[str]) -> list[str] | None:
    """The arguments of `ssh -G` that resolve the configuration of
    `ssh *args` (its options and destination, the remote command dropped),
    or None when ssh would not start a session (no destination)."""
    tokens, destination = ssh_split(args)
    if destination is None:
        return None
    return ["-G", *[t for t in tokens if t != "-G"], "--", destination]


def argv_violation(args: list[str]) -> str | None:
    """Options that forward or drive a master whatever the configuration says."""
    for t in ssh_split(args)[0]:
        if t.startswith("-O"):
            return f"ssh control command {safe_text(t, 64)}: forwards through a control master are not allowed"
        if t.startswith("-W"):
            return f"ssh stdio forward {safe_text(t, 64)}"
    return None


def config_violation(ssh_g_output: str) -> str | None:
    """The first forwarding setting in `ssh -G` output, as a reason; None when
    the session carries no forward and opens no master. Output that names
    no host (ssh failed) is a violation: fail closed."""
    settings: dict[str, list[str]] = {}
    for line in ssh_g_output.splitlines():
        key, _, value = line.strip().partition(" ")
        settings.setdefault(key.lower(), []).append(value.strip())
    if "hostname" not in settings:
        return "effective ssh configuration unavailable (ssh -G failed)"
    for key in FORWARD_KEYS:
        if key in settings:
            return f"ssh configuration sets {key} {safe_text(settings[key][0], 128)}"
    for key in ("tunnel", "controlmaster", "enableescapecommandline"):
        value = settings.get(key, ["no"])[0].lower()
        if value not in OFF:
            return f"ssh configuration sets {key} {safe_text(value, 64)}{LATER.get(key, '')}"
    path = settings.get("controlpath", ["none"])[0]
    if path.lower() not in OFF:
        return f"ssh configuration sets controlpath {safe_text(path, 128)}: a master reachable for later forwards"
    return None
