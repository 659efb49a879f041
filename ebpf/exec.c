/* SPDX-License-Identifier: Apache-2.0
 * Process lineage and the in-kernel exec verdict (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py). Kernel struct layouts are
 * NEVER taken from headers (the installed headers may be another kernel's):
 * the loader passes byte offsets read from /sys/kernel/btf/vmlinux as
 * PC_OFF_* macros and defines PC_HAVE_BTF_OFFSETS; without them argv, ppid
 * and start time are left empty but the filename verdict still works.
 *
 * Exec patterns are matched with an Aho-Corasick automaton that the loader
 * compiles from pc_exec_patterns (case folded through a byte-class table):
 * one table lookup per byte, so the verifier walks ~1300 simple iterations
 * instead of patterns x positions x pattern bytes (which exceeds its
 * 1M-instruction limit; BCC 0.26 cannot relocate bpf_loop callbacks).
 * The automaton is double-buffered: the loader fills the inactive bank and
 * then flips pc_exec_dfa_ctl[0], so a policy reload never opens a gap.
 */

#include "exe.bpf.h"

BPF_PERCPU_ARRAY(pc_exec_scratch, struct pc_exec, 1);  /* 1.6 KiB record: too big for the stack */

/* ---- task fields at BTF offsets ------------------------------------------ */

#ifdef PC_HAVE_BTF_OFFSETS
/* Relies on: task_struct.real_parent and group_leader being valid while the
 * task runs (RCU-protected; the reads are fault-tolerant probe reads). */
static __always_inline void pc_fill_lineage(struct pc_header *h, const void *task)
{
	const void *parent = (const void *)pc_read_ptr(task, PC_OFF_TASK_REAL_PARENT);
	const void *leader = (const void *)pc_read_ptr(task, PC_OFF_TASK_GROUP_LEADER);
	h->ppid = pc_read_u32(parent, PC_OFF_TASK_TGID);
	h->start_ns = pc_read_ptr(leader, PC_OFF_TASK_START_BOOTTIME);
}
#else
static __always_inline void pc_fill_lineage(struct pc_header *h, const void *task) {}
#endif

static __always_inline int pc_should_trace(struct pc_config *cfg, u32 agent)
{
	return agent || (cfg && (cfg->flags & PC_CFG_TRACE_ALL));
}

/* ---- argv ------------------------------------------------------------------ */

/* Relies on: at sched_process_exec the new image's mm is installed, and its
 * arg_start..arg_end (the argv strings) and start_stack (argc, then argv
 * pointers) were written by the kernel during execve, before any user
 * instruction of the new image could run: the bytes cannot be swapped
 * after the check (no TOCTOU as with reading argv at sys_enter_execve). */
static __always_inline void pc_read_argv(struct pc_exec *e)
{
	e->argc = 0;
	e->args_len = 0;
	e->args[0] = 0;
#ifdef PC_HAVE_BTF_OFFSETS
	const void *task = (const void *)bpf_get_current_task();
	const void *mm = (const void *)pc_read_ptr(task, PC_OFF_TASK_MM);
	if (!mm)
		return;
	u64 start = pc_read_ptr(mm, PC_OFF_MM_ARG_START);
	u64 end = pc_read_ptr(mm, PC_OFF_MM_ARG_END);
	u64 stack = pc_read_ptr(mm, PC_OFF_MM_START_STACK);
	if (end <= start)
		return;
	u64 len = end - start;
	if (len > PC_ARGS_LEN) {
		len = PC_ARGS_LEN;
		e->h.flags |= PC_F_ARGS_TRUNCATED;
	}
	len &= (2 * PC_ARGS_LEN - 1);
	if (len > PC_ARGS_LEN)
		return;
	if (bpf_probe_read_user(e->args, len, (const void *)start) == 0)
		e->args_len = len;
	u64 argc = 0;
	if (stack && bpf_probe_read_user(&argc, sizeof(argc), (const void *)stack) == 0 && argc < (1u << 20))
		e->argc = argc;
#endif
}

/* ---- verdict ------------------------------------------------------------- */

