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
 * Not covered here: mprotect(PROT_EXEC) of a file mapping (finding the VMA
 * needs bpf_find_vma, whose callback BCC 0.26 cannot relocate).
 */

#include "exe.bpf.h"

#define PC_PROT_EXEC 0x4
#define PC_MAP_ANONYMOUS 0x20

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

/* Relies on: syscalls:sys_enter_mmap firing in the mapping task before the
 * mapping exists; bpf_send_signal(SIGKILL) is acted on at the return to
 * user space, so no instruction of the mapped file runs. */
TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
	if (!(args->prot & PC_PROT_EXEC) || (args->flags & PC_MAP_ANONYMOUS) || (s32)args->fd < 0)
		return 0;
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent)
		return 0;
	const void *file = pc_fd_file((u32)args->fd);
	if (!file)
		return 0;
	int zero = 0;
	struct pc_exec_map *m = pc_exec_map_scratch.lookup(&zero);
	struct pc_name_key *key = pc_exec_key.lookup(&zero);
	u32 *hold = pc_exec_hold.lookup(&zero);   /* argument rules do not apply to a mapping */
	if (!m || !key || !hold)
		return 0;
	pc_fill_header(&m->h, PC_EV_EXEC_MAP, agent);
	m->prot = args->prot;
	m->fd = args->fd;
	__builtin_memset(&m->exe, 0, sizeof(m->exe));
	u32 rule = pc_judge_file(file, &m->exe, cfg, agent, &m->h.flags, key, hold);
	if (rule) {
		m->h.rule_id = rule;
		m->h.verdict = pc_deny_verdict_kill(cfg, &m->h.flags);
	}
	if (!rule && !m->h.flags)
		return 0;
	if (pc_events.ringbuf_output(m, sizeof(*m), pc_wake_flags(&m->h)))
		pc_count_lost();
	return 0;
}
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
