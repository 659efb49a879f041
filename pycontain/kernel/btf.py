"""Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).

The kernel headers on a host often do not match the running kernel (here:
6.1 headers, 6.18 kernel), so BPF programs never use struct member access
from headers. The loader reads the few offsets the probes need from BTF and
passes them as -D macros. Format: Documentation/bpf/btf.rst (header, type
section, string section). Only STRUCT/UNION members are interpreted; every
other kind is skipped by its documented size.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# bytes following the 12-byte common type record: fixed part, per-vlen part
_EXTRA = {
    KIND_INT: (4, 0), KIND_PTR: (0, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12), KIND_ENUM: (0, 8), KIND_FWD: (0, 0), KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0), KIND_CONST: (0, 0), KIND_RESTRICT: (0, 0), KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0), KIND_TYPE_TAG: (0, 0), KIND_ENUM64: (0, 12),
}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


@dataclass(frozen=True)
class BtfType:
    kind: int
    name: str
    size_or_type: int
    members: tuple[Member, ...] = ()


class Btf:
    """Parsed types: ``types[id]`` (id 0 is void), ``structs[name]`` -> id."""

    def __init__(self, blob: bytes):
        self.types: list[BtfType | None] = [None]
        self.structs: dict[str, int] = {}
        self.funcs: dict[str, int] = {}
        self._parse(blob)

    def _parse(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("BTF blob too short")
        magic = struct.unpack_from("<H", blob, 0)[0]
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x} (big-endian BTF is not supported)")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", blob, 4)
        types_start = hdr_len + type_off
        strs_start = hdr_len + str_off
        if types_start + type_len > len(blob) or strs_start + str_len > len(blob):
            raise BtfError("BTF sections exceed the blob")
        strings = blob[strs_start: strs_start + str_len]

        def name_at(off: int) -> str:
            if off >= len(strings):
                raise BtfError(f"string offset {off} out of range")
            end = strings.find(b"\0", off)
            return strings[off: end if end >= 0 else len(strings)].decode("utf-8", "replace")

        pos, end = types_start, types_start + type_len
        while pos < end:
            if pos + 12 > end:
                raise BtfError("truncated type record")
            name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
            pos += 12
            vlen = info & 0xFFFF
            kind = (info >> 24) & 0x1F
            kind_flag = info >> 31
            if kind not in _EXTRA:
                raise BtfError(f"unknown BTF kind {kind}")
            fixed, per = _EXTRA[kind]
            members: tuple[Member, ...] = ()
            if kind in (KIND_STRUCT, KIND_UNION):
                ms = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", blob, pos + 12 * i)
                    if kind_flag:   # bitfield size in the top 8 bits, bit offset below
                        ms.append(Member(name_at(m_name), m_type, m_off & 0xFFFFFF, m_off >> 24))
                    else:
                        ms.append(Member(name_at(m_name), m_type, m_off, 0))
                members = tuple(ms)
            pos += fixed + per * vlen
            t = BtfType(kind, name_at(name_off), size_or_type, members)
            self.types.append(t)
            if kind == KIND_STRUCT and t.name and t.name not in self.structs:
                self.structs[t.name] = len(self.types) - 1
            elif kind == KIND_FUNC and t.name:
                self.funcs.setdefault(t.name, len(self.types) - 1)

    def _resolve(self, type_id: int) -> BtfType | None:
        for _ in range(32):   # modifier chains are short; bound against loops
            t = self.types[type_id] if 0 < type_id < len(self.types) else None
            if t is None or t.kind not in _MODIFIERS:
                return t
            type_id = t.size_or_type
        return None

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``struct struct_name``, looking into
        anonymous struct/union members (mm_struct keeps its fields in one).
        A dotted member ("f_path.dentry") goes into named nested members."""
        sid = self.structs.get(struct_name)
        if sid is None:
            raise BtfError(f"struct {struct_name} not in BTF")
        bits: int | None = 0
        type_id = sid
        for part in member.split("."):
            found = self._find_member(type_id, part, 0)
            if found is None:
                bits = None
                break
            assert bits is not None
            bits += found[0]
            type_id = found[1]
        if bits is None:
            raise BtfError(f"{struct_name}.{member} not in BTF")
        if bits % 8:
            raise BtfError(f"{struct_name}.{member} is a bitfield")
        return bits // 8

    def _find(self, type_id: int, member: str, base: int, depth: int = 0) -> int | None:
        found = self._find_member(type_id, member, base, depth)
        return found[0] if found else None

    def _find_member(self, type_id: int, member: str, base: int, depth: int = 0) -> tuple[int, int] | None:
        """(bit offset, type id) of ``member``, looking into anonymous members."""
        t = self._resolve(type_id)
        if t is None or t.kind not in (KIND_STRUCT, KIND_UNION) or depth > 8:
            return None
        for m in t.members:
            if m.name == member:
                return base + m.bit_offset, m.type_id
        for m in t.members:
            if not m.name:
                found = self._find_member(m.type_id, member, base + m.bit_offset, depth + 1)
                if found is not None:
                    return found
        return None


