/* SPDX-License-Identifier: Apache-2.0
 * Executable mappings and the hold gate (BCC C, issue 11).
 *
 * mmap(PROT_EXEC) of a file by an agent is judged like an exec of that file
 * (exe.bpf.h): `ld-linux-x86-64.so.2 ./xmrig` execs the loader, which then
 * maps ./xmrig executable; the mapping of a denied file kills the process
 * before it returns to user space. Records are queued only for a verdict or
 * a flag (fileless, untrusted): every process maps its shared libraries, and
 * those need no record.
 *
 * The hold gate: a process held at exec (exec.c, PC_F_HELD) is stopped
 * until the controller releases it (deletes it from pc_exec_held, then
 * SIGCONT). Anyone else continuing it early (the agent's own `kill -CONT`)
 * gets it killed on its return from its first system call.
 *
 * mprotect(PROT_EXEC) of a file mapping: the file is judged when it is
 * mapped (any prot); a mapping of a file that would be denied as an exec is
 * tracked by range per address space (exe.bpf.h, pc_map_ranges), and an
 * mprotect / pkey_mprotect(PROT_EXEC) over it is judged like that exec: the
 * process is killed on its return from the call, before any instruction of
 * the range runs. mremap of a tracked range kills too (the range would move
 * out of sight). What stays out of reach: the same bytes read() or copied
 * into anonymous memory and made executable, as every JIT does
 * (docs/kernel.md).
 */

#include "exe.bpf.h"

#define PC_PROT_READ 0x1
#define PC_PROT_EXEC 0x4
#define PC_READ_IMPLIES_EXEC 0x0400000
#define PC_MAP_FIXED 0x10
#define PC_MAP_ANONYMOUS 0x20
#define PC_PAGE_MASK 4095ull

BPF_PERCPU_ARRAY(pc_exec_map_scratch, struct pc_exec_map, 1);

#ifdef PC_HAVE_FILE_OFFSETS
/* current->files->fdt->fd[fd], or NULL.
 * Relies on: the fd table being RCU-protected (probe reads fault-tolerant);
 * sys_enter runs before the kernel's own fdget, so another thread may swap
 * the fd in between (dup2): the verdict is on the file the fd named here. */
static __always_inline const void *pc_fd_file(u32 fd)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *files = (const void *)pc_read_ptr(task, PC_OFF_TASK_FILES);
	const void *fdt = (const void *)pc_read_ptr(files, PC_OFF_FILES_FDT);
	if (!fdt || fd >= pc_read_u32(fdt, PC_OFF_FDT_MAX_FDS))
		return 0;
	const void *fds = (const void *)pc_read_ptr(fdt, PC_OFF_FDT_FD);
	if (!fds)
		return 0;
	return (const void *)pc_read_ptr(fds, (u64)fd * 8);
}

/* The protection the kernel will apply to a request for `prot`: under the
 * READ_IMPLIES_EXEC personality (personality(2): any process may set it) a
 * readable mapping is made executable too, by mmap and by mprotect.
 * Relies on: do_mmap / do_mprotect_pkey adding PROT_EXEC to PROT_READ when
 * current->personality has READ_IMPLIES_EXEC (also on a noexec mount for
 * mprotect; mmap skips those: judged as executable here anyway). */
static __always_inline u64 pc_effective_prot(u64 prot)
{
	if ((prot & PC_PROT_READ) &&
	    (pc_read_u32((const void *)bpf_get_current_task(), PC_OFF_TASK_PERSONALITY) & PC_READ_IMPLIES_EXEC))
		prot |= PC_PROT_EXEC;
	return prot;
}

#ifdef PC_HAVE_MAP_RANGES
/* What an mmap or munmap leaves for its return: the range it (un)maps, and
 * for a mapping of a file denied as an exec the file and rule to track.
 * The range is only known (mmap) or only certain (munmap) at the return. */
#define PC_PENDING_MAP 1
#define PC_PENDING_UNMAP 2
struct pc_map_pending {
	u64 start;
	u64 len;
	u64 file;      /* 0: nothing to track, only ranges it replaces to forget */
	u32 rule;
	u16 flags;
	u16 kind;
};
BPF_HASH(pc_map_pending, u32, struct pc_map_pending, 1024);   /* tid -> its call in flight */

static __always_inline u64 pc_page_end(u64 start, u64 len)
{
	return start + ((len + PC_PAGE_MASK) & ~PC_PAGE_MASK);
}

