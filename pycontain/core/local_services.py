"""`network.local_services` (issue 10 part 4): the node-local services an
agent may reach besides its own, parsed and compiled for the kernel (pure).

An entry is ``host:port`` (an IP literal or ``localhost``; IPv6 in
brackets), a unix socket path (``/run/model.sock``), an abstract unix name
(``@name``), or the single word ``any``, which turns the local-services rule
off. The node's resolvers are always reachable (kernel/local_maps.py adds
them from /etc/resolv.conf).
"""

from __future__ import annotations

import ipaddress
import re

from .policy_yaml import Node

ANY = "any"
UNIX_PATH_MAX = 107          # sun_path is 108 bytes, NUL included
RESOLVER_STUBS = ("127.0.0.53", "127.0.0.54")   # systemd-resolved's stub listeners
_HOSTPORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")


def read_local_services(n: Node) -> tuple[str, ...]:
    """The list as written (normalised), or ("any",)."""
    items = [n] if _is_scalar(n) else n.seq()
    out: list[str] = []
    for item in items:
        text = item.str(maxlen=UNIX_PATH_MAX + 1)
        if text == ANY:
            if len(items) != 1:
                raise item.error("'any' turns the rule off: it cannot be combined with entries")
            return (ANY,)
        out.append(_entry(item, text))
    return tuple(out)


def _is_scalar(n: Node) -> bool:
    import yaml
    return isinstance(n.node, yaml.ScalarNode)


def _entry(item: Node, text: str) -> str:
    if text.startswith("/") or text.startswith("@"):
        if len(text.encode()) > UNIX_PATH_MAX or "\0" in text:
            raise item.error(f"{text!r} is longer than a unix socket address ({UNIX_PATH_MAX} bytes)")
        return text
    m = _HOSTPORT.fullmatch(text)
    if not m:
        raise item.error(f"{text!r} is not a local service",
                         "use host:port (127.0.0.1:8080, [::1]:8080, localhost:8080), a unix socket path "
                         "(/run/model.sock), @abstract-name, or 'any' to turn the rule off")
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        raise item.error(f"port {port} is out of range 1-65535")
    host = m.group("v6") or m.group("host")
    if host == "localhost":
        return f"localhost:{port}"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise item.error(f"{host!r} is not an IP address (local services are named by address)") from None
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def inet_entries(services: tuple[str, ...], resolvers: list[str]) -> list[tuple[bytes, int]]:
    """(16-byte address, IPv4 in the first 4 bytes; port) rows for pc_local_svc:
    the listed host:port entries, then every resolver and stub on port 53."""
    rows: list[tuple[bytes, int]] = []
    for s in services:
        if s.startswith(("/", "@")) or s == ANY:
            continue
        host, _, port = s.rpartition(":")
        hosts = ["127.0.0.1", "::1"] if host == "localhost" else [host.strip("[]")]
        rows += [(_addr16(h), int(port)) for h in hosts]
    for r in list(RESOLVER_STUBS) + resolvers:
        try:
            rows.append((_addr16(r), 53))
        except ValueError:
            continue
    return list(dict.fromkeys(rows))


def unix_entries(services: tuple[str, ...]) -> list[tuple[int, bytes]]:
    """(len, 108-byte sun_path) keys for pc_local_unix, as ebpf/local.c builds
    them: a path zero-padded with len 0; an abstract name with its length."""
    out = []
    for s in services:
        if s.startswith("/"):
            out.append((0, s.encode().ljust(UNIX_PATH_MAX + 1, b"\0")))
        elif s.startswith("@"):
            name = b"\0" + s[1:].encode()
            out.append((len(name), name.ljust(UNIX_PATH_MAX + 1, b"\0")))
    return out


def _addr16(text: str) -> bytes:
    a = ipaddress.ip_address(text)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.packed.ljust(16, b"\0")
