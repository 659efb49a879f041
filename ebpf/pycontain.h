/* SPDX-License-Identifier: Apache-2.0
 * pycontain: the one shared header between the kernel programs and the
 * Python controller. Every record starts with struct pc_header, whose first
 * byte is the event type (as Tetragon does), so user space can dispatch on
 * one byte. pycontain/core/events.py mirrors these structs field by field;
 * tests/unit/test_layout.py compiles this header with the host C compiler
 * and checks sizes and offsets against the Python mirror.
 *
 * Rules: fixed-size, naturally aligned, explicit padding, no pointers.
 * Strings are NUL-terminated or length-prefixed and always bounded.
 */
#ifndef PYCONTAIN_H
#define PYCONTAIN_H

#ifndef __BCC__
/* Host C compiler (layout test): give the BPF integer types. */
#include <stdint.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef int32_t s32;
typedef int64_t s64;
typedef uint64_t u64;
#endif

#define PC_COMM_LEN 16
#define PC_FILENAME_LEN 256
#define PC_ARGS_LEN 1024        /* argv bytes kept, NUL separated */
#define PC_MAX_ARGS 64          /* argv entries read */
#define PC_PAYLOAD_LEN 64       /* stratum payload snippet */
#define PC_NAME_LEN 64          /* exec basename key */
#define PC_PATTERN_LEN 32       /* exec substring pattern */
#define PC_MAX_PATTERNS 64       /* issue 11: prefix globs and hold filters need room */
#define PC_MAX_LEVELS 32        /* cgroup depth checked for tracked ancestors */
#define PC_CGPATH_LEN 256       /* cgroup v2 path kept (issue 10: birth, boundary) */
#define PC_BIRTH_STATES 128     /* birth selector automaton states (ebpf/boundary.c) */
#define PC_BIRTH_CLASSES 64     /* its byte classes */
#define PC_BIRTH_AGENT_BASE 0x80000000u /* kernel-born agent ids: base | (cgroup id & 0x7fffffff) */
#define PC_EXE_NAME_LEN 256     /* a dentry name is at most NAME_MAX (255) bytes: read whole */

enum pc_event_type {
	PC_EV_EXEC = 1,
	PC_EV_FORK = 2,
	PC_EV_EXIT = 3,
	PC_EV_CONNECT = 4,   /* TCP/UDP connect, cgroup connect4/6 */
	PC_EV_SEND = 5,      /* UDP sendmsg with an address, cgroup sendmsg4/6 */
	PC_EV_SOCKET = 6,    /* socket creation */
	PC_EV_TCP_STATE = 7, /* an agent TCP connection came up or ended (sock_ops, connect.c) */
	PC_EV_STRATUM = 8,   /* mining JSON-RPC seen in egress payload */
	PC_EV_CGROUP_BIRTH = 9,  /* a new cgroup matched a selector: marked an agent in the kernel */
	PC_EV_BOUNDARY = 10,     /* an agent task moved out of its agent's cgroup */
	PC_EV_UNIX = 11,         /* a unix connect/sendmsg refused: not the agent's own socket, not listed */
	PC_EV_PACKET = 15,   /* issue 12: a packet denied by cgroup_skb egress (struct pc_net) */
	PC_EV_EXEC_MAP = 12, /* issue 11: a file mapped executable (mmap PROT_EXEC) judged like an exec */
	PC_EV_STDIO_SOCKET = 16, /* issue 12: exec with stdin/out/err a socket to a remote peer (struct pc_net) */
};

enum pc_verdict {
	PC_ALLOW = 0,
	PC_DENY = 1,       /* enforced in the kernel: killed / EPERM / dropped */
	PC_WOULD_DENY = 2, /* monitor mode: a deny rule matched, nothing enforced */
};

enum pc_flags {
	PC_F_ARGS_TRUNCATED = 1 << 0,
	PC_F_FILENAME_TRUNCATED = 1 << 1,
	PC_F_V4_MAPPED = 1 << 2,   /* IPv6 socket, IPv4-mapped destination */
	PC_F_KILLED = 1 << 3,      /* bpf_send_signal(SIGKILL) was issued */
	PC_F_THREAD = 1 << 4,      /* fork/exit of a thread, not a process */
	PC_F_OTHER_MOVER = 1 << 5, /* boundary: moved by another task; user space must kill it */
	PC_F_SOURCE_ROUTED = 1 << 9, /* issue 12: IPv4 source route / IPv6 routing header */
	PC_F_LOOPBACK = 1 << 10,   /* issue 12: the destination was judged as loopback */
	/* issue 11: bits 6-8 */
	PC_F_HELD = 1 << 6,        /* exec stopped (SIGSTOP) until user space decides */
	PC_F_FILELESS = 1 << 7,    /* the file has no name on any filesystem (memfd, deleted, O_TMPFILE) */
	PC_F_UNTRUSTED = 1 << 8,   /* exec.trusted is on and the file fails it */
	PC_F_SSH = 1 << 11,        /* issue 12: the stream opened with an SSH identification string */
	PC_F_SCRIPT = 1 << 12,     /* issue 11: a #! script (binfmt rewrote the interpreter) under exec.trusted */
};