/* Lower-cased basename of e->filename into key (NUL padded; e->filename is
 * zeroed past its end). Loops have fixed trip counts and no data-dependent
 * exits, and loop-carried values live in map values (the '/' offset in
 * e->argc, overwritten by pc_read_argv later): otherwise every exit point and
 * every possible offset becomes a separate verifier state (over 1M insns). */
static __always_inline void pc_basename_key(struct pc_exec *e, struct pc_name_key *key)
{
	e->argc = 0;
	for (u32 i = 0; i < PC_FILENAME_LEN; i++) {
		if (e->filename[i] == '/')
			e->argc = i + 1;
	}
	u32 base = *(volatile u32 *)&e->argc;   /* re-read: keep it out of loop registers */
	for (u32 j = 0; j < PC_NAME_LEN - 1; j++) {
		u32 idx = base + j;
		char ch = idx < PC_FILENAME_LEN ? e->filename[idx & (PC_FILENAME_LEN - 1)] : 0;
		if (ch >= 'A' && ch <= 'Z')
			ch += 'a' - 'A';
		key->name[j] = ch;
	}
}

/* Whether the argv read has an argument of at least min bytes (between two
 * NULs). An argument glob matches whole arguments (core/matchers.py), so a
 * glob with no literal can only match an argument at least its minimum
 * length. Pure arithmetic per byte and a 0/1 result: a branch on the counts,
 * or a count live after the loop, would give the verifier a different state
 * at every byte (see pc_judge_exact). */
static __always_inline u64 pc_has_arg_of(const char *buf, u32 n, u64 min)
{
	u64 run = 0, found = 0;
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < PC_ARGS_LEN; i++) {
		if (i >= n)
			break;
		u32 idx = i;
		/* keep clang from turning the masked index into a bare pointer
		 * walk, which the verifier cannot bound */
		asm volatile("" : "+r"(idx));
		u64 c = (u8)buf[idx & (PC_ARGS_LEN - 1)];
		asm volatile("" : "+r"(c));     /* and the arithmetic below into branches */
		run = (run + 1) * ((0 - c) >> 63);      /* a NUL ends the argument */
		found |= 1 - ((run - min) >> 63);       /* run >= min (both far below 2^63) */
	}
	return found;
}

/* Returns the rule id of the first deny rule the name passed to execve or
 * the argv matches, 0 if none; *hold when a hold pattern matched. */
static __always_inline u32 pc_exec_verdict(struct pc_exec *e, struct pc_name_key *key, u32 *hold)
{
	u32 *rule = pc_exec_names.lookup(key);
	if (rule && *rule) {
		if (*rule == PC_RULE_HOLD)
			*hold = 1;
		else
			return *rule;
	}

	u32 bank = pc_ctl(PC_CTL_BANK) & 1;
	u32 hit = 0;
	if (pc_ctl(PC_CTL_BASENAME_COUNT + bank))
		hit = pc_dfa_scan(key->name, PC_NAME_LEN, PC_NAME_LEN, bank, 0, 1, hold);
	if (!hit && pc_ctl(PC_CTL_ARGS_COUNT + bank))
		hit = pc_dfa_scan(e->args, e->args_len, PC_ARGS_LEN, bank, pc_ctl(PC_CTL_ARGS_ROOT + bank), 0, hold);
	return hit;
}

/* The record up to the last argv byte kept (args is its last member). */
static __always_inline u64 pc_exec_size(const struct pc_exec *e)
{
	u64 n = e->args_len;
	if (n > PC_ARGS_LEN)
		n = PC_ARGS_LEN;
	return __builtin_offsetof(struct pc_exec, args) + n;
}

/* Queue an exec record: an agent's in pc_verdicts (user-space exec rules
 * judge it), a host one (trace --all) in pc_events, where a host exec flood
 * cannot crowd out agent verdicts. An agent exec whose record cannot be
 * queued is not left running unjudged: in enforce mode the task is stopped
 * (SIGSTOP cannot be caught or ignored) and entered in pc_exec_held; user space
 * sees the agent's loss count move, freezes the agent, judges its processes
 * from /proc and kills or continues them (app/loss.py).
 * Relies on: bpf_send_signal acting on the current task before it returns
 * to user space (as for SIGKILL in pc_deny_verdict_kill). */
