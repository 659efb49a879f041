/* SPDX-License-Identifier: Apache-2.0
 * The agent boundary (BCC C, issue 10): agents contained from the birth of
 * their cgroup, and for life.
 *
 * Compiles on its own (test_ebpf_sources.py).
 *
 * Birth: cgroup:cgroup_mkdir runs the selectors' cgroup path globs, compiled
 * by pycontain/core/cgroup_glob.py into one automaton (pc_birth_dfa, one
 * lookup per path byte), over the new cgroup's path. On a match (and no
 * ancestor already an agent) the cgroup is written to pc_agents before
 * mkdir() returns, so the first task that enters it is an agent before its
 * first syscall there. A record names the cgroup for user space, which
 * names the agent, applies budgets and adopts it.
 *
 * For life: cgroup:cgroup_attach_task sees every task that moves, in the v2
 * hierarchy and in the v1 ones (where an agent task may not move anything). A task that enters an agent cgroup becomes that agent's
 * (pc_agent_tasks, shared with exec.c's fork/exit hooks); an agent task
 * that moves anywhere outside its agent's cgroup subtree is an escape: the
 * mover is killed when it is the agent itself (bpf_send_signal acts on the
 * current task only), the record carries PC_F_OTHER_MOVER when the move was
 * made by another task, and user space kills the moved task. The moved task
 * keeps its identity either way, so its exec and network rules still apply.
 *
 * Agent cgroups are known by path in pc_cg_paths (written by the loader for
 * agents user space tracks, and here for kernel-born ones); "within the
 * agent" = some prefix of the path, cut at a '/', is the agent's. A cgroup
 * renamed after it was tracked is not found by its new path (rename(2) of
 * a cgroup directory needs write access to its parent: root).
 */

#include "common.bpf.h"

#define PC_ROOT_V2 0            /* hierarchy id of cgroup v2 (cgrp_dfl_root) */

BPF_HASH(pc_cg_paths, struct pc_cg_path, u32, 4096);                 /* agent cgroup path -> agent id */
BPF_ARRAY(pc_birth_class, u32, 256);                                 /* byte -> class */
BPF_ARRAY(pc_birth_dfa, u32, PC_BIRTH_STATES * PC_BIRTH_CLASSES);    /* state, class -> state; 0 = dead */
BPF_ARRAY(pc_birth_accept, u32, PC_BIRTH_STATES);                    /* state -> selector + 1, 0 = none */
BPF_PERCPU_ARRAY(pc_boundary_path, struct pc_cg_path, 1);            /* the path being judged */
BPF_PERCPU_ARRAY(pc_boundary_prefix, struct pc_cg_path, 1);          /* its prefixes, as keys */
BPF_PERCPU_ARRAY(pc_birth_scratch, struct pc_cgroup_birth, 1);
BPF_PERCPU_ARRAY(pc_boundary_scratch, struct pc_boundary, 1);

/* Copy a __data_loc string of the tracepoint record into a zeroed key.
 * Returns its length (without the NUL). */
static __always_inline u32 pc_read_path(struct pc_cg_path *p, const void *args, u32 data_loc)
{
	__builtin_memset(p->path, 0, sizeof(p->path));
	long n = bpf_probe_read_kernel_str(p->path, sizeof(p->path), (const char *)args + (data_loc & 0xFFFF));
	return n > 0 ? (u32)(n - 1) : 0;
}

/* The agent whose cgroup is `p` or one of its ancestors (with_self: p itself
 * counts), shallowest first: the key is built byte by byte and looked up
 * at every '/' (and at the end). */
static __always_inline u32 pc_agent_of_path(const struct pc_cg_path *p, int with_self)
{
	int zero = 0;
	struct pc_cg_path *k = pc_boundary_prefix.lookup(&zero);
	if (!k)
		return 0;
	__builtin_memset(k->path, 0, sizeof(k->path));
	for (int i = 0; i < PC_CGPATH_LEN - 1; i++) {
		char c = p->path[i];
		if (c == 0)
			break;
		if (c == '/' && i > 0) {
			u32 *a = pc_cg_paths.lookup(k);
			if (a)
				return *a;
		}
		k->path[i] = c;
	}
	if (with_self) {
		u32 *a = pc_cg_paths.lookup(k);
		if (a)
			return *a;
	}
	return 0;
}

/* Run the birth automaton over the path: selector index + 1, or 0. */
static __always_inline u32 pc_birth_match(const struct pc_cg_path *p)
{
	u32 state = 1;   /* 0 = dead, 1 = start */
	for (int i = 0; i < PC_CGPATH_LEN - 1; i++) {
		u32 b = (u8)p->path[i];
		if (b == 0)
			break;
		u32 *cls = pc_birth_class.lookup(&b);
		if (!cls)
			return 0;
		u32 idx = state * PC_BIRTH_CLASSES + (*cls & (PC_BIRTH_CLASSES - 1));
		u32 *next = pc_birth_dfa.lookup(&idx);
		if (!next || !*next)
			return 0;
		state = *next & (PC_BIRTH_STATES - 1);
	}
	u32 *acc = pc_birth_accept.lookup(&state);
	return acc ? *acc : 0;
}

static __always_inline void pc_emit_birth(u32 agent, u64 cg_id, u32 selector, u32 level,
					  const struct pc_cg_path *p, u32 len)
{
	int zero = 0;
	struct pc_cgroup_birth *e = pc_birth_scratch.lookup(&zero);
	if (!e)
		return;
	pc_fill_header(&e->h, PC_EV_CGROUP_BIRTH, agent);
	e->cgroup_id = cg_id;
	e->selector = selector;
	e->level = level;
	e->path_len = len;
	__builtin_memcpy(e->path, p->path, sizeof(e->path));
	/* an exec-like urgency: user space names the agent and applies budgets */
	e->h.verdict = PC_ALLOW;
	/* it carries a decision: the verdict ring, where routine floods cannot crowd it out */
	if (pc_verdicts.ringbuf_output(e, sizeof(*e), BPF_RB_FORCE_WAKEUP))
		pc_count_agent_lost(agent);
}