/* The tracked range overlapping [start, end): its slot, or -1. */
static __always_inline int pc_map_overlap(const struct pc_map_ranges *rs, u64 start, u64 end)
{
	for (int i = 0; i < PC_MAP_RANGES; i++) {
		const struct pc_map_range *r = &rs->r[i];
		if (r->end && r->start < end && start < r->end)
			return i;
	}
	return -1;
}

/* Forget the ranges [start, end) covers whole (unmapped or replaced); a
 * range only partly covered still maps part of its file and stays. */
static __always_inline void pc_map_forget(struct pc_map_ranges *rs, u64 start, u64 end)
{
	for (int i = 0; i < PC_MAP_RANGES; i++) {
		struct pc_map_range *r = &rs->r[i];
		if (r->end && start <= r->start && r->end <= end) {
			r->end = 0;    /* unpublished first, then the claim released */
			r->file = 0;
		}
	}
}

/* Track [start, start+len) as mapping p->file; 0 when tracked or counted
 * (a full table sets untracked_rule: every later mprotect(PROT_EXEC) of the
 * address space is then refused), -1 when not even that could be stored. */
static __always_inline int pc_map_track(struct pc_map_ranges *rs, u64 mm, const struct pc_map_pending *p, u64 start)
{
	if (!rs) {
		int zero = 0;
		struct pc_map_ranges *empty = pc_map_ranges_zero.lookup(&zero);
		if (!empty)
			return -1;
		pc_map_ranges.insert(&mm, empty);   /* NOEXIST: another thread's entry stays */
		rs = pc_map_ranges.lookup(&mm);
		if (!rs)
			return -1;
	}
	u64 end = pc_page_end(start, p->len);
	for (int i = 0; i < PC_MAP_RANGES; i++) {
		struct pc_map_range *r = &rs->r[i];
		/* threads of one address space map concurrently: a slot is
		 * claimed by its file (compare-and-swap), and published by its
		 * end (a fully ordered CAS, last: readers skip end == 0) */
		if (r->file || r->end || __sync_val_compare_and_swap(&r->file, 0, p->file) != 0)
			continue;
		r->start = start;
		r->rule = p->rule;
		r->flags = p->flags;
		__sync_val_compare_and_swap(&r->end, 0, end);
		return 0;
	}
	if (!rs->untracked_rule)
		rs->untracked_rule = p->rule;
	return 0;
}

/* Record (and kill, unless in monitor mode) a tracked range made
 * executable or moved: `call` is PC_MAP_CALL_*, exe read from the file the
 * range maps (still open: the mapping holds it). */
static __always_inline void pc_map_deny(struct pc_config *cfg, u32 agent, u32 rule, u16 flags, u64 file,
					u32 prot, u32 call)
{
	int zero = 0;
	struct pc_exec_map *m = pc_exec_map_scratch.lookup(&zero);
	if (!m) {
		bpf_send_signal(PC_SIGKILL);
		return;
	}
	pc_fill_header(&m->h, PC_EV_EXEC_MAP, agent);
	m->prot = prot;
	m->fd = call;
	__builtin_memset(&m->exe, 0, sizeof(m->exe));
	if (file)
		pc_read_exe((const void *)file, &m->exe);
	m->h.flags |= flags;
	m->h.rule_id = rule;
	m->h.verdict = pc_deny_verdict_kill(cfg, &m->h.flags);
	if (pc_events.ringbuf_output(m, sizeof(*m), pc_wake_flags(&m->h)))
		pc_count_lost();
}

/* Leave what the call's return must do for this thread; a full table
 * refuses the call's outcome (fail closed: the process is killed). */
static __always_inline void pc_map_leave(u64 start, u64 len, u64 file, u32 rule, u16 flags, u16 kind)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pc_map_pending p = {.start = start, .len = len, .file = file, .rule = rule,
				   .flags = flags, .kind = kind};
	if (pc_map_pending.update(&tid, &p))
		bpf_send_signal(PC_SIGKILL);
}

/* This thread's pending call of `kind`, copied out and removed; 0 if none. */
static __always_inline int pc_map_take(u16 kind, struct pc_map_pending *out)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pc_map_pending *p = pc_map_pending.lookup(&tid);
	if (!p)
		return 0;
	*out = *p;
	pc_map_pending.delete(&tid);
	return out->kind == kind;
}
#endif /* PC_HAVE_MAP_RANGES */

/* Judge a file mapped by an agent. PROT_EXEC: judged like an exec of the
 * file, recorded on a verdict or a flag. Without PROT_EXEC: a file that
 * would be denied is left for sys_exit_mmap to track by range; a MAP_FIXED
 * mapping over tracked ranges is left for it too (they are replaced).
 * Relies on: syscalls:sys_enter_mmap firing in the mapping task before the
 * mapping exists; bpf_send_signal(SIGKILL) is acted on at the return to
 * user space, so no instruction of the mapped file runs. */
TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
	int has_file = !(args->flags & PC_MAP_ANONYMOUS) && (s32)args->fd >= 0;
	int fixed = args->flags & PC_MAP_FIXED;
	if (!has_file && !fixed)
		return 0;
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent)
		return 0;
	const void *file = has_file ? pc_fd_file((u32)args->fd) : 0;
	u64 prot = file ? pc_effective_prot(args->prot) : args->prot;
	u32 rule = 0;
	u16 flags = 0;
	struct pc_allow_key ak;
	struct pc_allow av;
	if (file) {
		pc_allow_now(file, agent, &ak, &av);
		if (pc_allowed_before(&ak, &av))
			file = 0;   /* judged clean before, unchanged: nothing to judge or track */
	}
	if (file) {
		int zero = 0;
		struct pc_exec_map *m = pc_exec_map_scratch.lookup(&zero);
		struct pc_name_key *key = pc_exec_key.lookup(&zero);
		u32 *hold = pc_exec_hold.lookup(&zero);   /* argument rules do not apply to a mapping */
		if (!m || !key || !hold)
			return 0;
		pc_fill_header(&m->h, PC_EV_EXEC_MAP, agent);
		m->prot = (u32)prot;
		m->fd = args->fd;
		__builtin_memset(&m->exe, 0, sizeof(m->exe));
		rule = pc_judge_file(file, &m->exe, cfg, agent, &m->h.flags, key, hold);
		flags = m->h.flags;
		if (!rule && !flags)
			pc_exec_allowed.update(&ak, &av);
		if (prot & PC_PROT_EXEC) {
			if (rule) {
				m->h.rule_id = rule;
				m->h.verdict = pc_deny_verdict_kill(cfg, &m->h.flags);
			}
			if ((rule || m->h.flags) && pc_events.ringbuf_output(m, sizeof(*m), pc_wake_flags(&m->h)))
				pc_count_lost();
			rule = 0;   /* judged now: nothing left to track */
		}
	}
#ifdef PC_HAVE_MAP_RANGES
	if (rule) {
		pc_map_leave(args->addr, args->len, (u64)file, rule, flags, PC_PENDING_MAP);
		return 0;
	}
	if (fixed) {
		u64 mm = pc_current_mm();
		if (pc_map_ranges.lookup(&mm))
			pc_map_leave(args->addr, args->len, 0, 0, 0, PC_PENDING_MAP);
	}
#endif
	return 0;
}

#ifdef PC_HAVE_MAP_RANGES
/* Relies on: syscalls:sys_exit_mmap firing in the same thread right after
 * its sys_enter_mmap, with ret the mapping's start (or -errno, nothing
 * mapped); the mapping exists from here on. */
TRACEPOINT_PROBE(syscalls, sys_exit_mmap)
{
	struct pc_map_pending p;
	if (!pc_map_take(PC_PENDING_MAP, &p))
		return 0;
	s64 ret = args->ret;
	if (ret < 0 && ret >= -4095)
		return 0;
	u64 mm = pc_current_mm();
	struct pc_map_ranges *rs = pc_map_ranges.lookup(&mm);
	if (rs)
		pc_map_forget(rs, (u64)ret, pc_page_end((u64)ret, p.len));
	if (p.file && pc_map_track(rs, mm, &p, (u64)ret)) {
		struct pc_config *cfg = pc_cfg();
		pc_map_deny(cfg, pc_agent_of_current(cfg), p.rule, p.flags, p.file, 0, PC_MAP_CALL_UNTRACKED);
	}
	return 0;
}

/* Relies on: syscalls:sys_enter_munmap in the unmapping thread; the ranges
 * are forgotten only at a successful return (a munmap that fails, e.g.
 * ENOMEM splitting a VMA, unmaps nothing). */
TRACEPOINT_PROBE(syscalls, sys_enter_munmap)
{
	u64 mm = pc_current_mm();
	if (pc_map_ranges.lookup(&mm))
		pc_map_leave(args->addr, args->len, 0, 0, 0, PC_PENDING_UNMAP);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_munmap)
{
	struct pc_map_pending p;
	if (!pc_map_take(PC_PENDING_UNMAP, &p) || args->ret != 0)
		return 0;
	u64 mm = pc_current_mm();
	struct pc_map_ranges *rs = pc_map_ranges.lookup(&mm);
	if (rs)
		pc_map_forget(rs, p.start, pc_page_end(p.start, p.len));
	return 0;
}

