/* SPDX-License-Identifier: Apache-2.0
 * What the network hooks share (BCC C): connect.c, socket.c and stratum.c
 * include this header. Rule slots for verdicts no table entry names, the
 * owner of a socket recorded at connect/sendmsg (read by stratum.c, whose
 * cgroup_skb program cannot ask the current task), and record fills.
 */
#ifndef PYCONTAIN_NET_BPF_H
#define PYCONTAIN_NET_BPF_H

#include "common.bpf.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#define PC_AF_INET 2
#define PC_AF_INET6 10

/* Slots of pc_net_rules: rule ids for verdicts that no table entry names.
 * pycontain/kernel/net_maps.py fills them from KernelTables.rules by name. */
#define PC_NR_DEFAULT 0   /* "network.default"       */
#define PC_NR_STRATUM 1   /* "network.stratum"       */
#define PC_NR_RAW 2       /* "network.raw_socket"    */
#define PC_NR_PACKET 3    /* "network.packet_socket" */
#define PC_NR_SLOTS 4

BPF_ARRAY(pc_net_rules, u32, PC_NR_SLOTS);

static __always_inline u32 pc_net_rule_slot(u32 slot)
{
	u32 *r = pc_net_rules.lookup(&slot);
	return r ? *r : 0;
}

/* Who opened a socket, captured in process context so that hooks running
 * in softirq (TCP state changes, skb egress retransmits) can name the
 * process. */
struct pc_sk_owner {
	u32 agent;
	u32 pid;
	u32 tid;
	u32 uid;
	u64 cgroup_id;
	char comm[PC_COMM_LEN];
};

/* socket cookie -> owner (written at connect/sendmsg, read by stratum.c) */
BPF_TABLE("lru_hash", u64, struct pc_sk_owner, pc_sk_owners, 16384);

/* BCC 0.26 declares this helper as returning u32; the cookie is a u64. */
static u64 (*pc_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

/* The header of a record about a socket, from its recorded owner rather than
 * the current task (this may run in softirq, where current is whatever task
 * the packet interrupted). o may be NULL (owner unknown): pid, tid, uid and
 * comm are then 0. agent and cgroup_id are given: the caller may know better
 * than the owner record. */
static __always_inline void pc_fill_header_owner(struct pc_header *h, u8 type,
						 const struct pc_sk_owner *o,
						 u32 agent, u64 cgroup_id)
{
	pc_fill_header_with(h, type, agent, o ? o->pid : 0, o ? o->tid : 0,
			    o ? o->uid : 0, cgroup_id);
	if (o)
		__builtin_memcpy(h->comm, o->comm, PC_COMM_LEN);
	else
		__builtin_memset(h->comm, 0, PC_COMM_LEN);
}

/* The address part of a connect/send/stratum record. daddr16/saddr16:
 * 16 bytes, network byte order, IPv4 in the first 4; ports in host order. */
static __always_inline void pc_fill_net(struct pc_net *n, u8 family, u8 protocol,
					u16 dport, u16 sport,
					const u8 *daddr16, const u8 *saddr16)
{
	n->family = family;
	n->protocol = protocol;
	n->dport = dport;
	n->sport = sport;
	n->_pad0 = 0;
	__builtin_memcpy(n->daddr, daddr16, 16);
	__builtin_memcpy(n->saddr, saddr16, 16);
}

#endif /* PYCONTAIN_NET_BPF_H */
