"""Argument normalisation for program-scoped exec rules (pure).

`ssh -NfR 2222:localhost:22 host` hides its -R inside a cluster of flags, and
`ssh host grep -R foo` carries a harmless -R *after* the destination, in the
remote command. Matching raw argv with globs gets both wrong, so for ssh the
argv is first cut down to ssh's own options, one token per flag:

    ["ssh", "-NfR2222:x:22", "-o", "RemoteForward=1:h:2", "host", "grep", "-R"]
    -> ["-N", "-f", "-R2222:x:22", "-oRemoteForward=1:h:2"]

A flag's value is always glued to its letter ("-p" "2222" -> "-p2222"), so a
value can never pose as a flag of its own ("-l -Rx" is a login name).

OpenSSH parses options again right after the destination (`ssh host -R
2222:localhost:22` is a reverse tunnel), and stops at the first word after
that which is not an option: the remote command.

Option letters and which of them take a value are those of OpenSSH's
ssh(1) (getopt string "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy").
"""

from __future__ import annotations

SSH_NAMES = ("ssh",)
SSH_FLAGS = set("1246afgknqstvxACGKMNTVXYy")        # no value
SSH_VALUED = set("bceilmopBDEFIJLOPQRSwW")          # take a value (glued or next token)


def ssh_option_tokens(args: list[str]) -> list[str]:
    """ssh's own options from argv[1:], split one flag per token; the
    destination and the remote command after it are dropped."""
    return ssh_split(args)[0]


def ssh_split(args: list[str]) -> tuple[list[str], str | None]:
    """ssh's own options (as ssh_option_tokens) and its destination."""
    out: list[str] = []
    destination: str | None = None
    seen_destination = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if not a.startswith("-") or a == "-":
            if seen_destination:
                break                       # the remote command: not ssh's options
            seen_destination = True         # ssh re-parses options after the destination
            destination = a
            i += 1
            continue
        j = 1
        while j < len(a):
            c = a[j]
            if c in SSH_VALUED:
                value = a[j + 1:]
                if not value and i + 1 < len(args):
                    i += 1
                    value = args[i]
                out.append(f"-{c}{value}")
                break
            out.append(f"-{c}")             # a plain flag (unknown letters kept too: deny rules may name them)
            j += 1
        i += 1
    return out, destination


MULTI_CALL = ("busybox", "toybox")


def program_identity(path: str, argv: list[str]) -> tuple[str, list[str]]:
    """The program an exec really runs and its arguments after argv[0].

    The name is the basename of the file the kernel executed, never argv[0]
    alone (argv[0] is whatever the caller chose). Multi-call binaries are the
    exception: `busybox nc -e sh h 1` and execve("/bin/busybox", ["nc", ...])
    both run the `nc` applet, which busybox picks from argv[0] (or argv[1]
    when argv[0] is busybox itself).
    """
    base = path.rsplit("/", 1)[-1]
    rest = list(argv[1:])
    if base.lower() in MULTI_CALL and argv:
        applet = argv[0].rsplit("/", 1)[-1]
        if applet.lower() in MULTI_CALL and rest:
            applet, rest = rest[0].rsplit("/", 1)[-1], rest[1:]
        if applet and applet.lower() not in MULTI_CALL:
            base = applet
    return base, rest


SOCAT_NAMES = ("socat",)
SOCAT_QUOTING = str.maketrans("", "", "'\"\\")


def socat_addresses(args: list[str]) -> list[str]:
    """socat's arguments as written and with its quoting removed: socat
    unquotes an address before it reads the keyword, so `EX'E'C:sh`,
    `"EXEC":sh` and `EXE\\C:sh` all run sh, and a rule must see `EXEC:sh`."""
    return list(args) + [a.translate(SOCAT_QUOTING) for a in args if a != a.translate(SOCAT_QUOTING)]


def program_args(base: str, args: list[str]) -> list[str]:
    """The argv entries (after argv[0]) that program-scoped rules look at."""
    if base.lower() in SSH_NAMES:
        return ssh_option_tokens(args)
    if base.lower() in SOCAT_NAMES:
        return socat_addresses(args)
    return list(args)