struct pc_header {
	u8 type;          /* enum pc_event_type: first byte, always */
	u8 verdict;       /* enum pc_verdict */
	u16 flags;        /* enum pc_flags */
	u32 rule_id;      /* kernel rule that matched, 0 = none */
	u32 pid;          /* tgid, host pid namespace */
	u32 tid;
	u32 ppid;         /* parent tgid */
	u32 uid;
	u32 agent_id;     /* value of pc_agents for the tracked ancestor */
	u32 _pad0;
	u64 ts_ns;        /* bpf_ktime_get_boot_ns() */
	u64 start_ns;     /* process start (boot ns); with pid, the process key */
	u64 cgroup_id;    /* cgroup v2 id of the task */
	char comm[PC_COMM_LEN];
};

/* issue 11: the file the kernel actually runs, read from its struct file
 * (never from the name the caller passed). */
struct pc_exe {
	u64 dev;               /* st_dev of the file, kernel encoding (major << 20 | minor) */
	u64 ino;
	s64 mtime_sec;
	u32 nlink;             /* 0: deleted / O_TMPFILE */
	u32 uid;               /* owner */
	u32 mode;
	u32 name_len;          /* length of the dentry name */
	char name[PC_EXE_NAME_LEN]; /* the file's own dentry name (links resolved), whole */
};

/* Rule ids the kernel uses for issue 11's checks (above any policy rule id;
 * the automaton packs ids in 16 bits). PC_RULE_HOLD marks a name or pattern
 * whose verdict needs user space: the exec is held, not denied. */
#define PC_RULE_HOLD 0xFFFF
#define PC_RULE_FILELESS 0xFFFE
#define PC_RULE_UNTRUSTED 0xFFFD

/* Queued only up to the args used (pc_exec_size): argv last, so a routine
 * exec takes ~0.7 KB of the ring instead of 1.7 KB, and a burst of agent
 * execs fits 2.4 times as many records (issue 14: "keep exec records lean"). */
struct pc_exec {
	struct pc_header h;
	u32 argc;              /* real argc, may exceed what was kept */
	u16 filename_len;
	u16 args_len;          /* bytes used in args */
	struct pc_exe exe;     /* issue 11: mm->exe_file, the ELF that runs (interpreter of a #! script) */
	char filename[PC_FILENAME_LEN];
	char args[PC_ARGS_LEN];  /* last: only args_len bytes of it are queued */
};

/* issue 11: mmap(PROT_EXEC) of a file by an agent (how ld.so runs a program) */
struct pc_exec_map {
	struct pc_header h;
	u32 prot;
	u32 fd;                /* the mmap's fd, or one of PC_MAP_CALL_* below */
	struct pc_exe exe;
};

/* pc_exec_map.fd when the record is not an mmap of a file descriptor: the
 * call that made a tracked mapping of a non-executable file executable
 * (exec_map.c); exe is then the file the range maps. */
#define PC_MAP_CALL_MPROTECT 0xFFFFFFFF   /* mprotect / pkey_mprotect(PROT_EXEC) over the range */
#define PC_MAP_CALL_MREMAP 0xFFFFFFFE     /* mremap of the range (it would move out of sight) */
#define PC_MAP_CALL_UNTRACKED 0xFFFFFFFD  /* mprotect(PROT_EXEC) after a mapping found no tracking slot */

struct pc_fork {
	struct pc_header h;    /* h.pid = parent tgid */
	u32 child_pid;
	u32 _pad0;
};

struct pc_exit {
	struct pc_header h;
	s32 exit_code;
	u32 _pad0;
};

/* connect / send: addresses in network byte order, ports in host order. */
struct pc_net {
	struct pc_header h;
	u8 family;             /* AF_INET=2, AF_INET6=10 */
	u8 protocol;           /* IPPROTO_TCP=6, IPPROTO_UDP=17 */
	u16 dport;
	u16 sport;
	u16 _pad0;
	u8 daddr[16];          /* IPv4 in the first 4 bytes */
	u8 saddr[16];
};

struct pc_socket {
	struct pc_header h;
	u32 family;
	u32 type;
	u32 protocol;
	u32 _pad0;
};

struct pc_tcp_state {
	struct pc_header h;
	u8 family;
	u8 oldstate;
	u8 newstate;
	u8 _pad0;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
};

struct pc_stratum {
	struct pc_net n;
	u16 payload_len;
	u16 _pad0[3];
	char payload[PC_PAYLOAD_LEN];
};