static __always_inline void pc_exec_output(struct pc_config *cfg, struct pc_exec *e, u32 agent)
{
	u64 size = pc_exec_size(e);
	long err = agent ? pc_verdicts.ringbuf_output(e, size, pc_wake_flags(&e->h))
			 : pc_events.ringbuf_output(e, size, pc_wake_flags(&e->h));
	if (!err)
		return;
	pc_count_agent_lost(agent);
	if (!agent || (e->h.flags & (PC_F_KILLED | PC_F_HELD)) || !cfg || cfg->mode != PC_MODE_ENFORCE)
		return;
	/* the same hold as a user-space verdict's (pc_exec_held: the syscall
	 * gate and the hold timeout apply); no room to hold it: kill it */
	if (pc_hold_current(&e->h.flags))
		bpf_send_signal(PC_SIGKILL);
}

/* The file the new image runs: mm->exe_file (set by begin_new_exec before
 * this tracepoint; for a #! script it is the interpreter, the script being
 * the filename). Judged by its own identity (exe.bpf.h).
 * Relies on: current->mm being the new image's mm at sched_process_exec. */
static __always_inline u32 pc_exec_file_verdict(struct pc_exec *e, struct pc_config *cfg, u32 agent,
						struct pc_name_key *key, u32 *hold)
{
	__builtin_memset(&e->exe, 0, sizeof(e->exe));
#ifdef PC_HAVE_FILE_OFFSETS
	const void *task = (const void *)bpf_get_current_task();
	const void *mm = (const void *)pc_read_ptr(task, PC_OFF_TASK_MM);
	const void *file = (const void *)pc_read_ptr(mm, PC_OFF_MM_EXE_FILE);
	if (file)
		return pc_judge_file(file, &e->exe, cfg, agent, &e->h.flags, key, hold);
#endif
	return 0;
}

/* ---- #! scripts under exec.trusted (issue 11 part 5) ----------------------- */

#ifdef PC_HAVE_PREPARE_EXEC
/* By sched_process_exec a script's struct file is released and exe_file is
 * its interpreter; at sched_prepare_exec the bprm still tells: binfmt_script
 * and binfmt_misc replace bprm->interp (bprm_change_interp), which is
 * bprm->filename otherwise. The process is marked (value: its leader's start
 * time, so a reused pid does not inherit a mark); sched_process_exec holds
 * it and user space judges the script file (actuate/held_script.py).
 * Relies on: sched_prepare_exec (Linux >= 6.10) firing in the exec'ing task
 * at the start of begin_new_exec, after every binfmt rewrite and before the
 * same exec's sched_process_exec; alloc_bprm setting interp = filename. */
BPF_TABLE("lru_hash", u32, u64, pc_exec_script, 8192);

RAW_TRACEPOINT_PROBE(sched_prepare_exec)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->flags & PC_CFG_EXEC_TRUSTED) || !pc_agent_of_current(cfg))
		return 0;
	const void *bprm = (const void *)ctx->args[1];
	if (pc_read_ptr(bprm, PC_OFF_BPRM_INTERP) == pc_read_ptr(bprm, PC_OFF_BPRM_FILENAME))
		return 0;
	struct pc_header h = {};
	pc_fill_lineage(&h, (const void *)bpf_get_current_task());
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pc_exec_script.update(&tgid, &h.start_ns))
		bpf_send_signal(PC_SIGKILL);   /* cannot mark it: fail closed */
	return 0;
}

/* Whether this exec was marked as a script; the mark is used up. */
static __always_inline u32 pc_take_script(u32 tgid, u64 start_ns)
{
	u64 *mark = pc_exec_script.lookup(&tgid);
	if (!mark)
		return 0;
	u32 same = *mark == start_ns;
	pc_exec_script.delete(&tgid);
	return same;
}
#else
/* Without sched_prepare_exec (Linux < 6.10) a script exec cannot be told
 * from any other here (its struct file is gone, exe_file is the trusted
 * interpreter): under exec.trusted every exec is held and its path judged
 * as a script's would be (actuate/held_script.py). Slower, and a trusted
 * program reached through a path the agent can change (a symlink in /tmp,
 * /proc/self/fd) is refused too: fail closed (docs/kernel.md). */
