/* SPDX-License-Identifier: Apache-2.0
 * The exec verdict shared by the exec hooks (exec.c: sched_process_exec;
 * exec_map.c: mmap PROT_EXEC and the hold gate), BCC C (issue 11).
 *
 * A program is judged by the file the kernel runs, read from its struct
 * file: the file's own dentry name (a symlink resolves to its target's
 * dentry; fexecve / execveat(AT_EMPTY_PATH) / a path longer than any buffer
 * all end at the same dentry, whose name is at most 255 bytes and read
 * whole), the names of its other hard links still in the dentry cache, its
 * device and inode, owner, mode and mtime. Names are matched through the
 * exact-name hash and the Aho-Corasick automaton the loader compiles (see
 * exec.c); a name is fed to the automaton after a '/' so that prefix globs
 * ("xmrig-*" = pattern "/xmrig-") are exact in the kernel.
 *
 * Kernel struct layouts come only from BTF offsets (-D PC_OFF_*), never from
 * headers; without PC_HAVE_FILE_OFFSETS the file checks compile to nothing.
 */
#ifndef PYCONTAIN_EXE_BPF_H
#define PYCONTAIN_EXE_BPF_H

#include "common.bpf.h"

#define PC_DFA_STATES 2080     /* >= 2 roots + PC_MAX_PATTERNS * PC_PATTERN_LEN */
#define PC_DFA_CLASSES 128     /* byte classes; 0 = byte in no pattern */
#define PC_DFA_MATCH_SHIFT 16  /* entry = next state | rule id << 16 */
#ifndef PC_MAX_ALIASES
#define PC_MAX_ALIASES 4       /* other hard links (cached dentries) judged per file */
#endif
#define PC_TRUSTED_DEPTH 16    /* directory levels searched for an exec.trusted directory */
#define PC_SIGSTOP 19

#define PC_EXEC_NAMES_MAX 1024  /* mirrored in core/capacity.py (issue 13) */
BPF_HASH(pc_exec_names, struct pc_name_key, u32, PC_EXEC_NAMES_MAX);          /* basename -> rule id */
BPF_ARRAY(pc_exec_patterns, struct pc_pattern, PC_MAX_PATTERNS);  /* source of the automaton */
/* pc_exec_dfa_ctl slots: the active bank, then per bank (+ bank) the args
 * root state, the basename pattern count and the args pattern count.
 * Basename root is state 0. */
#define PC_CTL_BANK 0
#define PC_CTL_ARGS_ROOT 1
#define PC_CTL_BASENAME_COUNT 3
#define PC_CTL_ARGS_COUNT 5
#define PC_CTL_HOLD_ARGS_MIN 7  /* hold an argv with an argument of at least this many bytes (0: never) */
BPF_ARRAY(pc_exec_dfa_ctl, u32, 8);
BPF_ARRAY(pc_exec_dfa_class, u32, 2 * 256);
BPF_ARRAY(pc_exec_dfa, u32, 2 * PC_DFA_STATES * PC_DFA_CLASSES);
/* The name key lives in a map value, not on the stack: the verifier does
 * not track bytes stored in map values, so the case-folding branches do not
 * multiply its states (on the stack they did, past the 1M-insn limit). */
BPF_PERCPU_ARRAY(pc_exec_key, struct pc_name_key, 1);
BPF_PERCPU_ARRAY(pc_exe_alias, struct pc_exe, 1);   /* a hard link's name, judged */
/* "a hold pattern matched", kept in a map value for the same reason: on the
 * stack its two values would double the verifier's states at every call */
BPF_PERCPU_ARRAY(pc_exec_hold, u32, 1);
BPF_HASH(pc_exec_trusted_dirs, struct pc_dev_ino, u32, 64);   /* exec.trusted directories */
BPF_HASH(pc_exec_since, u32, s64, 4096);            /* agent id -> wall-clock start, s */
BPF_HASH(pc_exec_held, u32, u64, 8192);             /* held tgid -> boot ns of the hold */
/* in a pc_exec_held value: held at birth (a child born outside its agent's
 * cgroup, or of a held process, exec.c), killed on its way back to user
 * space (exec_map.c) */
