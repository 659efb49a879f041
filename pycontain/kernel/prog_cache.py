"""Compiled BPF programs cached per source, flags, BCC and kernel.

Compiling the one BCC program with clang/LLVM took ~3 s of the controller's
~4.4 s to ready (docs/benchmarks.md), paid by every `run --no-daemon`. BCC
0.26 has no object cache and no way to load a compiled object while keeping
its table API (which the loader and every map module use), so this is
hand-written:

* cold start (no usable cache): BCC compiles and loads the program as before
  (``save``); then each function's final instructions are written to the
  cache with, for every map load in them (``ld_imm64`` of a map fd), the name
  of the map it refers to.
* warm start (``load``): BCC compiles the SAME text with every program turned
  into an unused static function (so clang parses it but emits nothing):
  maps, their BTF and BCC's tables come out as before, in a fraction of the
  time. The cached instructions get this module's map fds and are loaded with
  the type and attach type the caller asks for, through BCC's own loader
  call: the kernel verifies every program as it always did. Tracepoints are
  attached in BCC's order, before ``load`` returns: no hook is later than on a
  cold start.

How the programs are hidden: BCC's TRACEPOINT_PROBE and RAW_TRACEPOINT_PROBE
are redefined to define static functions (plus, per tracepoint, a two-
instruction external function that makes BCC generate the tracepoint's
argument struct); every other program (cgroup programs, written as plain
``int name(ctx) {``) is renamed by a ``-Dname=...`` macro into an external
declaration followed by a static definition. The names come from the cache.

The cache key covers the format, BCC (version and library file), the running
kernel (release, build) and its headers, the full program text and flags. A
file is used only if it and every directory above it are root's and nobody
else can replace them: a program read from a file an agent could write would
be a program of the agent's choosing. Anything unexpected (stale key,
unreadable file, a map name this module lacks, a program the kernel rejects)
means a full compile, never a weaker program. ``PYCONTAIN_BPF_CACHE=off``
turns the cache off; ``PYCONTAIN_BPF_CACHE=<dir>`` moves it.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import logging
import os
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_DIR = "/var/cache/pycontain/bpf"
ENV = "PYCONTAIN_BPF_CACHE"
KEEP = 8                      # cache files kept (one per program text and kernel)

BPF_LD_IMM64 = 0x18
PSEUDO_MAP_SRC = (1, 2)       # BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE: imm is a map fd
AUTO_PREFIXES = (b"tracepoint__", b"raw_tracepoint__")

# BCC's program macros (bcc/helpers.h), redefined for the maps-only compile
MAPS_ONLY_PRELUDE = r"""
#undef TRACEPOINT_PROBE
#define TRACEPOINT_PROBE(category, event) \
int pc_tp_types__##category##__##event(struct tracepoint__##category##__##event *args) { return 0; } \
static __attribute__((unused)) int tracepoint__##category##__##event(struct tracepoint__##category##__##event *args)
#undef RAW_TRACEPOINT_PROBE
#define RAW_TRACEPOINT_PROBE(event) \
static __attribute__((unused)) int raw_tracepoint__##event(struct bpf_raw_tracepoint_args *ctx)
"""


class CacheMiss(Exception):
    """No usable cache entry; the caller compiles."""


@dataclass(frozen=True)
class Program:
    name: bytes
    insns: bytes
    relocs: tuple[tuple[int, str], ...]      # (instruction index, map name)


def cache_dir() -> str | None:
    v = os.environ.get(ENV, "")
    if v.lower() in ("off", "0", "no"):
        return None
    return v or DEFAULT_DIR


def _lib() -> Any:
    """A private handle on libbcc with the table-listing calls typed (BCC's
    own handle does not declare them; it is not ours to change)."""
    from bcc.libbcc import lib
    own = ctypes.CDLL(lib._name)
    own.bpf_num_tables.restype, own.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    own.bpf_table_name.restype = ctypes.c_char_p
    own.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    own.bpf_table_fd.restype, own.bpf_table_fd.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
    return own


def _table_fds(module: Any) -> dict[str, int]:
    lib = _lib()
    names = [lib.bpf_table_name(module, i) for i in range(lib.bpf_num_tables(module))]
    return {n.decode(): lib.bpf_table_fd(module, n) for n in names if n}


def _file_id(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _libbcc_path() -> str:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libbcc.so" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return "libbcc"


def cache_key(text: str, cflags: list[str]) -> str:
    import bcc
    u = os.uname()
    build = f"/lib/modules/{u.release}/build"
    material = [FORMAT, getattr(bcc, "__version__", "?"), _file_id(_libbcc_path()), u.release, u.version,
                _file_id(f"{build}/include/generated/autoconf.h"), _file_id(f"{build}/Makefile"),
                _file_id("/sys/kernel/btf/vmlinux"), list(cflags), hashlib.sha256(text.encode()).hexdigest()]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


# ---- reading the instructions ------------------------------------------------

def _insn(insns: bytes | bytearray, i: int) -> tuple[int, int, int]:
    """(opcode, src register, imm) of instruction i."""
    op, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * 8)
    return op, regs >> 4, imm


def map_relocations(insns: bytes, fd_names: dict[int, str]) -> tuple[tuple[int, str], ...]:
    """(index, map name) of every map-fd load; CacheMiss for a load this cache
    cannot re-point (an unknown fd, another pseudo source)."""
    out = []
    i = 0
    n = len(insns) // 8
    while i < n:
        op, src, imm = _insn(insns, i)
        if op == BPF_LD_IMM64:
            if src in PSEUDO_MAP_SRC:
                if imm not in fd_names:
                    raise CacheMiss(f"map fd {imm} at instruction {i} is no table of this module")
                out.append((i, fd_names[imm]))
            elif src != 0:
                raise CacheMiss(f"ld_imm64 source {src} at instruction {i} cannot be cached")
            i += 2
            continue
        i += 1
    return tuple(out)


def relocate(prog: Program, fds: dict[str, int]) -> bytes:
    buf = bytearray(prog.insns)
    for i, name in prog.relocs:
        op, src, _imm = _insn(buf, i)
        if op != BPF_LD_IMM64 or src not in PSEUDO_MAP_SRC or name not in fds or fds[name] < 0:
            raise CacheMiss(f"{prog.name.decode()}: map {name} at instruction {i} cannot be re-pointed")
        struct.pack_into("<i", buf, i * 8 + 4, fds[name])
    return bytes(buf)


def programs_of(module: Any) -> list[Program]:
    """Every function of a fully compiled and loaded BCC module."""
    from bcc.libbcc import lib
    fd_names = {fd: name for name, fd in _table_fds(module).items() if fd >= 0}
    progs = []
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i)
        start, size = lib.bpf_function_start(module, name), lib.bpf_function_size(module, name)
        if not start or not size or size % 8:
            raise CacheMiss(f"function {name!r} has no instructions")
        insns = ctypes.string_at(start, size)
        progs.append(Program(name, insns, map_relocations(insns, fd_names)))
    return progs


# ---- the file ------------------------------------------------------------------

def _trusted(path: str, st: os.stat_result) -> bool:
    """Root's, and nobody else can write it (a sticky directory counts: only
    root may then replace root's entry)."""
    if st.st_uid != 0:
        return False
    return not (st.st_mode & 0o022) or bool(stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX)