/* An agent call over [start, start+len) of its address space: refused as
 * `call` when it touches a tracked range; an mprotect also once a mapping
 * of a denied file found no slot (untracked_rule). */
static __always_inline int pc_map_touch(u64 start, u64 len, u32 prot, u32 call)
{
	u64 mm = pc_current_mm();
	struct pc_map_ranges *rs = pc_map_ranges.lookup(&mm);
	if (!rs)
		return 0;
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent)
		return 0;
	int i = pc_map_overlap(rs, start & ~PC_PAGE_MASK, pc_page_end(start, len));
	if (i >= 0 && i < PC_MAP_RANGES) {
		const struct pc_map_range *r = &rs->r[i];
		pc_map_deny(cfg, agent, r->rule, (u16)r->flags, r->file, prot, call);
	} else if (call == PC_MAP_CALL_MPROTECT && rs->untracked_rule) {
		pc_map_deny(cfg, agent, rs->untracked_rule, 0, 0, prot, PC_MAP_CALL_UNTRACKED);
	}
	return 0;
}

/* A tracked range made executable (with `prot` as asked): judged like the
 * exec of its file. */
static __always_inline int pc_map_protect(u64 start, u64 len, u64 prot)
{
	prot = pc_effective_prot(prot);
	if (!(prot & PC_PROT_EXEC))
		return 0;
	return pc_map_touch(start, len, (u32)prot, PC_MAP_CALL_MPROTECT);
}

/* Relies on: sys_enter_mprotect firing before the protection changes, and
 * SIGKILL queued here being acted on at the call's return to user space,
 * before any instruction of the range runs. */
TRACEPOINT_PROBE(syscalls, sys_enter_mprotect)
{
	return pc_map_protect(args->start, args->len, args->prot);
}

/* Relies on: the same as sys_enter_mprotect. */
TRACEPOINT_PROBE(syscalls, sys_enter_pkey_mprotect)
{
	return pc_map_protect(args->start, args->len, args->prot);
}

/* mremap of a tracked range would move it where no range says what it maps:
 * refused like making it executable (no benign program remaps a mapping of
 * a file it may not run). Relies on: sys_enter_mremap before the move. */
TRACEPOINT_PROBE(syscalls, sys_enter_mremap)
{
	return pc_map_touch(args->addr, args->old_len, 0, PC_MAP_CALL_MREMAP);
}

/* Relies on: mmap:exit_mmap firing when an address space is torn down
 * (its last user gone), so a reused mm pointer starts with no ranges. */
TRACEPOINT_PROBE(mmap, exit_mmap)
{
	u64 mm = (u64)args->mm;
	pc_map_ranges.delete(&mm);
	return 0;
}
#endif /* PC_HAVE_MAP_RANGES */
#endif /* PC_HAVE_FILE_OFFSETS */

/* The gate: one program on every return from a system call to user space.
 *
 * A held exec (PC_F_HELD, exec.c) is stopped until the controller releases
 * it: deletes it from pc_exec_held, then SIGCONT. Its own execve return
 * marks it PC_HELD_RETURNED here (the SIGSTOP stops it right after); any
 * later return means someone else continued it early (the agent's own
 * `kill -CONT`, the kernel's SIGCONT to an orphaned process group): it is
 * killed on the way back from that first call, before it runs the next
 * instruction. What that one call did stays done (as it did with a gate on
 * sys_enter: SIGKILL queued there lets the call run too); a fork in it
 * makes a child held at birth (exec.c), killed on its first return.
 *
 * A child held at birth (PC_HELD_AT_BIRTH: born outside its agent's cgroup
 * by clone3, or forked by a held process) dies on its return from clone to
 * user space, before its first instruction.
 *
 * Relies on: raw_syscalls:sys_exit firing on every return from a system
 * call, also in a new child on its first return (ret_from_fork ->
 * syscall_exit_to_user_mode; the child inherits SYSCALL_WORK_SYSCALL_TRACEPOINT),
 * before signals are handled on the way out (SIGKILL queued here is acted
 * on at that return; execve's own return reaches the SIGSTOP queued at
 * sched_process_exec after this). Cost while no hold is open: one array
 * read per system call, on one program (it was two, sys_enter and sys_exit:
 * docs/benchmarks.md). */
RAW_TRACEPOINT_PROBE(sys_exit)
{
	u64 *held = pc_current_hold();
	if (!held)
		return 0;
	if (!(*held & (PC_HELD_AT_BIRTH | PC_HELD_RETURNED))) {
		*held |= PC_HELD_RETURNED;   /* execve's own return; only this task writes it */
		return 0;
	}
	bpf_send_signal(PC_SIGKILL);
	return 0;
}