#define PC_HELD_AT_BIRTH (1ull << 63)
/* in a pc_exec_held value: the held exec's own execve has returned (it is
 * stopping on its SIGSTOP); any later return to user space is a process
 * continued before the controller released it: the gate kills it */
#define PC_HELD_RETURNED (1ull << 62)
/* [0] holds made (kernel, atomic), [1] holds settled (user space): while
 * they differ the syscall gate (exec_map.c) looks up the current task */
BPF_ARRAY(pc_exec_holds, u64, 2);


/* ---- the automaton ------------------------------------------------------- */

static __always_inline u32 pc_ctl(u32 i)
{
	u32 *v = pc_exec_dfa_ctl.lookup(&i);
	return v ? *v : 0;
}

#define PC_DFA_FAIL 0xFFFFFFFF

/* One automaton step: the entry for (state, byte), PC_DFA_FAIL if a lookup
 * fails (callers stop scanning then: a path that goes on with a made-up
 * state multiplies the verifier's states). */
static __always_inline u32 pc_dfa_step(u32 bank, u32 state, u8 byte)
{
	u32 cidx = bank * 256 + byte;
	u32 *cls = pc_exec_dfa_class.lookup(&cidx);
	if (!cls)
		return PC_DFA_FAIL;
	u32 c = *cls;
	if (c >= PC_DFA_CLASSES || state >= PC_DFA_STATES)
		return PC_DFA_FAIL;
	u32 tidx = (bank * PC_DFA_STATES + state) * PC_DFA_CLASSES + c;
	u32 *next = pc_exec_dfa.lookup(&tidx);
	return next ? *next : PC_DFA_FAIL;
}

/* Feed bytes to the automaton from state `root` (after a leading '/' when
 * `lead`); returns the rule id of the first deny pattern found, 0 if none.
 * A hold pattern (PC_RULE_HOLD) sets *hold and the scan goes on, so a deny
 * pattern later in the bytes still wins. `n` is bounded by the caller. */
static __always_inline u32 pc_dfa_scan(const char *buf, u32 n, u32 max, u32 bank, u32 root,
				       int lead, u32 *hold)
{
	u32 state = root;
	if (lead) {
		u32 first = pc_dfa_step(bank, root, '/');
		if (first == PC_DFA_FAIL)
			return 0;
		state = first & 0xFFFF;
	}
	for (u32 i = 0; i < PC_ARGS_LEN; i++) {
		if (i >= n || i >= max)
			break;
		u32 next = pc_dfa_step(bank, state, (u8)buf[i & (PC_ARGS_LEN - 1)]);
		if (next == PC_DFA_FAIL)
			return 0;
		u32 rule = next >> PC_DFA_MATCH_SHIFT;
		if (rule == PC_RULE_HOLD)
			*hold = 1;
		else if (rule)
			return rule;
		state = next & 0xFFFF;
	}
	return 0;
}

/* Judge one file name (x->name, NUL padded; x->name_len): the exact-name
 * hash on its lower-cased first PC_NAME_LEN-1 bytes (a longer name can equal
 * no entry), then the basename automaton over the whole name. The case-fold
 * loop has a fixed trip count and never compares with the length: each such
 * comparison would narrow the length's range and split the verifier's
 * states at every byte (over its 1M-insn limit). */
/* The lower-cased first PC_NAME_LEN-1 bytes of x->name into key, looked up
 * in the exact-name hash: rule id, or 0 (a hold sets *hold). */