def _trusted_dirs(directory: str) -> bool:
    path = os.path.abspath(directory)
    while True:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or not _trusted(path, st):
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def read(directory: str, key: str) -> list[Program]:
    path = os.path.join(directory, f"{key}.json")
    if not _trusted_dirs(directory):
        raise CacheMiss(f"{directory} (or a directory above it) may be written by others than root")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise CacheMiss(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022 or st.st_uid != 0:
            raise CacheMiss(f"{path} may be written by others than root")
        data = json.loads(fh.read())
    try:
        if data["format"] != FORMAT or data["key"] != key:
            raise CacheMiss(f"{path}: another key")
        return [Program(p["name"].encode(), base64.b64decode(p["insns"], validate=True),
                        tuple((int(i), str(m)) for i, m in p["relocs"])) for p in data["programs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMiss(f"{path}: malformed ({e})") from None


def write(directory: str, key: str, progs: list[Program]) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = {"format": FORMAT, "key": key,
            "programs": [{"name": p.name.decode(), "insns": base64.b64encode(p.insns).decode(),
                          "relocs": [list(r) for r in p.relocs]} for p in progs]}
    path = os.path.join(directory, f"{key}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
    _prune(directory)


def _prune(directory: str) -> None:
    """Keep the KEEP newest entries (each source change makes a new one)."""
    entries = []
    for name in os.listdir(directory):
        if name.endswith(".json"):
            try:
                entries.append((os.stat(os.path.join(directory, name)).st_mtime_ns, name))
            except OSError:
                continue
    for _t, name in sorted(entries, reverse=True)[KEEP:]:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


# ---- loader entry points -----------------------------------------------------

def save(bpf: Any, text: str, cflags: list[str]) -> None:
    """Cache the programs of a BPF module that compiled and loaded; a cache
    that cannot be written costs the next start a compile, nothing else."""
    directory = cache_dir()
    if directory is None or os.geteuid() != 0:
        return
    try:
        write(directory, cache_key(text, cflags), programs_of(bpf.module))
    except (CacheMiss, OSError) as e:
        log.info("BPF program cache not written: %s", e)


def maps_only_flags(progs: list[Program]) -> list[str]:
    """-D macros that turn each plain program definition ``int name(...) {``
    into an external declaration and a static definition."""
    out = []
    for p in progs:
        if p.name.startswith(AUTO_PREFIXES):
            continue
        n = p.name.decode()
        if not n.isidentifier():
            raise CacheMiss(f"program name {n!r}")
        out.append(f"-D{n}=pc_maps_only_decl_{n}(void); static __attribute__((unused)) int pc_maps_only_{n}")
    return out


def load(text: str, cflags: list[str]) -> Any:
    """A BPF object with the cached programs loaded and the tracepoints
    attached, or CacheMiss."""
    directory = cache_dir()
    if directory is None:
        raise CacheMiss("cache off")
    progs = read(directory, cache_key(text, cflags))
    cls = _cached_bpf_class()
    return cls(progs, text=(MAPS_ONLY_PRELUDE + text).encode(), cflags=cflags + maps_only_flags(progs))


def autoload_alongside(bpf: Any, autoload: Any) -> None:
    """BCC's autoload (each tracepoint program loaded, then attached, in
    order) while a second thread loads the cgroup programs: the kernel
    verifies two programs at once (ctypes releases the GIL in libbcc; a load
    only reads the module), instead of the cgroup ones one by one after it,
    in Controller.start's hook_status (~1 s here). The autoload's thread then
    takes what is left of the cgroup list (the cgroup programs verify about
    twice as long as the tracepoint ones). They are attached, as before,
    when an agent is tracked."""
    from . import cgroup_attach
    pending = cgroup_attach.preload_list(bpf)
    worker = threading.Thread(target=cgroup_attach.preload, args=(bpf, pending), name="bpf-preload",
                              daemon=True)
    worker.start()
    try:
        autoload()
        cgroup_attach.preload(bpf, pending)
    finally:
        worker.join()


def compiling_class() -> type:
    """BCC's BPF, its autoload alongside the cgroup program loads."""
    from bcc import BPF

    class CompiledBPF(BPF):
        def _trace_autoload(self) -> None:
            autoload_alongside(self, super()._trace_autoload)

    return CompiledBPF


def _cached_bpf_class() -> type:
    from bcc import BPF
    from bcc.libbcc import lib

    class CachedBPF(BPF):
        """BCC's BPF with the program instructions from the cache."""

        def __init__(self, progs: list[Program], **kw: Any):
            self.pc_programs = {p.name: p for p in progs}
            try:
                super().__init__(**kw)
            except CacheMiss:
                raise
            except Exception as e:
                raise CacheMiss(f"maps-only compile: {str(e).splitlines()[0] if str(e) else e}") from None

        def pc_has_function(self, name: str) -> bool:
            return name.encode() in self.pc_programs

        def _trace_autoload(self) -> None:
            try:
                self._pc_fds = _table_fds(self.module)
                for name in self.pc_programs:
                    if lib.bpf_function_start(self.module, name):
                        raise CacheMiss(f"{name.decode()} was compiled in the maps-only module")
                autoload_alongside(self, self._attach_cached)
            except Exception as e:
                self.cleanup()
                raise CacheMiss(f"cached programs: {str(e).splitlines()[0] if str(e) else e}") from None

        def _attach_cached(self) -> None:
            """As BCC's autoload, over the cached programs (in BCC's order)."""
            for name in self.pc_programs:
                if name.startswith(b"tracepoint__"):
                    self.attach_tracepoint(tp=name[12:].replace(b"__", b":"), fn_name=name)
                elif name.startswith(b"raw_tracepoint__"):
                    self.attach_raw_tracepoint(tp=name[16:], fn_name=name)

        def load_func(self, func_name, prog_type, device=None, attach_type=-1):
            func_name = func_name.encode() if isinstance(func_name, str) else func_name
            if func_name in self.funcs:
                return self.funcs[func_name]
            prog = self.pc_programs.get(func_name)
            if prog is None:
                raise Exception(f"Unknown program {func_name!r}")
            insns = ctypes.create_string_buffer(relocate(prog, self._pc_fds), len(prog.insns))
            fd = lib.bcc_func_load(self.module, prog_type, func_name, insns, len(prog.insns),
                                   lib.bpf_module_license(self.module), lib.bpf_module_kern_version(self.module),
                                   0, None, 0, device, attach_type)
            if fd < 0:
                raise Exception(f"Failed to load BPF program {func_name!r}: {os.strerror(ctypes.get_errno())}")
            fn = BPF.Function(self, func_name, fd)
            self.funcs[func_name] = fn
            return fn

    return CachedBPF
