"""A cache of `ssh -G` answers, keyed by everything that can change them
(issue 11 part 4: the hold time of a held ssh exec).

`ssh -G` (actuate/ssh_config.py) costs a fork and an exec of OpenSSH, ~4-10 ms
on a small node, while the exec it judges is held. Its output is a function
of: the query's arguments; the uid, gids and passwd entry it runs with; the
environment variables it keeps (HOME decides `~` in Include, ${VAR} in
values); the working directory (a relative -F); the node's name (%l); the
ssh binary; and the bytes, owners and modes of every configuration file
OpenSSH reads (-F or ~/.ssh/config, /etc/ssh/ssh_config, and every file an
`Include` reaches, glob and relative-path rules as in ssh_config(5)) and of
every directory on their paths (who may read them, which entries a glob
finds). `fingerprint` hashes all of that; an answer is reused only for an
equal fingerprint.

An agent that edits a file between two runs changes its bytes or its ctime
(which no unprivileged call can set back), so the next fingerprint differs
and a fresh query runs. Files are hashed whole, not only stat'ed: a write
through a shared mapping changes the bytes without a new ctime. A file whose
ctime is within RACY_NS of now is not cached at all (coarse kernel
timestamps: two edits in one tick can share a ctime). Directories on the
way count with their inode, owner, mode and ctime (a rename of a directory
away and back sets it), not their mtime; the entries a glob finds are listed
afresh each time. The caller takes a fingerprint before and after the query
and caches only when both agree, so a file changed while ssh read it is not
cached under the old state. Whenever the configuration could mean something
the fingerprint does not capture, the fingerprint is None and the caller
runs the query: a chain deeper than ssh's own limit or with too many files,
a file that is not a small regular file or lies in /proc, /sys or /dev, an
unreadable one, an Include with tokens (%), variables ($), quotes, escapes,
`~user` or glob characters outside the last component, `~` with HOME unset,
and any configuration
using what depends on the world outside these files: CanonicalizeHostname
(DNS) and Match criteria other than the static ones (exec, localnetwork).

Hand-written: no library reproduces OpenSSH's Include resolution (paramiko's
SSHConfig does not follow Include); only the parts the fingerprint needs are
parsed, and anything unusual means "do not cache".
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import os
import re
import stat
import threading
import time

MAX_DEPTH = 16                 # OpenSSH's READCONF_MAX_DEPTH; deeper is its fatal error
MAX_FILES = 64                 # files per fingerprint; more is not cached
MAX_FILE_BYTES = 256 << 10     # a larger config is not cached
RACY_NS = 200_000_000          # ctime this close to now: not cached (coarse timestamps)
ENTRIES = 256                  # cached answers (LRU); many agents per node, one uid each
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
PSEUDO_FS = (b"/proc/", b"/sys/", b"/dev/")
SYSTEM_DIR = "/etc/ssh"
STATIC_MATCH = {b"all": 0, b"canonical": 0, b"final": 0, b"host": 1, b"originalhost": 1, b"user": 1,
                b"localuser": 1, b"tagged": 1, b"version": 1, b"sessiontype": 1, b"command": 1}
_KEYWORD = re.compile(rb"[ \t\r\n=]+")


class Uncacheable(Exception):
    """The configuration may depend on something the fingerprint does not see."""


class _Walk:
    """One fingerprint: the files and directories OpenSSH would read, hashed."""

    def __init__(self, home: bytes | None, now_ns: int) -> None:
        self.home = home
        self.now_ns = now_ns
        self.files = 0
        self.h = hashlib.sha256()

    def add(self, *parts: object) -> None:
        self.h.update(repr(parts).encode() + b"\0")

    def _stat(self, path: bytes, follow: bool = True, directory: bool = False) -> os.stat_result | None:
        try:
            st = os.stat(path, follow_symlinks=follow)
        except FileNotFoundError:
            self.add(path, follow, "absent")
            return None
        except OSError as e:
            raise Uncacheable(f"stat {path!r}: {e}") from e
        if directory and stat.S_ISDIR(st.st_mode):
            self.add(path, st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_ctime_ns)
            return st
        if max(st.st_ctime_ns, st.st_mtime_ns) > self.now_ns - RACY_NS:
            raise Uncacheable(f"{path!r} changed just now")
        self.add(path, follow, st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_ctime_ns)
        return st

    def _directories(self, path: bytes) -> None:
        """Every directory on the way to path, as named and as resolved:
        their identity, owner and mode (who may search them) and ctime (a
        rename away and back); which entries a glob finds is listed apart."""
        for p in (path, os.path.realpath(path)):
            parts = p.split(b"/")
            for i in range(1, len(parts)):
                if self._stat(b"/".join(parts[:i]) or b"/", follow=False, directory=True) is None:
                    break

    def file(self, path: bytes, user: bool, depth: int, parse: bool = True) -> None:
        if depth > MAX_DEPTH:
            raise Uncacheable("Include chain deeper than OpenSSH's limit")
        self.files += 1
        if self.files > MAX_FILES:
            raise Uncacheable("too many configuration files")
        self._directories(path)
        self._stat(path, follow=False)
        st = self._stat(path)
        if st is None:
            return
        if not parse:
            return
        if os.path.realpath(path).startswith(PSEUDO_FS):
            raise Uncacheable(f"{path!r}: a pseudo file (its bytes depend on who reads it)")
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise Uncacheable(f"{path!r} is not a small regular file")
        data = self._read(path, st)
        self.add(path, hashlib.sha256(data).digest())
        for line in data.split(b"\n"):
            for inc in _includes(line):
                self.include(inc, user, depth)

    def _read(self, path: bytes, st: os.stat_result) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise Uncacheable(f"open {path!r}: {e}") from e
        try:
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino, again.st_ctime_ns) != (st.st_dev, st.st_ino, st.st_ctime_ns):
                raise Uncacheable(f"{path!r} replaced while read")
            return os.read(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)

    def include(self, arg: bytes, user: bool, depth: int) -> None:
        """One Include argument, resolved as readconf.c does: relative paths
        live in ~/.ssh (user files) or /etc/ssh (system ones), `~` is HOME,
        glob(3) picks the files."""
        if any(c in arg for c in (b"%", b"$", b"\\", b"[", b"{")) or (arg.startswith(b"~") and not user):
            raise Uncacheable(f"Include {arg!r}")
        if not arg.startswith((b"/", b"~")):
            arg = (b"~/.ssh/" if user else SYSTEM_DIR.encode() + b"/") + arg
        if arg.startswith(b"~"):
            if not (arg == b"~" or arg.startswith(b"~/")) or not self.home:
                raise Uncacheable(f"Include {arg!r}: ~user or no HOME")
            arg = self.home + arg[1:]
        directory, _, pattern = arg.rpartition(b"/")
        if any(c in directory for c in (b"*", b"?")):
            raise Uncacheable(f"Include {arg!r}: glob in a directory")
        if not any(c in pattern for c in (b"*", b"?")):
            self.file(arg, user, depth + 1)
            return
        self._directories(arg)
        try:
            names = sorted(os.listdir(directory or b"/"))
        except FileNotFoundError:
            names = []
        except OSError as e:
            raise Uncacheable(f"list {directory!r}: {e}") from e
        # fnmatch also matches dot files, which glob(3) skips: a superset is safe
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        self.add(arg, matched)
        for n in matched:
            self.file(directory + b"/" + n, user, depth + 1)


def _includes(line: bytes) -> list[bytes]:
    """The Include arguments on one configuration line; raises Uncacheable
    for a line that needs the world outside the files or that this parser
    might read differently from OpenSSH."""
    s = line.strip()
    if not s or s.startswith(b"#"):
        return []
    keyword, *rest = _KEYWORD.split(s, maxsplit=1)
    keyword = keyword.lower()
    if keyword.startswith((b'"', b"'")):
        raise Uncacheable("quoted keyword")
    if keyword == b"canonicalizehostname":
        raise Uncacheable("CanonicalizeHostname (DNS)")
    if keyword not in (b"include", b"match"):
        return []
    args = rest[0] if rest else b""
    if any(c in args for c in (b'"', b"'", b"\\")):
        raise Uncacheable(f"quoted or escaped {keyword!r} line")
    words = args.split()
    for i, w in enumerate(words):
        if w.startswith(b"#"):
            words = words[:i]
            break
    if keyword == b"match":
        _static_match(words)
        return []
    return words


def _static_match(words: list[bytes]) -> None:
    i = 0
    while i < len(words):
        criterion = words[i].lstrip(b"!").lower()
        if criterion not in STATIC_MATCH:
            raise Uncacheable(f"Match {criterion!r}")
        i += 1 + STATIC_MATCH[criterion]


def config_roots(query: list[str], pw_dir: str, cwd: str) -> list[tuple[bytes, bool]]:
    """The files ssh reads first, each with whether it is a user file: the
    last -F (relative to the working directory), or ~/.ssh/config (from the
    passwd entry, as ssh.c does) and then the system file."""
    config = None
    for t in query:
        if t.startswith("-F"):
            config = t[2:]
    if config is None:
        return [(os.fsencode(os.path.join(pw_dir, ".ssh", "config")), True), (SYSTEM_CONFIG.encode(), False)]
    if config == "none":
        return []
    if config.startswith("~"):
        raise Uncacheable("-F ~")
    return [(os.fsencode(os.path.join(cwd, config)), True)]


def fingerprint(query: list[str], ids: tuple[int, int, list[int]], env: dict[bytes, bytes], cwd: str,
                pw: tuple[str, str, str], ssh_path: str, now_ns: int | None = None) -> bytes | None:
    """A digest of everything the `ssh -G` answer depends on, or None when
    the configuration cannot be fingerprinted (then: run the query)."""
    w = _Walk(env.get(b"HOME") or None, time.time_ns() if now_ns is None else now_ns)
    try:
        w.add("query", query, ids, sorted(env.items()), cwd, pw, os.uname().nodename)
        w.file(os.fsencode(ssh_path), user=False, depth=0, parse=False)
        for path, user in config_roots(query, pw[1], cwd):
            w.file(path, user, 0)
    except (Uncacheable, ValueError):
        return None
    return w.h.digest()


class AnswerCache:
    """Bounded LRU of `ssh -G` outputs by fingerprint; thread-safe."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._d: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes | None) -> str | None:
        with self._lock:
            if key is None or key not in self._d:
                self.misses += 1
                return None
            self.hits += 1
            self._d.move_to_end(key)
            return self._d[key]

    def put(self, key: bytes | None, answer: str) -> None:
        if key is None:
            return
        with self._lock:
            self._d[key] = answer
            self._d.move_to_end(key)
            while len(self._d) > self.entries:
                self._d.popitem(last=False)