# Offsets the probes need: macro name -> (struct, candidate member names)
NEEDED: dict[str, tuple[str, tuple[str, ...]]] = {
    "PC_OFF_TASK_PID": ("task_struct", ("pid",)),
    "PC_OFF_TASK_TGID": ("task_struct", ("tgid",)),
    "PC_OFF_TASK_REAL_PARENT": ("task_struct", ("real_parent",)),
    "PC_OFF_TASK_GROUP_LEADER": ("task_struct", ("group_leader",)),
    "PC_OFF_TASK_START_BOOTTIME": ("task_struct", ("start_boottime", "real_start_time")),
    "PC_OFF_TASK_MM": ("task_struct", ("mm",)),
    "PC_OFF_TASK_EXIT_CODE": ("task_struct", ("exit_code",)),
    "PC_OFF_MM_ARG_START": ("mm_struct", ("arg_start",)),
    "PC_OFF_MM_ARG_END": ("mm_struct", ("arg_end",)),
    "PC_OFF_MM_START_STACK": ("mm_struct", ("start_stack",)),
    # issue 12: stdio descriptors of a new program (ebpf/stdio.c)
    "PC_OFF_TASK_FILES": ("task_struct", ("files",)),
    "PC_OFF_FILES_FDT": ("files_struct", ("fdt",)),
    "PC_OFF_FDTABLE_FD": ("fdtable", ("fd",)),
    "PC_OFF_FILE_INODE": ("file", ("f_inode",)),
    "PC_OFF_FILE_PRIVATE_DATA": ("file", ("private_data",)),
    "PC_OFF_INODE_MODE": ("inode", ("i_mode",)),
    "PC_OFF_SOCKET_SK": ("socket", ("sk",)),
    "PC_OFF_SKC_FAMILY": ("sock_common", ("skc_family",)),
    "PC_OFF_SKC_DADDR": ("sock_common", ("skc_daddr",)),
    "PC_OFF_SKC_DPORT": ("sock_common", ("skc_dport",)),
    "PC_OFF_SKC_V6_DADDR": ("sock_common", ("skc_v6_daddr",)),
    # issue 10: the cgroup a child is born into (clone3 CLONE_INTO_CGROUP, ebpf/exec.c)
    "PC_OFF_TASK_CGROUPS": ("task_struct", ("cgroups",)),
    "PC_OFF_CSS_SET_DFL_CGRP": ("css_set", ("dfl_cgrp",)),
    "PC_OFF_CGROUP_KN": ("cgroup", ("kn",)),
    "PC_OFF_CGROUP_SELF": ("cgroup", ("self",)),
    "PC_OFF_CSS_PARENT": ("cgroup_subsys_state", ("parent",)),
    "PC_OFF_KN_ID": ("kernfs_node", ("id",)),
    "PC_OFF_KN_NAME": ("kernfs_node", ("name",)),
    # a relative unix socket path names a file in the caller's working directory (ebpf/local.c)
    "PC_OFF_TASK_FS": ("task_struct", ("fs",)),
    "PC_OFF_FS_PWD_DENTRY": ("fs_struct", ("pwd.dentry",)),
}