static __always_inline u32 pc_judge_exact(const struct pc_exe *x, struct pc_name_key *key, u32 *hold)
{
	for (u32 j = 0; j < PC_NAME_LEN - 1; j++) {
		char ch = x->name[j];
		if (ch >= 'A' && ch <= 'Z')
			ch += 'a' - 'A';
		key->name[j] = ch;
	}
	key->name[PC_NAME_LEN - 1] = 0;
	u32 *rule = pc_exec_names.lookup(key);
	if (rule && *rule && x->name_len < PC_NAME_LEN) {
		if (*rule == PC_RULE_HOLD)
			*hold = 1;
		else
			return *rule;
	}
	return 0;
}

static __always_inline u32 pc_judge_name(const struct pc_exe *x, struct pc_name_key *key, u32 *hold)
{
	u32 rule = pc_judge_exact(x, key, hold);
	if (rule)
		return rule;
	u32 bank = pc_ctl(PC_CTL_BANK) & 1;
	if (!pc_ctl(PC_CTL_BASENAME_COUNT + bank))
		return 0;
	return pc_dfa_scan(x->name, x->name_len, PC_EXE_NAME_LEN, bank, 0, 1, hold);
}

/* ---- the file ------------------------------------------------------------ */

#ifdef PC_HAVE_FILE_OFFSETS
/* Read the identity of `file` into x; returns its dentry.
 * Relies on: file->f_path.dentry and file->f_inode being set for an open
 * file (exe_file, or a file in the fd table) and d_name being stable while
 * the file holds the dentry (a rename racing the read may give the old or
 * the new name, both of them names of this file). */
static __always_inline const void *pc_read_exe(const void *file, struct pc_exe *x)
{
	const void *dentry = (const void *)pc_read_ptr(file, PC_OFF_FILE_DENTRY);
	const void *inode = (const void *)pc_read_ptr(file, PC_OFF_FILE_INODE);
	const void *sb = (const void *)pc_read_ptr(inode, PC_OFF_INODE_SB);
	x->dev = pc_read_u32(sb, PC_OFF_SB_DEV);
	x->ino = pc_read_ptr(inode, PC_OFF_INODE_INO);
	x->mtime_sec = (s64)pc_read_ptr(inode, PC_OFF_INODE_MTIME);
	x->nlink = pc_read_u32(inode, PC_OFF_INODE_NLINK);
	x->uid = pc_read_u32(inode, PC_OFF_INODE_UID);
	x->mode = pc_read_u32(inode, PC_OFF_INODE_MODE) & 0xFFFF;
	x->name_len = pc_read_u32(dentry, PC_OFF_DENTRY_NAME_LEN);
	const char *name = (const char *)pc_read_ptr(dentry, PC_OFF_DENTRY_NAME_PTR);
	__builtin_memset(x->name, 0, sizeof(x->name));
	if (name)
		bpf_probe_read_kernel_str(x->name, sizeof(x->name), name);
	return dentry;
}

/* A file with no name on any filesystem: deleted or O_TMPFILE (no links),
 * or a pseudo file (memfd, anon inode: its dentry is its own parent, as
 * d_alloc_pseudo makes it). */
static __always_inline int pc_fileless(const void *dentry, const struct pc_exe *x)
{
	return x->nlink == 0 || (dentry && pc_read_ptr(dentry, PC_OFF_DENTRY_PARENT) == (u64)dentry);
}

/* The other hard links of the file: the dentries on inode->i_dentry (each
 * cached name of the inode). A hard link under an innocent name is judged by
 * the denied name it shares an inode with (exact deny names; a hard link of
 * a file matched only by a glob is not seen: docs/kernel.md).
 * Relies on: i_dentry holding every cached alias of the inode, linked
 * through dentry->d_u.d_alias; a name not in the dentry cache is not seen. */
