"""The only module that talks to BCC: compile, attach, write maps, read events.

All hooks are compiled as ONE BCC program (every hook file present, each
including the headers it uses) so they share the maps declared in the
headers (common.bpf.h, net.bpf.h). Struct
offsets of the running kernel come from BTF (pycontain.kernel.btf) as -D
macros: the installed headers may belong to another kernel.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.capacity import table_overflows
from ..core.cgroup_glob import BIRTH_CLASSES, BirthAutomaton
from ..core.errors import EnvironmentProblem
from ..core.event_types import decode
from ..core.events import (
    BIRTH_AGENT_BASE,
    CGPATH_LEN,
    MAX_LEVELS,
    MAX_PATTERNS,
    NAME_LEN,
    PATTERN_LEN,
    ConfigFlag,
    DecodeError,
    Event,
    Mode,
)
from ..core.kernel_rules import KernelTables
from . import cgroup_attach, exec_holds, local_maps, net_maps, node_addrs, pins, prog_cache, quiet_maps
from .exec_dfa import (
    CTL_ARGS_COUNT,
    CTL_ARGS_ROOT,
    CTL_BANK,
    CTL_BASENAME_COUNT,
    CTL_HOLD_ARGS_MIN,
    DFA_CLASSES,
    DFA_STATES,
    compile_patterns,
)
from .features import TRACEFS_DIRS, FeatureReport, detect_features, tp_has_field

log = logging.getLogger(__name__)

HOOK_FILES = ("exec.c", "exec_map.c", "connect.c", "socket.c", "stratum.c", "boundary.c", "egress.c",
              "stdio.c", "inbound.c", "local.c")
NET_HOOK_FILES = ("connect.c", "socket.c", "stratum.c", "egress.c", "stdio.c", "inbound.c", "local.c")
# always in the program, hook files or not: the maps every hook and Probes use
BASE_HEADERS = ("pycontain.h", "common.bpf.h")
# Longest an ordinary (non-urgent) record waits in the ring before the
# consumer drains it; see Probes.poll and pc_wake_flags in ebpf/common.bpf.h.
DRAIN_MS = 50


def ebpf_dir() -> Path:
    """$PYCONTAIN_EBPF_DIR, else the repository's ebpf/ next to the package."""
    env = os.environ.get("PYCONTAIN_EBPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "ebpf"


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str:
    """Mount point of the cgroup v2 hierarchy (/sys/fs/cgroup or .../unified)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4].replace("\\040", " ")
    except OSError:
        pass
    raise EnvironmentProblem("no cgroup v2 hierarchy is mounted (needed for agent cgroups and BPF cgroup hooks)")


def _libbcc() -> Any:
    """libbcc, imported only where probes are loaded (as `from bcc import BPF` is)."""
    from bcc.libbcc import lib
    return lib


def cgroup_level(path: str, mount: str | None = None, *, resolved: bool = False) -> int:
    """Depth of a cgroup below the v2 root: what bpf_get_current_ancestor_cgroup_id() takes.
    `resolved`: both paths are real paths already (no symlink walk: a start's cost)."""
    if not resolved:
        mount, path = os.path.realpath(mount or cgroup2_mount()), os.path.realpath(path)
    assert mount is not None
    rel = os.path.relpath(path, mount)
    if rel == ".":
        return 0
    if rel.startswith(".."):
        raise EnvironmentProblem(f"{path} is not inside the cgroup v2 hierarchy at {mount}")
    return len(rel.split(os.sep))


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[^\n]*$', re.M)


def expand_includes(text: str, src_dir: Path, seen: set[str] | None = None) -> str:
    """Replace every ``#include "name"`` with the text of src_dir/name,
    recursively, each file once (later includes of it become a comment, as
    its include guard would make them). BCC rewrites map calls
    (``pc_config.lookup``) and finds programs only in its main text, never in
    an included file, so the local files must be inlined; ``<...>`` includes
    are left to clang."""
    seen = set() if seen is None else seen

    def one(m: re.Match) -> str:
        name = m.group(1)
        if name in seen:
            return f"/* {name}: already included */"
        path = src_dir / name
        if not path.is_file():
            raise EnvironmentProblem(f"BPF source {name} not found in {src_dir} (set PYCONTAIN_EBPF_DIR)")
        seen.add(name)
        return f"/* ---- {name} ---- */\n" + expand_includes(path.read_text(), src_dir, seen)

    return _LOCAL_INCLUDE.sub(one, text)


def program_text(src_dir: Path, hook_files: list[str] | tuple[str, ...]) -> str:
    """The one BCC text for these hook files: ``#include`` lines, expanded."""
    lines = [f'#include "{name}"' for name in (*BASE_HEADERS, *hook_files)]
    return expand_includes("\n".join(lines) + "\n", src_dir)


def _check_environment(src_dir: Path) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("loading BPF probes needs root")
    if not any(os.path.isdir(d) for d in TRACEFS_DIRS):
        raise EnvironmentProblem("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
    if not (src_dir / "pycontain.h").is_file() or not (src_dir / "common.bpf.h").is_file():
        raise EnvironmentProblem(f"BPF sources not found in {src_dir} (set PYCONTAIN_EBPF_DIR)")
    build = f"/lib/modules/{os.uname().release}/build"
    if not os.path.exists(build):
        raise EnvironmentProblem(f"kernel headers missing: {build} does not exist (install linux-headers)")


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _bulk_write(table, entries: list[tuple[int, int]]) -> None:
    """Array updates in one batch syscall where the kernel and BCC allow."""
    if not entries:
        return
    n = len(entries)
    keys = (table.Key * n)(*[table.Key(k) for k, _ in entries])
    vals = (table.Leaf * n)(*[table.Leaf(v) for _, v in entries])
    try:
        table.items_update_batch(keys, vals)
        return
    except Exception:
        pass
    for k, v in entries:
        table[table.Key(k)] = table.Leaf(v)


def _detach_tracepoints_together(bpf: Any) -> None:
    """BCC's cleanup closes each tracepoint's perf event in turn, and the
    kernel's tracepoint unregistration waits for an RCU grace period in each
    close (~70 ms here: 1.2 s for 16 hooks at the end of every `run`).
    Closed from one thread each, the waits overlap. What is left (none, or
    one that failed) BCC's cleanup detaches as before."""
    def detach(tp: bytes) -> None:
        try:
            bpf.detach_tracepoint(tp)
        except Exception as e:       # left for cleanup(), which raises as it always did
            log.debug("detach %s: %s", tp, e)
    threads = [threading.Thread(target=detach, args=(tp,), name="bpf-detach")
               for tp in list(getattr(bpf, "tracepoint_fds", {}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _release_compiler_heap() -> None:
    """Give the compiler's freed heap back to the OS. clang/LLVM free their
    working memory after the compile, but glibc keeps it mapped: ~20 MB of the
    controller's RSS (docs/benchmarks.md). Not glibc: nothing to do."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Probes:
    def __init__(self, *, ringbuf_pages: int = 1024, trace_all: bool = False,
                 progress: Callable[[str], None] | None = None, verdict_pages: int = 256,
                 pin_root: str | None = None):
        for pages in (ringbuf_pages, verdict_pages):
            if pages < 1 or pages & (pages - 1):
                raise ValueError("ring buffer pages must be a power of two")
        self.ringbuf_pages = ringbuf_pages
        self.verdict_pages = verdict_pages
        self.trace_all = trace_all
        self.progress = progress or (lambda _msg: None)
        self.on_event: Callable[[Event], None] | None = None
        self.decode_errors = 0     # records user space could not decode
        self.handler_errors = 0    # records on_event raised on
        self.features: FeatureReport = FeatureReport()
        self.bpf: Any = None
        self._hooks: dict[str, str] = {}
        self._tracked: dict[str, tuple[int, int, int, Any]] = {}  # path -> (cgroup id, level, fd, handles)
        self._agent_ids: dict[str, int] = {}   # path -> agent id
        self._handled = 0
        self._closed = False
        self._used: list[str] = []     # hook files compiled in
        self._birth = False            # issue 10: the birth automaton is written and on
        self._ancestors: dict[str, tuple[int, cgroup_attach.CgroupLinks]] = {}   # path -> (fd, links)
        self._cg2: str | None = None        # the cgroup2 mount (realpath), read once: not per agent start
        self.pin_root = pin_root       # daemon mode: attachments pinned in bpffs (kernel/pins.py)
        self.pins: pins.PinDir | None = None
        self._links: list[int] = []    # fds of our pinned tracepoint links
        self._ring_epoll_fd: int | None = None
        self._node_watch: node_addrs.NodeAddrWatch | None = None   # issue 10: the node's own addresses

    # ---- load ------------------------------------------------------------

    def source(self) -> tuple[str, list[str]]:
        """(program text, names of the hook files included)."""
        d = ebpf_dir()
        used = [name for name in HOOK_FILES if (d / name).is_file()]
        return program_text(d, used), used

    def cflags(self) -> list[str]:
        flags = ["-D__BCC__", f"-DPC_RINGBUF_PAGES={self.ringbuf_pages}",
                 f"-DPC_VERDICT_PAGES={self.verdict_pages}"]
        tasks = os.environ.get("PYCONTAIN_AGENT_TASKS_MAX", "")
        if tasks.isdigit() and int(tasks) > 0:   # agent processes the node tracks (65536)
            flags.append(f"-DPC_AGENT_TASKS_MAX={int(tasks)}")
        try:
            from .btf import kernel_offsets
            offs = kernel_offsets()
        except Exception as e:   # probes fall back to what needs no offsets
            log.warning("no BTF offsets (%s): exec argv/ppid/start time unavailable", e)
            return flags
        flags.append("-DPC_HAVE_BTF_OFFSETS=1")
        try:
            from .btf import kernel_file_offsets
            file_offs = kernel_file_offsets()
        except Exception:   # the exec file checks compile to nothing
            file_offs = {}
        if file_offs:
            flags.append("-DPC_HAVE_FILE_OFFSETS=1")
            offs = {**offs, **file_offs}
            if (tp_has_field("sched/sched_prepare_exec", "interp")   # Linux >= 6.10: #! scripts seen
                    and not os.environ.get("PYCONTAIN_NO_PREPARE_EXEC")):   # tests: the < 6.10 program
                flags.append("-DPC_HAVE_PREPARE_EXEC=1")
        if tp_has_field("sched/sched_process_exit", "group_dead"):
            flags.append("-DPC_TP_EXIT_HAS_GROUP_DEAD=1")
        if tp_has_field("mmap/exit_mmap", "mm"):   # kernel >= 6.1: mprotect(PROT_EXEC) tracking
            flags.append("-DPC_HAVE_TP_EXIT_MMAP=1")
        flags += [f"-D{k}={v}" for k, v in sorted(offs.items())]
        return flags

    def load(self) -> None:
        src_dir = ebpf_dir()
        _check_environment(src_dir)
        self.progress("probing kernel BPF features")
        self.features = detect_features()
        try:
            from bcc import BPF  # noqa: F401  (importable: checked before the slow steps)
        except Exception as e:
            raise EnvironmentProblem(f"BCC Python bindings not importable ({e}); install python3-bpfcc") from None
        text, used = self.source()
        self._used = used
        self.progress(f"compiling probes ({', '.join(used) or 'no hook files'})")
        try:
            self.bpf = self._compile(text)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else e
            raise EnvironmentProblem(f"BPF programs failed to compile or load: {first}") from None
        _release_compiler_heap()
        # BCC attaches TRACEPOINT_PROBE / RAW_TRACEPOINT_PROBE functions while
        # loading and raises if one fails; list what it attached
        self._hooks = {}
        for tp in getattr(self.bpf, "tracepoint_fds", {}):
            self._hooks[_s(tp)] = "attached"
        for tp in getattr(self.bpf, "raw_tracepoint_fds", {}):
            self._hooks[f"raw_tp:{_s(tp)}"] = "attached"
        if self.pin_root:
            self._pin_tracepoints()
        self.progress("opening the event ring buffers")
        # decision records first: libbpf consumes the rings in the order they
        # were opened, so an exec is handled before a routine record (its
        # exit) that was queued after it
        self.bpf[b"pc_verdicts"].open_ring_buffer(self._on_record)
        self.bpf[b"pc_events"].open_ring_buffer(self._on_record)
        self._write_config(mode=None, flags=None)
        self._closed = False

    def _compile(self, text: str) -> Any:
        """The BPF object: from the program cache when it has this text for
        this kernel (kernel/prog_cache.py), else compiled, then cached."""
        flags = self.cflags()
        try:
            return prog_cache.load(text, flags)
        except prog_cache.CacheMiss as e:
            log.debug("BPF program cache: %s", e)
        bpf = prog_cache.compiling_class()(text=text.encode(), cflags=flags)
        prog_cache.save(bpf, text, flags)
        return bpf

    def _pin_tracepoints(self) -> None:
        """Move every tracepoint attachment onto a pinned BPF link, so it
        holds while no daemon runs (kernel/pins.py). The kernel refuses the
        same program twice on one tracepoint (EEXIST), so BCC's attachment
        goes first; nothing is tracked in this program's maps yet, and an
        earlier daemon's pinned programs enforce meanwhile: no gap."""
        self.pins = pins.PinDir(self.pin_root)
        try:
            for tp in list(getattr(self.bpf, "tracepoint_fds", {})):
                self._pin_tracepoint(_s(tp))
            for tp, fd in getattr(self.bpf, "raw_tracepoint_fds", {}).items():
                self.pins.pin(fd, f"rawtp-{_s(tp)}")     # a raw tracepoint fd is a BPF link
        except BaseException:
            pins.remove_tree(self.pins.path)
            raise

    def _pin_tracepoint(self, tp: str) -> None:
        from bcc import BPF
        assert self.pins is not None
        cat, name = tp.split(":", 1)
        fn = self.bpf.load_func(f"tracepoint__{cat}__{name}".encode(), BPF.TRACEPOINT)
        self.bpf.detach_tracepoint(tp.encode())
        pfd = pins.perf_tracepoint_fd(cat, name)
        try:
            link = pins.link_create(fn.fd, pfd, pins.BPF_PERF_EVENT)
        except OSError as e:
            raise EnvironmentProblem(f"cannot pin the {tp} program (BPF_LINK_CREATE: {e.strerror}); "
                                     "enforcement would end with the daemon",
                                     hint="kernel >= 5.15 is needed for pinned tracepoint links") from None
        finally:
            os.close(pfd)
        self._links.append(link)
        self.pins.pin(link, f"tp-{cat}-{name}")

    def retire_older_pins(self) -> list[str]:
        """Remove the pins of earlier daemons (call once this one tracks every agent)."""
        return self.pins.retire_older() if self.pins else []

    # ---- maps ----------------------------------------------------------------

    def _table(self, name: str):
        if self.bpf is None:
            raise RuntimeError("Probes.load() was not called")
        return self.bpf[name.encode()]

    def _read_config(self):
        t = self._table("pc_config")
        return t[ctypes.c_int(0)]

    def _write_config(self, *, mode: Mode | None, flags: int | None, levels: int | None = None) -> None:
        t = self._table("pc_config")
        cur = t[ctypes.c_int(0)]
        new = t.Leaf()
        new.mode = int(cur.mode if mode is None else mode)
        f = int(cur.flags if flags is None else flags)
        if self.trace_all:
            f |= int(ConfigFlag.TRACE_ALL)
        f = f | int(ConfigFlag.BIRTH) if self._birth else f & ~int(ConfigFlag.BIRTH)
        new.flags = f
        new.tracked_levels = int(cur.tracked_levels if levels is None else levels)
        new.birth_levels = int(cur.birth_levels)   # owned by the kernel (ebpf/boundary.c)
        t[ctypes.c_int(0)] = new

    def set_tables(self, tables: KernelTables) -> None:
        """Replace the exec deny tables and config in place, never opening a gap:
        new entries are written before stale ones are removed. Tables that do
        not fit the live maps are refused before anything is written."""
        self._check_fits(tables)
        self._write_exec_names(tables.exec_names)
        self._write_patterns(tables.exec_patterns)
        self._table("pc_exec_dfa_ctl")[ctypes.c_int(CTL_HOLD_ARGS_MIN)] = ctypes.c_uint32(tables.hold_args_min)
        exec_holds.write_trusted_dirs(self._table("pc_exec_trusted_dirs"), tables.trusted_paths)
        if "connect.c" in self._used or "local.c" in self._used:
            local_maps.write_local_tables(self.bpf, tables)   # issue 10: before the guard flag is on
            self._watch_node_addrs()
        self._write_config(mode=tables.mode, flags=int(tables.flags))
        net_maps.bump_generation(self.bpf, b"pc_exec_gen")   # exe.bpf.h: files judged clean
        if self._has_net_hooks():
            net_maps.write_net_tables(self.bpf, tables)

    def _watch_node_addrs(self) -> None:
        """The node's own addresses count as local (kernel/node_addrs.py),
        written before the guard flag is first turned on."""
        if self._node_watch is None:
            table = self._table("pc_node_addrs")
            self._node_watch = node_addrs.NodeAddrWatch(
                lambda: node_addrs.write_node_addrs(table, node_addrs.node_addresses()))

    def _check_fits(self, tables: KernelTables) -> None:
        """The policy check counts the policy's own entries (core/capacity.py);
        host names add their addresses only now, so count again against the
        maps' real sizes: a failed write half-way would leave a mixture."""
        for o in table_overflows(tables):
            if o.map in ("pc_exec_names", "pc_exec_patterns", "pc_exec_dfa_class") or self._has_net_hooks():
                raise EnvironmentProblem(f"{o.rule}: {o.message()}", hint=o.hint)

    def _has_net_hooks(self) -> bool:
        """The network maps and cgroup programs exist only when their hook
        files were compiled in (the exec harness loads exec.c alone)."""
        return any(f in NET_HOOK_FILES for f in self._used)

    def _write_exec_names(self, names: dict[str, int]) -> None:
        t = self._table("pc_exec_names")
        wanted = {}
        for name, rule in names.items():
            raw = name.lower().encode("utf-8", "surrogateescape")[: NAME_LEN - 1]
            wanted[raw] = rule
        for raw, rule in wanted.items():
            k = t.Key()
            k.name = raw
            t[k] = ctypes.c_uint32(rule)
        for k in list(t.keys()):
            if bytes(k.name) not in wanted:
                try:
                    del t[k]
                except KeyError:
                    pass

    def _write_patterns(self, patterns) -> None:
        t = self._table("pc_exec_patterns")
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} exec patterns")
        want = []
        for pat, where, rule in patterns:
            raw = pat.lower().encode("utf-8", "surrogateescape")[:PATTERN_LEN]
            if raw:
                want.append((raw, int(where), int(rule)))
        current = []
        for i in range(MAX_PATTERNS):
            v = t[ctypes.c_int(i)]
            current.append((bytes(v.pat)[: v.len], int(v.where), int(v.rule_id)) if v.rule_id else None)
        todo = [w for w in want if w not in current]
        # slots whose pattern is no longer wanted; empty ones first, so live
        # stale rules stay enforced until the new ones are in place
        stale = [i for i, c in enumerate(current) if c is None]
        stale += [i for i, c in enumerate(current) if c is not None and c not in want]
        for (raw, where, rule), slot in zip(todo, stale, strict=False):    # the lengths may differ
            self._put_pattern(t, slot, raw, where, rule)
            current[slot] = (raw, where, rule)
        for i, c in enumerate(current):
            if c is not None and c not in want:
                self._put_pattern(t, i, b"", 0, 0)
        self._write_automaton(want)

    def _write_automaton(self, want: list[tuple[bytes, int, int]]) -> None:
        """Fill the inactive bank of the exec automaton, then flip the bank
        index (one u32 write): the kernel sees the old or the new rules,
        never a mixture or none."""
        a = compile_patterns(want)
        ctl = self._table("pc_exec_dfa_ctl")
        active = int(ctl[ctypes.c_int(CTL_BANK)].value) & 1
        bank = active ^ 1
        _bulk_write(self._table("pc_exec_dfa_class"),
                    [(bank * 256 + b, c) for b, c in enumerate(a.byte_class)])
        entries = []
        for s, row in enumerate(a.rows):
            base = (bank * DFA_STATES + s) * DFA_CLASSES
            entries += [(base + c, v) for c, v in enumerate(row)]
        _bulk_write(self._table("pc_exec_dfa"), entries)
        for idx, val in ((CTL_ARGS_ROOT, a.args_root), (CTL_BASENAME_COUNT, a.basename_count),
                         (CTL_ARGS_COUNT, a.args_count)):
            ctl[ctypes.c_int(idx + bank)] = ctypes.c_uint32(val)
        ctl[ctypes.c_int(CTL_BANK)] = ctypes.c_uint32(bank)

    @staticmethod
    def _put_pattern(t, slot: int, raw: bytes, where: int, rule: int) -> None:
        v = t.Leaf()
        v.rule_id = rule
        v.len = len(raw)
        v.where = where
        v.pat = raw
        t[ctypes.c_int(slot)] = v

    # ---- held execs (issue 11) ------------------------------------------------

    def release_held(self, pid: int) -> bool:
        """Let a held exec run: out of pc_exec_held first (so the syscall gate
        spares it), then SIGCONT. False if it was not held (any more)."""
        return exec_holds.release(self.bpf, pid)

    def settle_held(self, pid: int) -> None:
        """A held exec was decided otherwise (killed): forget it."""
        exec_holds.settle(self.bpf, pid)

    def held_pids(self) -> dict[int, int]:
        """Held pid -> boot ns of its hold, as the kernel has them."""
        return exec_holds.held(self.bpf)

    # ---- cgroups ---------------------------------------------------------

    @property
    def has_boundary(self) -> bool:
        return "boundary.c" in self._used

    def set_birth(self, automaton: BirthAutomaton | None) -> None:
        """Write the birth automaton (issue 10) and turn the kernel's birth
        marking on; None or no kernel-matched selector: off. The flag is off
        while the tables are rewritten (the scan covers that instant)."""
        if not self.has_boundary:
            return
        self._birth = False
        self._write_config(mode=None, flags=None)
        if automaton is None or not automaton.kernel:
            return
        _bulk_write(self._table("pc_birth_class"), list(enumerate(automaton.byte_class)))
        entries = []
        for st, row in enumerate(automaton.rows):
            entries += [(st * BIRTH_CLASSES + c, v) for c, v in enumerate(row)]
        _bulk_write(self._table("pc_birth_dfa"), entries)
        _bulk_write(self._table("pc_birth_accept"), list(enumerate(automaton.accept)))
        self._birth = True
        self._write_config(mode=None, flags=None)

    def born_agent_id(self, cgroup_v2_path: str) -> int | None:
        """The id the kernel gave this cgroup at birth (ebpf/boundary.c), if any:
        whoever adopts it first (the birth record or the scan) keeps that id,
        so the tasks already registered under it stay named."""
        if not self.has_boundary:
            return None
        try:
            v = self._table("pc_agents").get(ctypes.c_uint64(os.stat(cgroup_v2_path).st_ino))
        except OSError:
            return None
        return int(v.value) if v is not None and int(v.value) >= BIRTH_AGENT_BASE else None

    def attach_at_ancestor(self, cgroup_v2_path: str) -> None:
        """Attach the cgroup programs once at `cgroup_v2_path` (issue 10): they
        run for every cgroup below it, made now or later, and filter by
        pc_agents. Agents tracked below it get no per-cgroup attachment."""
        path = os.path.realpath(cgroup_v2_path)
        if path in self._ancestors or not self._has_net_hooks():
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            cg_id = os.fstat(fd).st_ino
            links = cgroup_attach.link_cgroup_programs(self.bpf, fd, self.pins, f"anc-{cg_id}")
        except Exception:
            os.close(fd)
            raise
        self._ancestors[path] = (fd, links)

    def _covered(self, path: str) -> bool:
        return any(path == a or path.startswith(a.rstrip("/") + "/") for a in self._ancestors)

    def _cgroup2(self) -> str:
        if self._cg2 is None:
            self._cg2 = os.path.realpath(cgroup2_mount())
        return self._cg2

    def _cg_key(self, path: str):
        rel = os.path.relpath(path, self._cgroup2())
        k = self._table("pc_cg_paths").Key()
        k.path = ("/" + rel).encode("utf-8", "surrogateescape")[: CGPATH_LEN - 1]
        return k

    def _mark_boundary(self, path: str, agent_id: int) -> None:
        """The agent's path (its subtree is inside the boundary) and the tasks
        in it now (their identity follows them from here on)."""
        self._table("pc_cg_paths")[self._cg_key(path)] = ctypes.c_uint32(agent_id)
        tasks = self._table("pc_agent_tasks")
        try:
            with open(os.path.join(path, "cgroup.procs")) as fh:
                pids = [int(p) for p in fh.read().split()]
        except OSError:
            pids = []
        for pid in pids:
            tasks[ctypes.c_uint32(pid)] = ctypes.c_uint32(agent_id)

    def _unmark_boundary(self, path: str, agent_id: int) -> None:
        try:
            del self._table("pc_cg_paths")[self._cg_key(path)]
        except (KeyError, EnvironmentProblem):
            pass
        tasks = self._table("pc_agent_tasks")
        for k, v in list(tasks.items()):
            if int(v.value) == agent_id:
                try:
                    del tasks[k]
                except KeyError:
                    pass

    def _levels(self) -> int:
        bits = 0
        for _id, level, _fd, _h in self._tracked.values():
            if level < MAX_LEVELS:
                bits |= 1 << level
        return bits

    def track_cgroup(self, cgroup_v2_path: str, agent_id: int) -> None:
        path = os.path.realpath(cgroup_v2_path)
        if path in self._tracked:
            self.untrack_cgroup(path)
        cg_id = os.stat(path).st_ino
        level = cgroup_level(path, self._cgroup2(), resolved=True)
        if level >= MAX_LEVELS:
            log.warning("cgroup %s is %d levels deep: only tasks directly in it are tracked", path, level)
        agents = self._table("pc_agents")
        # the wall-clock start that exec.trusted compares mtimes with (issue 11);
        # before the agent is tracked, so no exec of it finds none
        exec_holds.set_agent_since(self._table("pc_exec_since"), agent_id)
        net_maps.bump_generation(self.bpf, b"pc_exec_gen")   # exe.bpf.h: files judged clean
        agents[ctypes.c_uint64(cg_id)] = ctypes.c_uint32(agent_id)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._tracked[path] = (cg_id, level, fd, None)
        self._agent_ids[path] = agent_id
        if self.has_boundary:
            self._mark_boundary(path, agent_id)
        self._write_config(mode=None, flags=None, levels=self._levels())
        if self._has_net_hooks() and not self._covered(path):
            handles: Any
            if self.pins is not None:
                handles = cgroup_attach.link_cgroup_programs(self.bpf, fd, self.pins, f"cg-{cg_id}")
            else:
                handles = cgroup_attach.attach_cgroup_programs(self.bpf, fd)
            self._tracked[path] = (cg_id, level, fd, handles)

    def untrack_cgroup(self, cgroup_v2_path: str) -> None:
        path = os.path.realpath(cgroup_v2_path)
        entry = self._tracked.pop(path, None)
        if entry is None:
            entry = next(((p, e) for p, e in self._tracked.items() if p == cgroup_v2_path), (None, None))[1]
            if entry is None:
                return
            self._tracked.pop(cgroup_v2_path, None)
        cg_id, _level, fd, handles = entry
        self._detach(fd, handles if os.path.isdir(path) else None)
        agent_id = self._agent_ids.pop(path, None)
        if self.bpf is not None and self.has_boundary and agent_id is not None:
            self._unmark_boundary(path, agent_id)
        if self.bpf is not None:
            try:
                del self._table("pc_agents")[ctypes.c_uint64(cg_id)]
            except KeyError:
                pass
            self._write_config(mode=None, flags=None, levels=self._levels())

    def _detach(self, fd: int, handles: Any) -> None:
        """Detach our cgroup programs (handles None: only close the fd).

        A removed agent cgroup keeps its programs: the kernel holds them for
        the sockets the agent left behind (cgroup_sk_alloc takes a cgroup_bpf
        reference) and frees them with the last one. So an orphaned socket of
        a killed miner cannot retransmit its stratum payload or reach a denied
        address after teardown."""
        if isinstance(handles, cgroup_attach.CgroupLinks):
            handles.unpin()
        elif handles is not None:
            try:
                cgroup_attach.detach_cgroup_programs(self.bpf, fd, handles)
            except Exception as e:   # the cgroup may be gone already
                log.debug("detach cgroup programs: %s", e)
        try:
            os.close(fd)
        except OSError:
            pass

    # ---- events ------------------------------------------------------------

    def _on_record(self, _ctx, data, size) -> int:
        try:
            ev = decode(ctypes.string_at(data, size))
            if self.on_event is not None:
                self.on_event(ev)
            self._handled += 1
        except DecodeError as e:
            self.decode_errors += 1
            log.warning("undecodable kernel record: %s", e)
        except Exception:
            self.handler_errors += 1
            log.exception("event callback failed")
        return 0

    @property
    def user_lost(self) -> int:
        """Records lost in user space: undecodable, or the handler raised."""
        return self.decode_errors + self.handler_errors

    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` (at most DRAIN_MS) for an urgent record,
        then drain the ring. Returns the number of records handled.

        The kernel queues ordinary records without waking us (pc_wake_flags in
        ebpf/common.bpf.h), so the wait is capped and always followed by a
        drain: an ordinary record reaches user space within DRAIN_MS."""
        if self.bpf is None:
            return 0
        before = self._handled + self.user_lost
        wait = DRAIN_MS if timeout_ms < 0 else min(timeout_ms, DRAIN_MS)
        if wait:
            self.bpf.ring_buffer_poll(wait)
        self.bpf.ring_buffer_consume()
        return self._handled + self.user_lost - before

    def wait(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` (at most DRAIN_MS) for an urgent record
        without reading any: the daemon waits here outside its lock, so a
        start request never queues behind the ring wait, then drains with
        poll(0) under it. False when this BCC cannot wait apart (the caller
        then polls with the timeout as before)."""
        if self.bpf is None:
            return True
        fd = self._epoll_fd()
        if fd is None:
            return False
        wait = DRAIN_MS if timeout_ms < 0 else min(timeout_ms, DRAIN_MS)
        select.select([fd], [], [], wait / 1000)
        return True

    def _epoll_fd(self) -> int | None:
        """The ring buffers' epoll descriptor (libbpf's, exported by libbcc)."""
        if self._ring_epoll_fd is None:
            mgr = getattr(self.bpf, "_ringbuf_manager", None)
            fn = getattr(_libbcc(), "ring_buffer__epoll_fd", None)
            if not mgr or fn is None:
                return None
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_void_p]
            fd = fn(mgr)
            self._ring_epoll_fd = fd if fd >= 0 else None
        return self._ring_epoll_fd

    # ---- routine destinations (issue 14 part 3, ebpf/aggregate.bpf.h) ------

    def quiet_add(self, key: quiet_maps.QuietKey) -> bool:
        return self.bpf is not None and quiet_maps.add(self.bpf, key)

    def quiet_read(self) -> list[quiet_maps.QuietCount]:
        return quiet_maps.read(self.bpf) if self.bpf is not None else []

    def quiet_delete(self, keys: list[quiet_maps.QuietKey]) -> None:
        if self.bpf is not None:
            quiet_maps.delete(self.bpf, keys)

    def quiet_clear(self) -> None:
        if self.bpf is not None:
            quiet_maps.clear(self.bpf)

    def lost_kernel(self) -> int:
        if self.bpf is None:
            return 0
        vals = self._table("pc_lost")[ctypes.c_int(0)]
        return int(sum(int(v) for v in vals))

    def agent_losses(self) -> dict[int, int]:
        """Agent id -> records of that agent the kernel could not queue (id 0:
        agent records whose agent the loss map had no room for)."""
        if self.bpf is None:
            return {}
        return {int(k.value): int(v.value) for k, v in self._table("pc_agent_lost").items()}

    def hook_status(self) -> dict[str, str]:
        out = dict(self._hooks)
        for name, state in self.features.hooks.items():
            if not state.startswith("available"):
                out.setdefault(name, state)
        try:
            out.update(cgroup_attach.hook_status(self.bpf))
        except Exception as e:
            out["cgroup"] = f"unavailable: {e}"
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._node_watch is not None:
            self._node_watch.close()
        for path in list(self._tracked):
            _id, _level, fd, handles = self._tracked.pop(path)
            if isinstance(handles, cgroup_attach.CgroupLinks):
                handles.close()          # the pins hold them: enforcement outlives us
                handles = None
            self._detach(fd, handles if os.path.isdir(path) else None)
        for fd, links in self._ancestors.values():
            links.close()                # pinned: the pins hold them; unpinned: detached
            os.close(fd)
        self._ancestors.clear()
        for link in self._links:
            os.close(link)
        self._links = []
        if self.bpf is not None:
            try:
                _detach_tracepoints_together(self.bpf)
                self.bpf.cleanup()
            finally:
                self.bpf = None