/* issue 10: a cgroup the birth program marked as an agent */
struct pc_cgroup_birth {
	struct pc_header h;    /* h.agent_id = the new agent's id; h.cgroup_id = the creator's */
	u64 cgroup_id;         /* the new cgroup's v2 id */
	u32 selector;          /* index in the policy's agents: list */
	u32 level;
	u16 path_len;
	u16 _pad0[3];
	char path[PC_CGPATH_LEN];  /* relative to the cgroup2 root, leading '/' */
};

/* issue 10: an agent task moved to a cgroup outside its agent */
struct pc_boundary {
	struct pc_header h;    /* current = the mover; h.agent_id = the moved task's agent */
	u64 dst_cgroup_id;
	u32 moved_pid;
	u32 dst_agent;         /* agent of the destination, 0 = none */
	u16 path_len;
	u16 _pad0[3];
	char path[PC_CGPATH_LEN];  /* destination, relative to the cgroup2 root */
};

/* issue 10: a unix connect/sendmsg the local-services guard refused */
#define PC_UNIX_NAME_LEN 108
struct pc_unix {
	struct pc_header h;    /* rule_id: network.local_services */
	u32 len;               /* abstract names: their length (path[0] == 0); paths: 0 */
	u32 _pad0;
	char path[PC_UNIX_NAME_LEN];   /* as connect() named it; empty: could not be read */
	u32 _pad1;
};

/* key of pc_cg_paths: a cgroup v2 path, NUL padded */
struct pc_cg_path {
	char path[PC_CGPATH_LEN];
};

/* ---- maps written by the controller ------------------------------------ */

enum pc_mode { PC_MODE_ENFORCE = 0, PC_MODE_MONITOR = 1 };

enum pc_config_flags {
	PC_CFG_NET_DEFAULT_DENY = 1 << 0, /* egress allowed only if in allow tries */
	PC_CFG_DENY_RAW = 1 << 1,         /* SOCK_RAW in AF_INET/AF_INET6 */
	PC_CFG_DENY_PACKET = 1 << 2,      /* AF_PACKET */
	PC_CFG_DETECT_STRATUM = 1 << 3,
	PC_CFG_TRACE_ALL = 1 << 4,        /* emit exec/fork/exit for every process */
	PC_CFG_BIRTH = 1 << 5,            /* mark new cgroups matching the birth automaton (issue 10) */
	PC_CFG_LOCAL_GUARD = 1 << 6,      /* loopback and unix destinations: own, listed or resolver only (issue 10) */
	PC_CFG_DENY_FAMILY = 1 << 7,      /* kill socket() of a family no hook judges (socket.c) */
	/* issue 11: bits 8-10 */
	PC_CFG_EXEC_HOLD_ALL = 1 << 8,    /* every agent exec waits for user space (allow-list, path globs) */
	PC_CFG_EXEC_FILELESS_DENY = 1 << 9, /* kill fileless execs (exec.fileless: deny) */
	PC_CFG_EXEC_TRUSTED = 1 << 10,    /* kill execs of files exec.trusted does not admit */
	PC_CFG_SCAN = 1 << 11,            /* issue 12: scan detection (pc_scan_limits) */
	PC_CFG_SSH = 1 << 12,             /* issue 12: SSH sessions only to pc_ssh_allow4/6 */
	PC_CFG_INBOUND_LOOPBACK = 1 << 13, /* issue 12: agent listeners reachable from loopback only */
	PC_CFG_INBOUND_DENY = 1 << 14,    /* issue 12: agent listeners reachable from nowhere */
	PC_CFG_STDIO_SOCKET = 1 << 15,    /* issue 12: kill an exec whose stdio is a remote socket */
};

struct pc_config {
	u32 mode;            /* enum pc_mode */
	u32 flags;           /* enum pc_config_flags */
	u32 tracked_levels;  /* bit n set: some agent cgroup is at level n */
	u32 _pad0;
	u32 birth_levels;    /* issue 10: levels the kernel marked agents at (set by boundary.c) */
	u32 _pad1;
};

struct pc_port_rule {
	u32 tcp_rule;        /* rule id denying TCP to this port, 0 = none */
	u32 udp_rule;
};

struct pc_lpm4 {
	u32 prefixlen;
	u8 addr[4];
};

struct pc_lpm6 {
	u32 prefixlen;
	u8 addr[16];
};

struct pc_name_key {
	char name[PC_NAME_LEN];  /* lower-cased basename, NUL padded */
};

/* issue 11: a directory exec.trusted admits, by identity */
struct pc_dev_ino {
	u64 dev;                 /* kernel encoding */
	u64 ino;
};

enum pc_pattern_where { PC_PAT_BASENAME = 0, PC_PAT_ARGS = 1 };

struct pc_pattern {
	u32 rule_id;             /* 0 = empty slot */
	u16 len;
	u8 where;                /* enum pc_pattern_where */
	u8 _pad0;
	char pat[PC_PATTERN_LEN]; /* lower-case; matched case-insensitively */
};

#endif /* PYCONTAIN_H */