static __always_inline u32 pc_judge_aliases(const void *file, const void *dentry, const struct pc_exe *x,
					    struct pc_name_key *key, u32 *hold)
{
	if (x->nlink < 2)
		return 0;
	int zero = 0;
	struct pc_exe *a = pc_exe_alias.lookup(&zero);
	if (!a)
		return 0;
	const void *inode = (const void *)pc_read_ptr(file, PC_OFF_FILE_INODE);
	u64 node = pc_read_ptr(inode, PC_OFF_INODE_DENTRY);   /* hlist_head.first */
	for (int i = 0; i < PC_MAX_ALIASES; i++) {
		if (!node)
			break;
		const void *alias = (const void *)(node - PC_OFF_DENTRY_ALIAS);
		node = pc_read_ptr((const void *)node, 0);     /* hlist_node.next */
		if (alias == dentry)
			continue;
		a->name_len = pc_read_u32(alias, PC_OFF_DENTRY_NAME_LEN);
		const char *name = (const char *)pc_read_ptr(alias, PC_OFF_DENTRY_NAME_PTR);
		__builtin_memset(a->name, 0, sizeof(a->name));
		if (name)
			bpf_probe_read_kernel_str(a->name, sizeof(a->name), name);
		/* exact names only: an automaton scan per alias is more than the
		 * verifier's budget (a hard link's own name is judged in full) */
		u32 rule = pc_judge_exact(a, key, hold);
		if (rule)
			return rule;
	}
	return 0;
}

/* exec.trusted: owned by root, not writable by group or others, not
 * modified since the agent started, and below a trusted directory (by
 * device and inode, searched up the dentry chain of its filesystem).
 * Relies on: d_parent chains ending at the filesystem root (d_parent == self). */
static __always_inline int pc_trusted(const void *dentry, const struct pc_exe *x, u32 agent)
{
	if (x->uid != 0 || (x->mode & 022))
		return 0;
	s64 *since = pc_exec_since.lookup(&agent);
	if (!since || x->mtime_sec >= *since)
		return 0;
	struct pc_dev_ino k = {};
	k.dev = x->dev;
	const void *d = dentry;
	for (int i = 0; i < PC_TRUSTED_DEPTH; i++) {
		const void *parent = (const void *)pc_read_ptr(d, PC_OFF_DENTRY_PARENT);
		if (!parent || parent == d)
			break;
		d = parent;
		const void *inode = (const void *)pc_read_ptr(d, PC_OFF_DENTRY_INODE);
		k.ino = pc_read_ptr(inode, PC_OFF_INODE_INO);
		if (pc_exec_trusted_dirs.lookup(&k))
			return 1;
	}
	return 0;
}

/* ---- the allow cache of mapped files -------------------------------------
 *
 * Every agent mmap of a file is judged (exec_map.c), and a process maps the
 * same libraries on every exec: a file judged clean (no rule, no flag) is
 * remembered per agent by its inode and judged again only when its inode
 * changed (ctime: rename, link, unlink, chmod, chown; mtime: content), or
 * the policy or an agent's start did (pc_exec_gen, bumped by the loader).
 * ctime is compared to the nanosecond, but filesystems stamp it from the
 * coarse clock (one tick, 1-10 ms): a change within the tick of the
 * judgement is not seen. Only the agent's own changes to its own files fit
 * there, and none of them gains what a fresh judgement would refuse: it
 * chose the names (a name it gave can be the innocent one from the start),
 * cannot touch what exec.trusted trusts, and a file deleted after mapping
 * is as mapped before.
 * Only clean verdicts are cached: a deny or a flag is judged in full every
 * time. A name the dentry cache evicted and reloads later (a hard link's
 * denied alias) is not a ctime change: as for a fresh judgement, such a
 * link is only seen while its name is cached (docs/kernel.md). */
struct pc_allow_key {
	u64 inode;              /* struct inode * (checked against ino: a reused address misses) */
	u32 agent;
	u32 _pad;
};
struct pc_allow {
	u64 ino;
	s64 mtime_sec;
	s64 ctime_sec;
	u32 ctime_nsec;
	u32 gen;
};
BPF_TABLE("lru_hash", struct pc_allow_key, struct pc_allow, pc_exec_allowed, 8192);
BPF_ARRAY(pc_exec_gen, u32, 1);   /* bumped by the loader on every table or agent change */