static __always_inline u32 pc_take_script(u32 tgid, u64 start_ns) { return 1; }
#endif

/* ---- hooks -------------------------------------------------------------- */

/* Relies on: sched_process_exec fires in the exec'ing task after the new
 * image is committed (point of no return passed) and before it returns to
 * user space; bpf_send_signal(SIGKILL) queues a fatal signal that is acted
 * on at that return, so the new image never executes one instruction, and
 * bpf_send_signal(SIGSTOP) stops it there (held, until user space sends
 * SIGCONT or SIGKILL; see pc_hold_current). */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!pc_should_trace(cfg, agent))
		return 0;
	int zero = 0;
	struct pc_exec *e = pc_exec_scratch.lookup(&zero);
	if (!e)
		return 0;
	pc_fill_header(&e->h, PC_EV_EXEC, agent);
	pc_fill_lineage(&e->h, (const void *)bpf_get_current_task());

	__builtin_memset(e->filename, 0, sizeof(e->filename));
	u16 loc = args->data_loc_filename & 0xFFFF;
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (const char *)args + loc);
	e->filename_len = n > 0 ? n - 1 : 0;
	if (n >= PC_FILENAME_LEN)
		e->h.flags |= PC_F_FILENAME_TRUNCATED;
	struct pc_name_key *key = pc_exec_key.lookup(&zero);
	if (!key)
		return 0;
	__builtin_memset(key, 0, sizeof(*key));
	if (agent)
		pc_basename_key(e, key);
	pc_read_argv(e);

	u32 *hold = pc_exec_hold.lookup(&zero);
	if (!hold)
		return 0;
	*hold = 0;
	if (agent) {
		/* Argument rules cannot see past what was read: a cut argv is held
		 * when there are any (user space reads the whole argv of the held
		 * process, or fails closed). An argument glob with no literal (the
		 * Monero wallet glob) also holds an argument long enough to match.
		 * Checked here, before the verdict's branches: the loop is verified
		 * once per state that reaches it. */
		u32 min = pc_ctl(PC_CTL_HOLD_ARGS_MIN);
		if (e->h.flags & PC_F_ARGS_TRUNCATED) {
			if (min || pc_ctl(PC_CTL_ARGS_COUNT + (pc_ctl(PC_CTL_BANK) & 1)))
				*hold = 1;
		} else if (min && e->args_len > min && pc_has_arg_of(e->args, e->args_len, min)) {
			*hold = 1;
		}
		u32 rule = pc_exec_verdict(e, key, hold);
		u32 file_rule = pc_exec_file_verdict(e, cfg, agent, key, hold);
		if (!rule)
			rule = file_rule;
		if (cfg && (cfg->flags & PC_CFG_EXEC_HOLD_ALL))
			*hold = 1;
		if (cfg && (cfg->flags & PC_CFG_EXEC_TRUSTED) && pc_take_script(e->h.pid, e->h.start_ns)) {
			e->h.flags |= PC_F_SCRIPT;   /* user space judges the script */
			*hold = 1;
		}
		if (!rule && *hold && cfg && cfg->mode != PC_MODE_MONITOR && pc_hold_current(&e->h.flags))
			rule = PC_RULE_HOLD;        /* could not hold it: fail closed */
		if (rule) {
			e->h.rule_id = rule;
			e->h.verdict = pc_deny_verdict_kill(cfg, &e->h.flags);
		}
	} else {
		__builtin_memset(&e->exe, 0, sizeof(e->exe));
	}
	/* The verdict is enforced above even if the record cannot be queued. */
	pc_exec_output(cfg, e, agent);
	return 0;
}

