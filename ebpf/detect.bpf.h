/* SPDX-License-Identifier: Apache-2.0
 * Issue 12: scan detection and SSH recognition (BCC C), shared by connect.c
 * (early EPERM at connect/sendmsg) and egress.c (every packet).
 *
 * Scan detection: per agent, the distinct destination hosts and, per host,
 * the distinct ports within a sliding window. Past pc_scan_limits the kernel
 * refuses further NEW destinations (known ones keep working: an agent past
 * the limit is not cut off from the hosts it already talks to). The sliding
 * count is estimated from two fixed windows, the current one and the one
 * before, weighted by how much of it still lies in the last window_ns (the
 * rate limiters' sliding-window counter): a scan timed across a window
 * boundary is counted with what it did just before it, so it gets no second
 * allowance. Loopback is not counted (node-local services are
 * network.local_services' business, issue 10).
 *
 * State in LRU hashes: under memory pressure the LRU evicts the oldest
 * entries; an evicted per-agent counter restarts at zero, so an agent
 * opening more than PC_SCAN_ENTRIES destinations inside one window could
 * reset its own count. The per-agent counter map is sized for every agent
 * (PC_AGENTS_MAX) and is a plain hash: it is never evicted.
 *
 * SSH: a TCP segment whose payload starts with "SSH-2.0-" or "SSH-1.99-"
 * (the identification string RFC 4253 §4.2 requires first on the stream)
 * is an SSH session, whatever the program and port. With PC_CFG_SSH the
 * destination must be in pc_ssh_allow4/6 (or loopback), else the segment
 * is dropped: the session cannot start.
 */
#ifndef PYCONTAIN_DETECT_BPF_H
#define PYCONTAIN_DETECT_BPF_H

#include "net.bpf.h"

struct pc_scan_limits {
	u32 max_hosts;    /* new hosts per agent per window */
	u32 max_ports;    /* distinct ports per host per window */
	u64 window_ns;
};
BPF_ARRAY(pc_scan_limits, struct pc_scan_limits, 1);

struct pc_scan_host_key {
	u32 agent;
	u32 _pad0;
	u8 addr[16];
};

struct pc_scan_port_key {
	u32 agent;
	u16 port;
	u8 proto;
	u8 _pad0;
	u8 addr[16];
};

struct pc_scan_count {
	u64 start_ns;     /* start of the current fixed window */
	u32 n;            /* hosts (per agent) / ports (per host) in this window */
	u32 prev;         /* the same in the window before it */
};

#define PC_SCAN_ENTRIES 65536
BPF_HASH(pc_scan_agents, u32, struct pc_scan_count, PC_AGENTS_MAX);
BPF_TABLE("lru_hash", struct pc_scan_host_key, struct pc_scan_count, pc_scan_hosts, PC_SCAN_ENTRIES);
BPF_TABLE("lru_hash", struct pc_scan_port_key, u64, pc_scan_ports, PC_SCAN_ENTRIES);

/* Count one new item in c; 1 when the sliding count over the last `window`
 * is already at `max`. */
static __always_inline int pc_scan_count_new(struct pc_scan_count *c, u64 now, u64 window, u32 max)
{
	u64 age = now - c->start_ns;
	if (age >= window) {
		/* roll over: the window that ended is the previous one, unless a
		 * whole window passed idle (then nothing of it is in the last one) */
		int adjacent = age < 2 * window;
		c->prev = adjacent ? c->n : 0;
		c->start_ns = adjacent ? c->start_ns + window : now;
		c->n = 0;
		age = now - c->start_ns;
	}
	/* the previous window's items, weighted by its share still inside
	 * [now - window, now], plus this window's */
	u64 sliding = (u64)c->prev * (window - age) / window + c->n;
	if (sliding >= max)
		return 1;
	__sync_fetch_and_add(&c->n, 1);
	return 0;
}

/* The rule id refusing a new destination of `agent` (network.scan), or 0.
 * addr16: 16 bytes, IPv4 in the first 4 (fam PC_AF_INET). loop: the
 * destination was judged loopback (not counted). */