/* The cache key and the values a hit must match, read from the file now. */
static __always_inline void pc_allow_now(const void *file, u32 agent, struct pc_allow_key *k, struct pc_allow *v)
{
	const void *inode = (const void *)pc_read_ptr(file, PC_OFF_FILE_INODE);
	int zero = 0;
	u32 *gen = pc_exec_gen.lookup(&zero);
	k->inode = (u64)inode;
	k->agent = agent;
	k->_pad = 0;
	v->ino = pc_read_ptr(inode, PC_OFF_INODE_INO);
	v->mtime_sec = (s64)pc_read_ptr(inode, PC_OFF_INODE_MTIME);
	v->ctime_sec = (s64)pc_read_ptr(inode, PC_OFF_INODE_CTIME);
	v->ctime_nsec = pc_read_u32(inode, PC_OFF_INODE_CTIME_NSEC);
	v->gen = gen ? *gen : 0;
}

static __always_inline int pc_allowed_before(struct pc_allow_key *k, const struct pc_allow *v)
{
	struct pc_allow *c = pc_exec_allowed.lookup(k);
	return c && c->ino == v->ino && c->mtime_sec == v->mtime_sec && c->ctime_sec == v->ctime_sec &&
	       c->ctime_nsec == v->ctime_nsec && c->gen == v->gen;
}

/* The verdict on a file about to run: rule id of a deny (fileless, untrusted,
 * a denied name of it or of another hard link), 0 if none; *hold when a
 * hold pattern matched. Sets PC_F_FILELESS / PC_F_UNTRUSTED in *flags. */
static __always_inline u32 pc_judge_file(const void *file, struct pc_exe *x, const struct pc_config *cfg,
					 u32 agent, u16 *flags, struct pc_name_key *key, u32 *hold)
{
	const void *dentry = pc_read_exe(file, x);
	u32 cfl = cfg ? cfg->flags : 0;
	if (pc_fileless(dentry, x)) {
		*flags |= PC_F_FILELESS;
		if (cfl & PC_CFG_EXEC_FILELESS_DENY)
			return PC_RULE_FILELESS;
	}
	if ((cfl & PC_CFG_EXEC_TRUSTED) && !pc_trusted(dentry, x, agent)) {
		*flags |= PC_F_UNTRUSTED;
		return PC_RULE_UNTRUSTED;
	}
	u32 rule = pc_judge_name(x, key, hold);
	if (!rule)
		rule = pc_judge_aliases(file, dentry, x, key, hold);
	return rule;
}
#endif /* PC_HAVE_FILE_OFFSETS */

/* The current process's pc_exec_held value, or 0. While no hold is open
 * (holds made == settled) it costs two array reads and no hash lookup:
 * the gate (exec_map.c) calls it on every system call of every task. */
static __always_inline u64 *pc_current_hold(void)
{
	int zero = 0, one = 1;
	u64 *holds = pc_exec_holds.lookup(&zero);
	u64 *settled = pc_exec_holds.lookup(&one);
	if (!holds || !settled || *holds == *settled)
		return 0;
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	return pc_exec_held.lookup(&pid);
}

/* One more hold made (user space counts the settled ones). */
static __always_inline void pc_count_hold(void)
{
	int zero = 0;
	u64 *holds = pc_exec_holds.lookup(&zero);
	if (holds)
		__sync_fetch_and_add(holds, 1);
}

/* Enter a new child in pc_exec_held, marked as held at birth: the gate
 * (exec_map.c) kills it on its return from clone to user space, before its
 * first instruction; 0 when held. Never released: user space only kills
 * and settles it (the hold timeout does, for one it never heard of). */