/* Relies on: cgroup:cgroup_mkdir fires in cgroup_mkdir() after the cgroup
 * is created and before mkdir(2) returns, i.e. before any task can be
 * attached to it; root == 0 for the v2 hierarchy; `id` is the kernfs id
 * that bpf_get_current_cgroup_id() returns for tasks in it. */
TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->flags & PC_CFG_BIRTH) || args->root != PC_ROOT_V2)
		return 0;
	int zero = 0;
	struct pc_cg_path *p = pc_boundary_path.lookup(&zero);
	if (!p)
		return 0;
	u32 len = pc_read_path(p, args, args->data_loc_path);
	if (pc_agent_of_path(p, 0))
		return 0;   /* inside an agent already: part of it (ancestor lookup) */
	u32 sel = pc_birth_match(p);
	if (!sel)
		return 0;
	u64 cg_id = args->id;
	u32 agent = PC_BIRTH_AGENT_BASE | (u32)(cg_id & 0x7fffffff);
	pc_agents.update(&cg_id, &agent);
	pc_cg_paths.update(p, &agent);
	u32 level = (u32)args->level;
	/* not atomic (BCC's clang targets no atomic OR): two CPUs marking new
	 * levels at once may lose one bit; only sub-cgroups of the born agent
	 * use it, its own tasks are found by pc_agents and pc_agent_tasks */
	if (level < PC_MAX_LEVELS && !(cfg->birth_levels & (1u << level)))
		cfg->birth_levels |= 1u << level;
	pc_emit_birth(agent, cg_id, sel - 1, level, p, len);
	return 0;
}

static __always_inline void pc_emit_boundary(struct pc_config *cfg, u32 agent, u32 moved, u32 dst_agent,
					     u64 dst_id, const struct pc_cg_path *p, u32 len, u16 flags)
{
	int zero = 0;
	struct pc_boundary *e = pc_boundary_scratch.lookup(&zero);
	if (!e)
		return;
	pc_fill_header(&e->h, PC_EV_BOUNDARY, agent);
	e->h.verdict = pc_deny_verdict(cfg);
	e->h.flags = flags;
	e->dst_cgroup_id = dst_id;
	e->moved_pid = moved;
	e->dst_agent = dst_agent;
	e->path_len = len;
	__builtin_memcpy(e->path, p->path, sizeof(e->path));
	/* it carries a decision: the verdict ring, where routine floods cannot crowd it out */
	if (pc_verdicts.ringbuf_output(e, sizeof(*e), BPF_RB_FORCE_WAKEUP))
		pc_count_agent_lost(agent);
}

/* Relies on: cgroup:cgroup_attach_task fires in the mover's context after a
 * successful migration (writes to cgroup.procs / cgroup.threads, clone3
 * with CLONE_INTO_CGROUP goes through cgroup_can_fork/post_fork and is
 * judged by the fork hook instead: the child is registered with its
 * parent's agent and judged again when it moves); `pid` is the moved task
 * (the leader for a process move); bpf_send_signal() acts on the current
 * task (the mover) only. */
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg)
		return 0;
	int zero = 0;
	struct pc_cg_path *p = pc_boundary_path.lookup(&zero);
	if (!p)
		return 0;
	u32 moved = (u32)args->pid;
	u32 me = bpf_get_current_pid_tgid() >> 32;
	u32 *mv = pc_agent_tasks.lookup(&me);
	u32 mover_agent = mv ? *mv : 0;
	u32 len = pc_read_path(p, args, args->data_loc_dst_path);
	if (args->dst_root != PC_ROOT_V2) {
		/* v1 hierarchies hold budgets, not identity: pycontain places an
		 * agent there before it is one (actuate/launch.py joins v2 last),
		 * runtimes move tasks from outside. An agent task that moves any
		 * task there leaves (or moves another out of) its budget: an
		 * escape, whatever the destination. */
		if (mover_agent) {
			u16 flags = 0;
			pc_deny_verdict_kill(cfg, &flags);
			if (moved != me)
				flags |= PC_F_OTHER_MOVER;
			pc_emit_boundary(cfg, mover_agent, moved, 0, args->dst_id, p, len, flags);
		}
		return 0;
	}
	u32 *ma = pc_agent_tasks.lookup(&moved);
	u32 moved_agent = ma ? *ma : 0;
	u32 dst_agent = pc_agent_of_path(p, 1);
	if (!dst_agent) {
		u64 dst = args->dst_id;
		u32 *a = pc_agents.lookup(&dst);
		dst_agent = a ? *a : 0;
	}
	u32 agent = moved_agent ? moved_agent : mover_agent;
	if (!agent) {
		if (dst_agent)   /* entering an agent: the task is the agent's from now on */
			pc_agent_tasks.update(&moved, &dst_agent);
		return 0;
	}
	if (dst_agent == agent) {
		if (!moved_agent)
			pc_agent_tasks.update(&moved, &agent);
		return 0;
	}
	/* an escape: the moved task keeps (or gets) the agent's identity */
	if (!moved_agent)
		pc_agent_tasks.update(&moved, &agent);
	u16 flags = 0;
	if (mover_agent) {
		u8 v = pc_deny_verdict_kill(cfg, &flags);   /* the agent that moved it */
		(void)v;
	}
	if (moved != me)
		flags |= PC_F_OTHER_MOVER;
	pc_emit_boundary(cfg, agent, moved, dst_agent, args->dst_id, p, len, flags);
	return 0;
}