#ifdef PC_HAVE_BTF_OFFSETS
/* ---- clone into another cgroup (issue 10 part 2) --------------------------
 * clone3(CLONE_INTO_CGROUP) places the child in the cgroup its fd names
 * inside copy_process() (cgroup_can_fork/post_fork): no
 * cgroup:cgroup_attach_task fires, so boundary.c never sees it. The fork
 * hook judges it instead: a child of an agent task born outside the
 * agent's cgroup subtree is entered in pc_exec_held, so the exit gate
 * (exec_map.c) kills it on its way out of clone3, before it runs one
 * instruction, and the parent, the agent that moved it, is killed like
 * any mover. */

/* The cgroup v2 (default hierarchy) cgroup of a task, also on hybrid hosts. */
static __always_inline const void *pc_task_dfl_cgroup(const void *task)
{
	const void *cset = (const void *)pc_read_ptr(task, PC_OFF_TASK_CGROUPS);
	return (const void *)pc_read_ptr(cset, PC_OFF_CSS_SET_DFL_CGRP);
}

/* The id bpf_get_current_cgroup_id() returns for tasks in cgrp: its kernfs id. */
static __always_inline u64 pc_cgroup_id(const void *cgrp)
{
	const void *kn = (const void *)pc_read_ptr(cgrp, PC_OFF_CGROUP_KN);
	return pc_read_ptr(kn, PC_OFF_KN_ID);
}

/* 1 when cgrp or an ancestor (up to PC_MAX_LEVELS) is the agent's cgroup:
 * the test boundary.c makes for a move, by id (pc_agents) instead of path.
 * A cgroup deeper than that below the agent counts as outside: fail closed. */
static __always_inline int pc_cgroup_in_agent(const void *cgrp, u32 agent)
{
	for (int i = 0; i < PC_MAX_LEVELS; i++) {
		if (!cgrp)
			break;
		u64 id = pc_cgroup_id(cgrp);
		u32 *a = pc_agents.lookup(&id);
		if (a && *a == agent)
			return 1;
		u64 css = pc_read_ptr(cgrp, PC_OFF_CGROUP_SELF + PC_OFF_CSS_PARENT);
		cgrp = css ? (const void *)(css - PC_OFF_CGROUP_SELF) : 0;
	}
	return 0;
}

/* Relies on: sched_process_fork firing after copy_process() returned, so
 * cgroup_post_fork() has set child->cgroups to the css_set of the cgroup
 * CLONE_INTO_CGROUP named, and before wake_up_new_task(): the child has
 * not run; css_set.dfl_cgrp is its cgroup in the v2 hierarchy and
 * cgroup.self.parent its parent's css (NULL at the root). */
static __always_inline void pc_clone_boundary(struct pc_config *cfg, u32 agent, const void *child, u32 tgid)
{
	const void *cg = pc_task_dfl_cgroup(child);
	u64 cg_id = pc_cgroup_id(cg);
	/* same cgroup as the parent: an ordinary fork (one compare) */
	if (!cg_id || cg_id == bpf_get_current_cgroup_id() || pc_cgroup_in_agent(cg, agent))
		return;
	u16 flags = PC_F_OTHER_MOVER;   /* user space kills the child too */
	u8 verdict = pc_deny_verdict(cfg);
	if (verdict == PC_DENY) {
		if (!pc_hold_child(tgid))
			flags |= PC_F_HELD;
		pc_deny_verdict_kill(cfg, &flags);   /* the mover: the parent */
	}
	struct pc_boundary *e = PC_RESERVE_FOR(struct pc_boundary, agent, 1);
	if (!e)
		return;   /* counted lost: the agent is frozen until user space caught up */
	pc_fill_header(&e->h, PC_EV_BOUNDARY, agent);
	e->h.verdict = verdict;
	e->h.flags = flags;
	e->dst_cgroup_id = cg_id;
	e->moved_pid = tgid;
	u32 *dst = pc_agents.lookup(&cg_id);
	e->dst_agent = dst ? *dst : 0;
	e->_pad0[0] = e->_pad0[1] = e->_pad0[2] = 0;
	/* the destination's own name (its path is not at hand here) */
	__builtin_memset(e->path, 0, sizeof(e->path));
	const void *kn = (const void *)pc_read_ptr(cg, PC_OFF_CGROUP_KN);
	const char *name = (const char *)pc_read_ptr(kn, PC_OFF_KN_NAME);
	long n = name ? bpf_probe_read_kernel_str(e->path, sizeof(e->path), name) : 0;
	e->path_len = n > 0 ? (u16)(n - 1) : 0;
	pc_submit(e, &e->h);
}

