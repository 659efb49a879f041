/* SPDX-License-Identifier: Apache-2.0
 * Maps and inline helpers shared by every pycontain hook (BCC C).
 * Hook entry points stay thin and call these (libbpf-tools style).
 * Every hook file includes this header; the loader builds one BCC program
 * from `#include "<hook>.c"` lines (pycontain/kernel/loader.py inlines each
 * local header once) so all hooks share these maps.
 */
#ifndef PYCONTAIN_COMMON_BPF_H
#define PYCONTAIN_COMMON_BPF_H

#include <uapi/linux/bpf.h>
#include "pycontain.h"
/* no kernel struct headers: layouts come from BTF offsets (probes/btf.py) */

#ifndef PC_RINGBUF_PAGES
#define PC_RINGBUF_PAGES 1024   /* 4 MiB; the loader may override with -D */
#endif

#ifndef PC_VERDICT_PAGES
#define PC_VERDICT_PAGES 256    /* 1 MiB: execs and verdicts only */
#endif

/* Two rings (issue 10 part 5). Records that carry a decision (every exec,
 * every record whose verdict is not ALLOW, stratum hits) go to pc_verdicts,
 * so a flood of routine records (forks, exits, allowed connects, TCP states)
 * filling pc_events can never make one of them lost. */
BPF_RINGBUF_OUTPUT(pc_events, PC_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(pc_verdicts, PC_VERDICT_PAGES);
BPF_PERCPU_ARRAY(pc_lost, u64, 1);              /* records the kernel could not reserve */
/* agent id -> records of that agent lost (either ring); key 0 counts agent
 * records whose agent could not be entered (map full). User space freezes
 * an agent whose count moved until it has caught up (app/loss.py). */
BPF_HASH(pc_agent_lost, u32, u64, 4096);
BPF_ARRAY(pc_config, struct pc_config, 1);
#define PC_AGENTS_MAX 4096              /* mirrored in core/capacity.py (issue 13) */
BPF_HASH(pc_agents, u64, u32, PC_AGENTS_MAX);   /* tracked cgroup v2 id -> agent id */
BPF_PERCPU_ARRAY(pc_wake, u32, 1);              /* records queued since the last wake-up */
/* Agent identity that follows the task (issue 10): tgid -> agent id, set
 * when a task enters an agent cgroup (boundary.c) or is forked by an agent
 * task (exec.c), removed when its process exits. A task that leaves its
 * agent's cgroup is still that agent's. Not LRU: an entry is never evicted. */
#ifndef PC_AGENT_TASKS_MAX
#define PC_AGENT_TASKS_MAX 65536   /* PYCONTAIN_AGENT_TASKS_MAX (kernel/loader.py) */
#endif
BPF_HASH(pc_agent_tasks, u32, u32, PC_AGENT_TASKS_MAX);
BPF_PERCPU_ARRAY(pc_identity_lost, u64, 1);     /* identities pc_agent_tasks could not store */

#ifndef PC_WAKE_EVERY
#define PC_WAKE_EVERY 64
#endif

static __always_inline struct pc_config *pc_cfg(void)
{
	int zero = 0;
	return pc_config.lookup(&zero);
}

/* The in-kernel filter, run first in every task-context hook. The task's
 * own identity (pc_agent_tasks) comes first: a task that left its agent's
 * cgroup stays that agent's.
 * Relies on: bpf_get_current_cgroup_id()/bpf_get_current_ancestor_cgroup_id()
 * returning cgroup v2 ids of the current task (valid in process context).
 * Returns the agent id, or 0 when the task is in no tracked agent cgroup.
 * Cost for an untracked task: one array lookup, plus one hash lookup per
 * level in use by some agent (usually one). */
static __always_inline u32 pc_agent_of_current(struct pc_config *cfg)
{
	if (!cfg)
		return 0;
	u32 levels = cfg->tracked_levels | cfg->birth_levels;
	if (!levels)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 *agent = pc_agent_tasks.lookup(&tgid);
	if (agent)
		return *agent;
	u64 id = bpf_get_current_cgroup_id();
	agent = pc_agents.lookup(&id);
	if (agent)
		return *agent;
#pragma unroll
	for (int lvl = 0; lvl < PC_MAX_LEVELS; lvl++) {
		if (!(levels & (1u << lvl)))
			continue;
		u64 anc = bpf_get_current_ancestor_cgroup_id(lvl);
		if (!anc)
			break;
		agent = pc_agents.lookup(&anc);
		if (agent)
			return *agent;
	}
	return 0;
}

/* A child forked by an agent task is that agent's (issue 10). -1 when the
 * map is full (counted): the caller holds such a child at birth, since only
 * its identity tells the boundary hook who moves a task out of the
 * agent's cgroup (fail closed: it dies before its first instruction). */
static __always_inline int pc_identity_fork(u32 agent, u32 child_tgid)
{
	if (agent && child_tgid && pc_agent_tasks.update(&child_tgid, &agent)) {
		int zero = 0;
		u64 *n = pc_identity_lost.lookup(&zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return -1;
	}
	return 0;
}

/* The process of the current task exits: its identity goes with it. */
static __always_inline void pc_identity_exit(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	pc_agent_tasks.delete(&tgid);
}

static __always_inline void pc_count_lost(void)
{
	int zero = 0;
	u64 *n = pc_lost.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* A record of `agent` was lost: count it globally and for the agent. */
static __always_inline void pc_count_agent_lost(u32 agent)
{
	pc_count_lost();
	if (!agent)
		return;
	u64 one = 1;
	u64 *n = pc_agent_lost.lookup(&agent);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	if (pc_agent_lost.update(&agent, &one)) {
		u32 none = 0;        /* map full: still make user space freeze */
		n = pc_agent_lost.lookup(&none);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
}

/* Fill the fields every record has from the values given, for hooks that
 * cannot ask the current task (softirq, cgroup_skb): the caller sets comm
 * and the type-specific fields. */
static __always_inline void pc_fill_header_with(struct pc_header *h, u8 type, u32 agent,
						u32 pid, u32 tid, u32 uid, u64 cgroup_id)
{
	h->type = type;
	h->verdict = PC_ALLOW;
	h->flags = 0;
	h->rule_id = 0;
	h->pid = pid;
	h->tid = tid;
	h->ppid = 0;
	h->uid = uid;
	h->agent_id = agent;
	h->_pad0 = 0;
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->start_ns = 0;
	h->cgroup_id = cgroup_id;
}

/* Fill the fields every record has from the current task; the caller sets
 * type-specific fields. */
static __always_inline void pc_fill_header(struct pc_header *h, u8 type, u32 agent)
{
	u64 pt = bpf_get_current_pid_tgid();
	u64 ug = bpf_get_current_uid_gid();
	pc_fill_header_with(h, type, agent, pt >> 32, (u32)pt, (u32)ug, bpf_get_current_cgroup_id());
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

#define PC_SIGKILL 9
#define PC_SIGSTOP 19

/* The verdict of a hook whose deny rule matched: PC_WOULD_DENY in monitor
 * mode (nothing is enforced), PC_DENY otherwise. Hooks that enforce by their
 * return value (EPERM, drop) use this; hooks that enforce by killing use
 * pc_deny_verdict_kill. */
static __always_inline u8 pc_deny_verdict(const struct pc_config *cfg)
{
	return cfg && cfg->mode == PC_MODE_MONITOR ? PC_WOULD_DENY : PC_DENY;
}

/* pc_deny_verdict, and on PC_DENY queue SIGKILL for the current process.
 * PC_F_KILLED is added to *flags only when bpf_send_signal accepted the
 * signal: it can refuse (kernel thread, exiting task, init, or irqs off
 * with its irq_work still busy), and the record must not claim a kill that did not happen. The
 * verdict stays PC_DENY either way: the rule matched in enforce mode, and a
 * PC_DENY without PC_F_KILLED tells user space the kernel could not act. */
static __always_inline u8 pc_deny_verdict_kill(const struct pc_config *cfg, u16 *flags)
{
	u8 verdict = pc_deny_verdict(cfg);
	if (verdict == PC_DENY && bpf_send_signal(PC_SIGKILL) == 0)
		*flags |= PC_F_KILLED;
	return verdict;
}

/* Reserve a routine record or count it lost (globally only: prefer
 * PC_RESERVE_FOR, which also names the agent). */
#define PC_RESERVE(type_) \
	((type_ *)pc_reserve_or_count(sizeof(type_)))

static __always_inline void *pc_reserve_or_count(u64 size)
{
	void *p = pc_events.ringbuf_reserve(size);
	if (!p)
		pc_count_lost();
	return p;
}

/* Reserve a record of `agent` in the ring its verdict belongs to: pc_verdicts
 * when it carries a decision (decision != 0), pc_events otherwise; on failure
 * count the loss for the agent. The ring is chosen at reserve time and
 * pc_submit hands the record back to the ring it came from (BPF ringbuf
 * submit takes the record, not the map: either map's submit commits it). */
#define PC_RESERVE_FOR(type_, agent_, decision_) \
	((type_ *)pc_reserve_for(sizeof(type_), (agent_), (decision_)))

static __always_inline void *pc_reserve_for(u64 size, u32 agent, int decision)
{
	void *p = decision ? pc_verdicts.ringbuf_reserve(size) : pc_events.ringbuf_reserve(size);
	if (!p)
		pc_count_agent_lost(agent);
	return p;
}

/* Adaptive wake-up. Waking the consumer for every record cost agent loops
 * 11-31 % on 2 vCPUs (scripts/bench_wakeup.py): the producer pays an irq_work and
 * the consumer a context switch per record. Ordinary records (fork, exit,
 * allowed connects and sends, TCP states, sockets) are queued silently and
 * the consumer drains the ring on a short timer (Probes.poll). It is woken
 * at once for a verdict, a stratum match and a held task (PC_F_HELD: an exec
 * or a child stopped until user space decides), and after every
 * PC_WAKE_EVERY records on a CPU, so a flood never waits. An allowed exec
 * that is not held does not wake it: every exec whose verdict user space
 * could still change is held by the kernel before its first instruction
 * (exec.c), so nothing is gained by waking for the others, and waking per
 * exec cost agent exec loops 8-12 % (scripts/bench_wakeup.py).
 * Relies on: BPF_RB_NO_WAKEUP / BPF_RB_FORCE_WAKEUP (5.8+) changing only the
 * notification, never whether or in which order a record is delivered. */
static __always_inline u64 pc_wake_flags(const struct pc_header *h)
{
	if (h->verdict != PC_ALLOW || h->type == PC_EV_STRATUM || (h->flags & PC_F_HELD))
		return BPF_RB_FORCE_WAKEUP;
	int zero = 0;
	u32 *n = pc_wake.lookup(&zero);
	if (!n)
		return BPF_RB_FORCE_WAKEUP;
	if (++*n >= PC_WAKE_EVERY) {
		*n = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

/* Submit a record reserved with PC_RESERVE; h is its header. */
static __always_inline void pc_submit(void *rec, const struct pc_header *h)
{
	pc_events.ringbuf_submit(rec, pc_wake_flags(h));
}

/* ---- kernel memory at BTF offsets (kernel/btf.py's -DPC_OFF_*) ---------- */

#ifdef PC_HAVE_BTF_OFFSETS
/* Relies on: bpf_probe_read_kernel being fault-tolerant (0 on a bad address). */
#define PC_READ_AT(type_, name_)						\
static __always_inline type_ name_(const void *base, u64 off)			\
{										\
	type_ v = 0;								\
	if (base)								\
		bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);	\
	return v;								\
}
PC_READ_AT(u64, pc_read_ptr)
PC_READ_AT(u32, pc_read_u32)
PC_READ_AT(u16, pc_read_u16)
#endif

#endif /* PYCONTAIN_COMMON_BPF_H */