static __always_inline u32 pc_scan_judge(struct pc_config *cfg, u32 agent, u8 fam, const u8 *addr16,
					 u32 proto, u16 dport, int loop)
{
	if (!(cfg->flags & PC_CFG_SCAN) || loop || !agent)
		return 0;
	int zero = 0;
	struct pc_scan_limits *lim = pc_scan_limits.lookup(&zero);
	if (!lim || !lim->window_ns)
		return 0;
	u64 now = bpf_ktime_get_boot_ns();
	struct pc_scan_port_key pk = {};
	pk.agent = agent;
	pk.port = dport;
	pk.proto = (u8)pc_norm_proto(proto);
	if (fam == PC_AF_INET)
		__builtin_memcpy(pk.addr, addr16, 4);
	else
		__builtin_memcpy(pk.addr, addr16, 16);
	u64 *seen = pc_scan_ports.lookup(&pk);
	if (seen && now - *seen < lim->window_ns) {
		*seen = now;
		return 0;   /* a known destination: never refused */
	}
	struct pc_scan_host_key hk = {};
	hk.agent = agent;
	__builtin_memcpy(hk.addr, pk.addr, 16);
	struct pc_scan_count *host = pc_scan_hosts.lookup(&hk);
	if (!host || now - host->start_ns >= 2 * lim->window_ns) {
		/* a host with nothing in the last window (its count would have
		 * rolled to zero): new for the agent's host count. A host still in
		 * the sliding window keeps its entry, which rolls in
		 * pc_scan_count_new: its ports are not a fresh allowance. */
		struct pc_scan_count fresh = {};
		fresh.start_ns = now;
		struct pc_scan_count *ac = pc_scan_agents.lookup(&agent);
		if (!ac) {
			pc_scan_agents.update(&agent, &fresh);
			ac = pc_scan_agents.lookup(&agent);
			if (!ac)
				return pc_named_rule(PC_NX_SCAN);   /* cannot count: fail closed */
		}
		if (pc_scan_count_new(ac, now, lim->window_ns, lim->max_hosts))
			return pc_named_rule(PC_NX_SCAN);
		pc_scan_hosts.update(&hk, &fresh);
		host = pc_scan_hosts.lookup(&hk);
		if (!host)
			return pc_named_rule(PC_NX_SCAN);
	}
	if (pc_scan_count_new(host, now, lim->window_ns, lim->max_ports))
		return pc_named_rule(PC_NX_SCAN);
	pc_scan_ports.update(&pk, &now);
	return 0;
}

/* ---- SSH ---------------------------------------------------------------- */

BPF_LPM_TRIE(pc_ssh_allow4, struct pc_lpm4, u32, 1024);
BPF_LPM_TRIE(pc_ssh_allow6, struct pc_lpm6, u32, 1024);

/* 1 when the 9 bytes b start an SSH identification string. */
static __always_inline int pc_is_ssh_banner(const u8 *b)
{
	if (b[0] != 'S' || b[1] != 'S' || b[2] != 'H' || b[3] != '-')
		return 0;
	if (b[4] == '2' && b[5] == '.' && b[6] == '0' && b[7] == '-')
		return 1;
	return b[4] == '1' && b[5] == '.' && b[6] == '9' && b[7] == '9' && b[8] == '-';
}

/* The rule id refusing an SSH session to the destination (network.ssh), or
 * 0: loopback and the pc_ssh_allow tries pass. */
static __always_inline u32 pc_ssh_judge(struct pc_config *cfg, u8 fam, const u8 *addr16, int loop)
{
	if (!(cfg->flags & PC_CFG_SSH) || loop)
		return 0;
	if (fam == PC_AF_INET) {
		struct pc_lpm4 k = {};
		k.prefixlen = 32;
		__builtin_memcpy(k.addr, addr16, 4);
		if (pc_ssh_allow4.lookup(&k))
			return 0;
	} else {
		struct pc_lpm6 k = {};
		k.prefixlen = 128;
		__builtin_memcpy(k.addr, addr16, 16);
		if (pc_ssh_allow6.lookup(&k))
			return 0;
	}
	return pc_named_rule(PC_NX_SSH);
}

#endif /* PYCONTAIN_DETECT_BPF_H */