static __always_inline int pc_hold_child(u32 tgid)
{
	u64 now = bpf_ktime_get_boot_ns() | PC_HELD_AT_BIRTH;
	if (pc_exec_held.update(&tgid, &now))
		return -1;
	pc_count_hold();
	return 0;
}

/* Hold the current process stopped until user space decides (SIGSTOP acts
 * at the return to user space: no instruction of the new image runs). The
 * pid goes into pc_exec_held first, so the syscall gate kills it if anyone
 * continues it before the controller released it. Returns 0 when held. */
static __always_inline int pc_hold_current(u16 *flags)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	u64 now = bpf_ktime_get_boot_ns();
	if (pc_exec_held.lookup(&pid))
		return -1;   /* still held: continued early and exec'ing again (fail closed) */
	if (pc_exec_held.update(&pid, &now))
		return -1;
	pc_count_hold();
	if (bpf_send_signal(PC_SIGSTOP))
		return -1;
	*flags |= PC_F_HELD;
	return 0;
}

/* ---- mappings of files the agent may not execute -------------------------
 *
 * mprotect(PROT_EXEC) names only an address range; the file behind it is
 * vma->vm_file, which a tracing program cannot reach here (bpf_find_vma's
 * callback is beyond BCC 0.26, the maple tree beyond the verifier). So the
 * file is judged when it is mapped (exec_map.c, sys_enter_mmap, with or
 * without PROT_EXEC), and a mapping of a file that would be denied as an
 * exec is remembered per address space: its range, the struct file and the
 * rule. mprotect(PROT_EXEC) over such a range is then judged like the exec.
 * Keyed by mm (not tgid): CLONE_VM children share it; a fork copies it
 * (exec.c, pc_map_ranges_fork); exit_mmap drops it with the address space.
 */
#if defined(PC_HAVE_FILE_OFFSETS) && defined(PC_HAVE_TP_EXIT_MMAP)
#define PC_HAVE_MAP_RANGES 1
#define PC_MAP_RANGES 64        /* tracked mappings per address space (more: fail closed) */
#define PC_MAP_RANGES_MAX 16384 /* address spaces with a tracked mapping (allocated on use) */
struct pc_map_range {
	u64 start;
	u64 end;                /* 0: free slot */
	u64 file;               /* struct file * the range maps (for the record only) */
	u32 rule;
	u32 flags;
};
struct pc_map_ranges {
	struct pc_map_range r[PC_MAP_RANGES];
	u32 untracked_rule;     /* a denied mapping that found no free slot: its rule */
	u32 _pad;
};
/* mm -> ranges; not preallocated: 2 KiB an entry, and most address spaces never have one */
BPF_F_TABLE("hash", u64, struct pc_map_ranges, pc_map_ranges, PC_MAP_RANGES_MAX, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(pc_map_ranges_zero, struct pc_map_ranges, 1);   /* never written: an empty value */

static __always_inline u64 pc_current_mm(void)
{
	return pc_read_ptr((const void *)bpf_get_current_task(), PC_OFF_TASK_MM);
}

/* A forked child gets a copy of its parent's mappings, so it gets a copy of
 * their ranges. A copy that cannot be stored leaves the child held at birth
 * (the syscall gate kills it at its first return): fail closed. */
static __always_inline void pc_map_ranges_fork(const void *parent, const void *child, u32 child_tgid)
{
	u64 pmm = pc_read_ptr(parent, PC_OFF_TASK_MM);
	u64 cmm = pc_read_ptr(child, PC_OFF_TASK_MM);
	if (!pmm || !cmm || pmm == cmm)
		return;
	struct pc_map_ranges *r = pc_map_ranges.lookup(&pmm);
	if (r && pc_map_ranges.update(&cmm, r))
		pc_hold_child(child_tgid);
}
#endif

#endif /* PYCONTAIN_EXE_BPF_H */