/* Relies on: sched_process_fork runs in the parent after copy_process(), with
 * both task pointers valid; child->tgid == parent->tgid iff CLONE_THREAD. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!pc_should_trace(cfg, agent))
		return 0;
	const void *parent = (const void *)ctx->args[0];
	const void *child = (const void *)ctx->args[1];
	u32 child_tgid = pc_read_u32(child, PC_OFF_TASK_TGID);
	int no_identity = pc_identity_fork(agent, child_tgid);
	u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
	if (agent && child_tgid != parent_tgid && (no_identity || pc_current_hold()))
		pc_hold_child(child_tgid);   /* no identity, or forked by a held process continued early */
	if (agent)
		pc_clone_boundary(cfg, agent, child, child_tgid);
#ifdef PC_HAVE_MAP_RANGES
	if (agent && child_tgid != parent_tgid)
		pc_map_ranges_fork(parent, child, child_tgid);   /* exe.bpf.h */
#endif
	struct pc_fork *f = PC_RESERVE_FOR(struct pc_fork, agent, 0);
	if (!f)
		return 0;
	pc_fill_header(&f->h, PC_EV_FORK, agent);
	pc_fill_lineage(&f->h, parent);
	f->child_pid = pc_read_u32(child, PC_OFF_TASK_PID);
	f->_pad0 = 0;
	if (pc_read_u32(child, PC_OFF_TASK_TGID) == pc_read_u32(parent, PC_OFF_TASK_TGID))
		f->h.flags |= PC_F_THREAD;
	pc_submit(f, &f->h);
	return 0;
}
#else
/* Relies on: sched_process_fork runs in the parent's context after the child
 * exists. Without BTF offsets threads cannot be told from processes here. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!pc_should_trace(cfg, agent))
		return 0;
	int no_identity = pc_identity_fork(agent, args->child_pid);   /* a thread's tid too: harmless */
	if (agent && (no_identity || pc_current_hold()))
		pc_hold_child(args->child_pid);   /* no identity, or forked by a held process continued early */
	struct pc_fork *f = PC_RESERVE_FOR(struct pc_fork, agent, 0);
	if (!f)
		return 0;
	pc_fill_header(&f->h, PC_EV_FORK, agent);
	f->child_pid = args->child_pid;
	f->_pad0 = 0;
	pc_submit(f, &f->h);
	return 0;
}
#endif

/* Relies on: sched_process_exit runs in the exiting task after do_exit() set
 * task->exit_code (wait(2) status: code << 8 | signal) and before the task
 * leaves its cgroup (cgroup_exit comes later, in release). */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!pc_should_trace(cfg, agent))
		return 0;
	/* before the record: the identity must go even when the ring is full,
	 * or a reused pid would inherit it */
#ifdef PC_TP_EXIT_HAS_GROUP_DEAD
	if (args->group_dead)
		pc_identity_exit();
#else
	u64 self = bpf_get_current_pid_tgid();
	if ((u32)self == self >> 32)
		pc_identity_exit();
#endif
	struct pc_exit *x = PC_RESERVE_FOR(struct pc_exit, agent, 0);
	if (!x)
		return 0;
	const void *task = (const void *)bpf_get_current_task();
	pc_fill_header(&x->h, PC_EV_EXIT, agent);
	pc_fill_lineage(&x->h, task);
	x->_pad0 = 0;
#ifdef PC_HAVE_BTF_OFFSETS
	x->exit_code = (s32)pc_read_u32(task, PC_OFF_TASK_EXIT_CODE);
#else
	x->exit_code = 0;
#endif
#ifdef PC_TP_EXIT_HAS_GROUP_DEAD
	if (!args->group_dead)   /* other threads live on: not the process's end */
		x->h.flags |= PC_F_THREAD;
#else
	if (x->h.pid != x->h.tid)
		x->h.flags |= PC_F_THREAD;
#endif
	pc_submit(x, &x->h);
	return 0;
}