# Offsets of the exec file checks (issue 11: ebpf/exe.bpf.h); all or none:
# the loader defines PC_HAVE_FILE_OFFSETS only when every one was found.
FILE_NEEDED: dict[str, tuple[str, tuple[str, ...]]] = {
    "PC_OFF_MM_EXE_FILE": ("mm_struct", ("exe_file",)),
    "PC_OFF_FILE_DENTRY": ("file", ("f_path.dentry",)),
    "PC_OFF_FILE_INODE": ("file", ("f_inode",)),
    "PC_OFF_DENTRY_PARENT": ("dentry", ("d_parent",)),
    "PC_OFF_DENTRY_INODE": ("dentry", ("d_inode",)),
    "PC_OFF_DENTRY_NAME_LEN": ("dentry", ("d_name.len",)),
    "PC_OFF_DENTRY_NAME_PTR": ("dentry", ("d_name.name",)),
    "PC_OFF_DENTRY_ALIAS": ("dentry", ("d_u.d_alias", "d_alias")),
    "PC_OFF_INODE_DENTRY": ("inode", ("i_dentry",)),
    "PC_OFF_INODE_NLINK": ("inode", ("__i_nlink", "i_nlink")),
    "PC_OFF_INODE_UID": ("inode", ("i_uid",)),
    "PC_OFF_INODE_MODE": ("inode", ("i_mode",)),
    "PC_OFF_INODE_INO": ("inode", ("i_ino",)),
    "PC_OFF_INODE_SB": ("inode", ("i_sb",)),
    "PC_OFF_INODE_MTIME": ("inode", ("i_mtime_sec", "__i_mtime", "i_mtime")),
    "PC_OFF_INODE_CTIME": ("inode", ("i_ctime_sec", "__i_ctime.tv_sec", "i_ctime.tv_sec")),   # the allow cache
    "PC_OFF_INODE_CTIME_NSEC": ("inode", ("i_ctime_nsec", "__i_ctime.tv_nsec", "i_ctime.tv_nsec")),
    "PC_OFF_SB_DEV": ("super_block", ("s_dev",)),
    "PC_OFF_TASK_FILES": ("task_struct", ("files",)),
    "PC_OFF_FILES_FDT": ("files_struct", ("fdt",)),
    "PC_OFF_FDT_FD": ("fdtable", ("fd",)),
    "PC_OFF_FDT_MAX_FDS": ("fdtable", ("max_fds",)),
    "PC_OFF_TASK_PERSONALITY": ("task_struct", ("personality",)),   # READ_IMPLIES_EXEC (exec_map.c)
    # a #! script under exec.trusted (ebpf/exec.c, sched_prepare_exec)
    "PC_OFF_BPRM_FILENAME": ("linux_binprm", ("filename",)),
    "PC_OFF_BPRM_INTERP": ("linux_binprm", ("interp",)),
}


def file_offsets(btf: Btf) -> dict[str, int]:
    """Every offset in FILE_NEEDED, or {} when one is missing."""
    try:
        return _offsets(btf, FILE_NEEDED)
    except BtfError:
        return {}


def probe_offsets(btf: Btf) -> dict[str, int]:
    """Every offset in NEEDED; raises BtfError naming the first one missing."""
    return _offsets(btf, NEEDED)


def _offsets(btf: Btf, needed: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for macro, (sname, candidates) in needed.items():
        last: BtfError | None = None
        for cand in candidates:
            try:
                out[macro] = btf.member_offset(sname, cand)
                break
            except BtfError as e:
                last = e
        else:
            raise last or BtfError(f"{sname}: none of {candidates}")
    return out


@functools.lru_cache(maxsize=1)
def kernel_btf(path: str = VMLINUX_BTF) -> Btf:
    """The running kernel's BTF, parsed once per process."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise BtfError(f"cannot read {path}: {e.strerror}") from None
    return Btf(blob)


CACHE_DIR = "/var/cache/pycontain"


def _cache_key(path: str) -> str:
    st = os.stat(path)
    # what is looked up too: a cache written by a build that needed other members is stale
    wanted = sorted(NEEDED.items()) + sorted(FILE_NEEDED.items())
    return f"{os.uname().release}:{st.st_size}:{st.st_mtime_ns}:{wanted}"


@functools.lru_cache(maxsize=1)
def kernel_offsets(path: str = VMLINUX_BTF, cache_dir: str | None = CACHE_DIR) -> dict[str, int]:
    """The offsets for the running kernel: parsed once per process, and cached
    on disk per kernel (parsing vmlinux BTF costs ~0.35 s of start-up)."""
    return _cached("btf-offsets.json", path, cache_dir, probe_offsets)


@functools.lru_cache(maxsize=1)
def kernel_file_offsets(path: str = VMLINUX_BTF, cache_dir: str | None = CACHE_DIR) -> dict[str, int]:
    """FILE_NEEDED for the running kernel ({} if one is missing), cached on
    disk like kernel_offsets."""
    return _cached("btf-file-offsets.json", path, cache_dir, file_offsets)


def _cached(name: str, path: str, cache_dir: str | None, compute) -> dict[str, int]:
    """compute(kernel BTF), or what a cache file written for this kernel (and
    this build's needs: _cache_key) says it was."""
    import json
    cache = os.path.join(cache_dir, name) if cache_dir else None
    key = _cache_key(path)
    if cache:
        try:
            with open(cache) as fh:
                saved = json.load(fh)
            if saved.get("key") == key and isinstance(saved.get("offsets"), dict):
                return {str(k): int(v) for k, v in saved["offsets"].items()}
        except (OSError, ValueError):
            pass
    offsets = compute(kernel_btf(path))
    _save(cache, key, offsets)
    return offsets


def _save(cache: str | None, key: str, offsets: dict[str, int]) -> None:
    import json
    if cache:
        try:
            os.makedirs(os.path.dirname(cache), mode=0o755, exist_ok=True)
            tmp = f"{cache}.{os.getpid()}"
            with open(tmp, "w") as fh:
                json.dump({"key": key, "offsets": offsets}, fh)
            os.replace(tmp, cache)
        except OSError:
            pass
