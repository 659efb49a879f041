/* SPDX-License-Identifier: Apache-2.0
 * Issue 14 part 3: in-kernel aggregation of routine network records (BCC C),
 * used by connect.c.
 *
 * pc_net_quiet holds destinations (agent, family, protocol, dport, daddr)
 * that USER SPACE has already seen once and judged routine: allowed in the
 * kernel, approved by the policy, and hit by no user-space rule
 * (Engine.routine_net). Only user space inserts keys (app/routine.py); the
 * kernel never adds one. An allowed connect/send to such a destination is
 * counted here instead of being sent as a record, and the TCP states of its
 * socket are not reported either (core/engine.py has no use for TCP states;
 * they feed only the audit log and events_total).
 *
 * Never aggregated: anything with a verdict. connect.c calls pc_quiet_hit only
 * after pc_net_judge, the scan limits (detect.bpf.h: they still see every
 * connect, new destinations included) and the loopback-service rule gave
 * PC_ALLOW. A reload or new DNS answers empty the map (user space), so a
 * destination the new policy no longer approves is reported again.
 *
 * Fail-safe direction: a missing key (never seen, LRU-evicted, expired by
 * user space after its idle window) means a record is emitted, as before.
 * What can be lost is count, never a record that would have carried a
 * decision: an entry evicted between two reads loses the increments since
 * the last read.
 */
#ifndef PYCONTAIN_AGGREGATE_BPF_H
#define PYCONTAIN_AGGREGATE_BPF_H

#include "net.bpf.h"

struct pc_quiet_key {
	u32 agent;
	u8 family;
	u8 proto;      /* pc_norm_proto */
	u16 dport;     /* host order, as in the record */
	u8 daddr[16];  /* as in the record: IPv4 in the first 4 bytes */
};

struct pc_quiet_val {
	u64 count;     /* records not sent (connect/send); user space diffs it, and
			* a count that stopped growing tells it the destination is
			* idle (no clock read here: it cost ~100 ns a connect) */
};

#define PC_QUIET_ENTRIES 16384
BPF_TABLE("lru_hash", struct pc_quiet_key, struct pc_quiet_val, pc_net_quiet, PC_QUIET_ENTRIES);

static __always_inline struct pc_quiet_val *pc_quiet_find(u32 agent, u8 family, u8 proto, u16 dport,
							  const u8 *daddr16)
{
	struct pc_quiet_key k = {};
	k.agent = agent;
	k.family = family;
	k.proto = proto;
	k.dport = dport;
	__builtin_memcpy(k.daddr, daddr16, 16);
	return pc_net_quiet.lookup(&k);
}

/* 1 when an ALLOWED connect/send to this destination is counted instead of
 * reported. Call only with verdict PC_ALLOW. */
static __always_inline int pc_quiet_hit(u32 agent, u8 family, u32 proto, u16 dport, const u8 *daddr16)
{
	struct pc_quiet_val *v = pc_quiet_find(agent, family, (u8)pc_norm_proto(proto), dport, daddr16);
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->count, 1);
	return 1;
}

/* 1 when a new TCP socket of `agent` goes to a quiet destination: its
 * ESTABLISHED/CLOSE records are then not sent (the connect was counted). */
static __always_inline int pc_quiet_tcp(u32 agent, u8 family, u16 dport, const u8 *daddr16)
{
	return pc_quiet_find(agent, family, IPPROTO_TCP, dport, daddr16) != 0;
}

#endif /* PYCONTAIN_AGGREGATE_BPF_H */
