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
/* IPv6 extension headers that may stand before the transport header
 * (egress.c, inbound.c walk them) */
#define PC_IPV6_HOPOPTS 0
#define PC_IPV6_ROUTING 43
#define PC_IPV6_FRAGMENT 44
#define PC_IPV6_AH 51
#define PC_IPV6_DSTOPTS 60
#define PC_IPV6_EXT_MAX 6          /* extension headers walked before the transport header */

static __always_inline int pc_ip6_ext(u32 nh)
{
	return nh == PC_IPV6_HOPOPTS || nh == PC_IPV6_ROUTING || nh == PC_IPV6_FRAGMENT || nh == PC_IPV6_AH ||
	       nh == PC_IPV6_DSTOPTS;
}

/* Bytes of the extension header nh whose length byte is hdr_len (RFC 8200:
 * 8-octet units past the first 8; AH, RFC 4302: 4-octet units past 8). */
static __always_inline u32 pc_ip6_ext_len(u32 nh, u8 hdr_len)
{
	if (nh == PC_IPV6_FRAGMENT)
		return 8;
	return nh == PC_IPV6_AH ? ((u32)hdr_len + 2) * 4 : ((u32)hdr_len + 1) * 8;
}

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

struct pc_local_key {          /* a bound inet socket: protocol, family, address, port */
	u8 proto;
	u8 family;
	u16 port;                /* host order */
	u8 addr[16];             /* network order, IPv4 in the first 4 */
};

/* socket cookie -> owner (written at connect/sendmsg, read by egress.c and
 * stratum.c) */
BPF_TABLE("lru_hash", u64, struct pc_sk_owner, pc_sk_owners, 16384);

/* What pycontain keeps on an agent socket, in the socket's own
 * bpf_sk_storage: the kernel frees it with the socket, so closing a socket
 * deletes no entry and no LRU evicts one. Made only for the sockets that
 * need it (creating one costs ~1 us, more than an LRU insert: measured,
 * docs/benchmarks.md): by egress.c for a flow past its first segments (its
 * verdict), by connect.c's sock_ops program for a TCP socket whose states
 * it follows (the owner), and by local.c's post_bind (the address the
 * agent bound, for its release hook, which may not read the socket's
 * address).
 * Relies on: bpf_sk_storage_get (5.2+; cgroup_sock and sock_ops programs)
 * returning NULL for a socket that is not a full one, and at once for a
 * socket with no storage at all (sk->sk_bpf_storage NULL). */
struct pc_sk_info {
	struct pc_sk_owner owner;  /* a followed TCP socket's owner (connect.c); agent 0: not followed */
	u64 gen;                   /* the kept verdict (egress.c): pc_net_gen it was judged under; 0: none */
	u8 daddr[16];
	u16 dport;
	u8 family;
	u8 via_lo;
	u8 bound;                  /* `local` is this socket's key in pc_local_bound (local.c) */
	u8 _pad0[3];
	struct pc_local_key local;
};
BPF_SK_STORAGE(pc_sk_infos, struct pc_sk_info);

/* TCP connections an agent accepted (inbound.c records the SYN that reached
 * its listener): their replies go to the peer's port, an ephemeral one the
 * agent did not choose, so egress.c judges them by address only, never by
 * destination-port rules (a client whose ephemeral port happened to be a
 * mining port got no SYN-ACK). LRU: an evicted entry only brings the port
 * rules back for that flow (fail closed). */
struct pc_passive_key {
	u8 family;
	u8 _pad0;
	u16 lport;               /* the agent's (listener's) port, host order */
	u16 rport;               /* the peer's port, host order */
	u16 _pad1;
	u8 raddr[16];            /* the peer's address, IPv4 in the first 4 */
};
BPF_TABLE("lru_hash", struct pc_passive_key, u8, pc_passive, 16384);
/* The local ports of those connections, one bit per port (set by
 * inbound.c, never cleared): egress.c looks pc_passive up only for a packet
 * whose source port has its bit, so the other packets (an agent's own
 * connections) pay an indexed load instead of a hash lookup. A bit left set
 * after its flows ended costs that lookup again, nothing else. */
BPF_ARRAY(pc_passive_ports, u64, 1024);

static __always_inline void pc_passive_port_add(u16 port)
{
	u32 word = port >> 6;
	u64 bit = 1ULL << (port & 63);
	u64 *w = pc_passive_ports.lookup(&word);
	if (w && !(*w & bit))
		__sync_fetch_and_or(w, bit);
}

static __always_inline int pc_passive_port(u16 port)
{
	u32 word = port >> 6;
	u64 *w = pc_passive_ports.lookup(&word);
	return w && (*w & (1ULL << (port & 63)));
}

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

/* bpf_skb_load_bytes, read straight from the linear header bytes when they
 * hold the range (no helper call: the headers of a locally sent packet are
 * there), else through the helper. n: a constant. cgroup_skb programs only
 * (egress.c, inbound.c): their data starts at the network header. */
#define PC_SKB_READ(skb, off, to, n)                                                   \
	({                                                                             \
		u8 *d_ = (u8 *)(long)(skb)->data;                                      \
		u8 *e_ = (u8 *)(long)(skb)->data_end;                                  \
		u32 o_ = (off) & 0xffff;                                               \
		int r_ = 0;                                                            \
		if (o_ < 0x1000 && d_ + o_ + (n) <= e_)                                \
			__builtin_memcpy((to), d_ + o_, (n));                          \
		else                                                                   \
			r_ = bpf_skb_load_bytes((skb), o_, (to), (n));                 \
		r_;                                                                    \
	})

/* Relies on: bpf_skb_cgroup_id()/bpf_skb_ancestor_cgroup_id() name the cgroup
 * of the socket that sent the skb (set when the socket was created), valid
 * in softirq too (retransmits), unlike the current task. */
static __always_inline u32 pc_agent_of_skb(struct __sk_buff *skb, struct pc_config *cfg, u64 *cgid)
{
	u64 id = bpf_skb_cgroup_id(skb);
	*cgid = id;
	u32 *agent = pc_agents.lookup(&id);
	if (agent)
		return *agent;
#pragma unroll
	for (int lvl = 0; lvl < PC_MAX_LEVELS; lvl++) {
		if (!((cfg->tracked_levels | cfg->birth_levels) & (1u << lvl)))
			continue;
		u64 anc = bpf_skb_ancestor_cgroup_id(skb, lvl);
		if (!anc)
			break;
		agent = pc_agents.lookup(&anc);
		if (agent)
			return *agent;
	}
	return 0;
}

/* ---- the address policy: one verdict for connect/sendmsg (connect.c) and
 * for every packet (egress.c) -------------------------------------------- */

#define PC_IPPROTO_ICMP 1
#define PC_IPPROTO_UDPLITE 136
#define PC_IPPROTO_MPTCP 262   /* MPTCP sockets report this; treated as TCP */

#define PC_ADDR_RULES 64       /* address+port rules: bits of a u64 mask */

/* Which address+port rules cover a protocol/port, as masks over the rules
 * (bit i = rule i of pc_addr_rule_ids): the verdict is bit arithmetic, no
 * loop over rules (a loop over 64 rules cost the verifier ~450k states). */
struct pc_rule_masks {
	u64 any;       /* rules without ports and protocol: every packet */
	u64 tcp_all;   /* protocol tcp, no ports */
	u64 udp_all;   /* protocol udp, no ports */
	u64 deny;      /* kind: deny */
	u64 allow;     /* kind: allow or pass */
	u64 passes;    /* kind: pass (the node's resolvers; beats deny_internal/metadata) */
};

struct pc_port_mask {
	u64 tcp;       /* rules whose ports cover this TCP port */
	u64 udp;
};

BPF_ARRAY(pc_ports, struct pc_port_rule, 65536);       /* dport (host order) -> tcp/udp rule ids */
#define PC_LPM_MAX 16384   /* entries per trie; mirrored in core/capacity.py (issue 13) */
BPF_LPM_TRIE(pc_deny4, struct pc_lpm4, u32, PC_LPM_MAX);     /* -> rule id */
BPF_LPM_TRIE(pc_allow4, struct pc_lpm4, u32, PC_LPM_MAX);
BPF_LPM_TRIE(pc_deny6, struct pc_lpm6, u32, PC_LPM_MAX);
BPF_LPM_TRIE(pc_allow6, struct pc_lpm6, u32, PC_LPM_MAX);
/* address+port rules: longest prefix -> mask of the rules whose networks
 * contain it (user space ORs the masks of enclosing prefixes into each
 * entry, so the longest match carries every rule that covers the address) */
BPF_LPM_TRIE(pc_rules4, struct pc_lpm4, u64, PC_LPM_MAX);
BPF_LPM_TRIE(pc_rules6, struct pc_lpm6, u64, PC_LPM_MAX);
BPF_ARRAY(pc_rule_masks, struct pc_rule_masks, 1);
BPF_ARRAY(pc_port_masks, struct pc_port_mask, 65536);   /* dport (host order) -> rules covering it */
BPF_ARRAY(pc_addr_rule_ids, u32, PC_ADDR_RULES);         /* bit -> rule id */
/* Rule ids of verdicts no table entry names, beyond pc_net_rules (whose
 * slots are fixed): net_maps.NAMED_SLOTS fills them by rule name. */
#define PC_NX_INTERNAL 0       /* "network.deny_internal": a pass rule beats it */
#define PC_NX_METADATA 1       /* "network.deny_metadata": likewise */
#define PC_NX_SOURCE_ROUTE 2   /* "network.source_route" */
#define PC_NX_SCAN 3           /* "network.scan" (issue 12, detect.bpf.h) */
#define PC_NX_SSH 4            /* "network.ssh" */
#define PC_NX_INBOUND 5        /* "network.inbound" (inbound.c) */
#define PC_NX_STDIO 6          /* "exec.stdio_socket" (stdio.c) */
#define PC_NX_FAMILY 7         /* "network.socket_family" (socket.c) */
#define PC_NX_SLOTS 8
BPF_ARRAY(pc_named_rules, u32, PC_NX_SLOTS);

static __always_inline u32 pc_named_rule(u32 slot)
{
	u32 *r = pc_named_rules.lookup(&slot);
	return r ? *r : 0;
}

/* What the lookups for the addresses of one destination found (per-CPU
 * scratch: the judge runs to completion on one CPU). */
struct pc_judged {
	u64 mask;      /* address rules covering any of the addresses */
	u32 hard;      /* deny trie hit, not a soft one */
	u32 soft;      /* deny trie hit by deny_internal / deny_metadata */
	u32 allowed;   /* an allow trie entry covers it */
	u32 _pad0;
};
BPF_PERCPU_ARRAY(pc_judge_scratch, struct pc_judged, 1);

static __always_inline u32 pc_norm_proto(u32 proto)
{
	if (proto == PC_IPPROTO_MPTCP)
		return IPPROTO_TCP;
	if (proto == PC_IPPROTO_UDPLITE)
		return IPPROTO_UDP;
	return proto;
}

static __always_inline u32 pc_port_rule(u16 dport, u32 proto)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	u32 p = dport;
	struct pc_port_rule *pr = pc_ports.lookup(&p);
	if (!pr)
		return 0;
	return proto == IPPROTO_TCP ? pr->tcp_rule : pr->udp_rule;
}

/* Index of the lowest set bit of x (x != 0). */
static __always_inline u32 pc_lowest_bit(u64 x)
{
	u64 low = x & -x;
	u32 i = 0;
	i |= (low & 0xffffffff00000000ULL) ? 32 : 0;
	i |= (low & 0xffff0000ffff0000ULL) ? 16 : 0;
	i |= (low & 0xff00ff00ff00ff00ULL) ? 8 : 0;
	i |= (low & 0xf0f0f0f0f0f0f0f0ULL) ? 4 : 0;
	i |= (low & 0xccccccccccccccccULL) ? 2 : 0;
	i |= (low & 0xaaaaaaaaaaaaaaaaULL) ? 1 : 0;
	return i;
}

/* The rules of `mask` (covering the address) that cover proto/dport. */
static __always_inline u64 pc_rules_covering(u64 mask, const struct pc_rule_masks *m, u32 proto, u16 dport)
{
	u64 cov = m->any;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		u32 p = dport;
		struct pc_port_mask *pm = pc_port_masks.lookup(&p);
		if (proto == IPPROTO_TCP)
			cov |= m->tcp_all | (pm ? pm->tcp : 0);
		else
			cov |= m->udp_all | (pm ? pm->udp : 0);
	}
	return mask & cov;
}

static __always_inline int pc_soft_rule(u32 rule)
{
	return rule == pc_named_rule(PC_NX_INTERNAL) || rule == pc_named_rule(PC_NX_METADATA);
}

static __always_inline void pc_trie_deny(u32 *hit, struct pc_judged *j)
{
	if (!hit || !*hit)
		return;
	if (pc_soft_rule(*hit)) {
		if (!j->soft)
			j->soft = *hit;
	} else if (!j->hard) {
		j->hard = *hit;
	}
}

/* daddr: network byte order */
static __always_inline void pc_judge4(u32 daddr, struct pc_judged *j)
{
	struct pc_lpm4 k = {};
	k.prefixlen = 32;
	__builtin_memcpy(k.addr, &daddr, 4);
	u64 *m = pc_rules4.lookup(&k);
	if (m)
		j->mask |= *m;
	pc_trie_deny(pc_deny4.lookup(&k), j);
	if (pc_allow4.lookup(&k))
		j->allowed = 1;
}

static __always_inline void pc_judge6(const u8 *addr16, struct pc_judged *j)
{
	struct pc_lpm6 k = {};
	k.prefixlen = 128;
	__builtin_memcpy(k.addr, addr16, 16);
	u64 *m = pc_rules6.lookup(&k);
	if (m)
		j->mask |= *m;
	pc_trie_deny(pc_deny6.lookup(&k), j);
	if (pc_allow6.lookup(&k))
		j->allowed = 1;
}

/* 1 when the 16 bytes (as four network-order words) are ::1. */
static __always_inline int pc_is_lo6(const u32 *w)
{
	return (w[0] | w[1] | w[2]) == 0 && w[3] == bpf_htonl(1);
}

/* The rule id that denies proto/dport to the destination, or 0.
 * fam: PC_AF_INET (addr16 holds the IPv4 address in its first 4 bytes) or
 * PC_AF_INET6. via_lo: the packet leaves through the loopback device (it is
 * for this host whatever its address says).
 *
 * Canonical destinations, judged as what they reach (docs/network.md):
 * ::ffff:a.b.c.d (mapped) by the IPv4 tables (PC_F_V4_MAPPED in *flags);
 * ::a.b.c.d (v4-compatible) by both; the unspecified address (0.0.0.0, ::),
 * every 127.0.0.0/8 address, ::1 and a packet via lo are loopback: judged
 * as themselves AND as 127.0.0.1 and ::1, so a rule about loopback holds
 * for every alias. First match: a port rule; an address deny rule; a deny trie
 * entry (deny_internal/metadata unless a pass rule covers it); under
 * default deny, no allow. */
static __always_inline u32 pc_net_judge(struct pc_config *cfg, u8 fam, const u8 *addr16,
					u32 proto, u16 dport, int via_lo, u16 *flags)
{
	proto = pc_norm_proto(proto);
	u32 r = pc_port_rule(dport, proto);
	if (r)
		return r;
	int zero = 0;
	struct pc_judged *j = pc_judge_scratch.lookup(&zero);
	if (!j)
		return pc_net_rule_slot(PC_NR_DEFAULT);   /* cannot happen; fail closed */
	__builtin_memset(j, 0, sizeof(*j));
	int loop = via_lo;
	u32 w[4] = {};
	__builtin_memcpy(w, addr16, 16);   /* addr16 is always 16 bytes */
	if (fam == PC_AF_INET6) {
		int low96 = (w[0] | w[1]) == 0;
		if (low96 && w[2] == bpf_htonl(0x0000ffff)) {
			*flags |= PC_F_V4_MAPPED;
			fam = PC_AF_INET;
			w[0] = w[3];
		} else {
			pc_judge6(addr16, j);
			if (low96 && w[2] == 0) {
				if (bpf_ntohl(w[3]) <= 1) {
					loop = 1;   /* :: and ::1 */
				} else {    /* v4-compatible ::a.b.c.d */
					fam = PC_AF_INET;
					w[0] = w[3];
				}
			}
		}
	}
	if (fam == PC_AF_INET) {
		u32 h = bpf_ntohl(w[0]);
		if ((h >> 24) == 127 || h == 0)
			loop = 1;
		pc_judge4(w[0], j);
	}
	if (loop) {
		*flags |= PC_F_LOOPBACK;
		/* the aliases, each unless it is the destination itself (judged
		 * above: the same lookup again adds nothing) */
		if (fam != PC_AF_INET || w[0] != bpf_htonl(0x7f000001))
			pc_judge4(bpf_htonl(0x7f000001), j);
		u8 lo6[16] = {};
		lo6[15] = 1;
		if (fam != PC_AF_INET6 || !pc_is_lo6(w))
			pc_judge6(lo6, j);
	}
	u64 hits = 0, allow_hits = 0, pass_hits = 0, deny_hits = 0;
	struct pc_rule_masks *m = pc_rule_masks.lookup(&zero);
	if (m && j->mask) {
		hits = pc_rules_covering(j->mask, m, proto, dport);
		deny_hits = hits & m->deny;
		allow_hits = hits & m->allow;
		pass_hits = hits & m->passes;
	}
	if (deny_hits) {
		u32 bit = pc_lowest_bit(deny_hits) & (PC_ADDR_RULES - 1);
		u32 *id = pc_addr_rule_ids.lookup(&bit);
		return id && *id ? *id : pc_net_rule_slot(PC_NR_DEFAULT);
	}
	if (j->hard)
		return j->hard;
	if (j->soft && !pass_hits)
		return j->soft;
	if ((cfg->flags & PC_CFG_NET_DEFAULT_DENY) && !j->allowed && !allow_hits)
		return pc_net_rule_slot(PC_NR_DEFAULT);
	return 0;
}

/* ---- pc_net_judge remembered per destination, per CPU -------------------
 *
 * pc_net_judge is a function of its arguments and of the rule tables and
 * config flags alone, and an agent connects to the same few destinations
 * again and again; its tries cost up to six LPM lookups (eight before the
 * alias skip) per connect and per packet. Each CPU keeps the last verdict
 * of PC_MEMO_SLOTS destinations (direct-mapped by a hash of the arguments)
 * with the rule-table generation it was judged under (pc_net_gen, bumped
 * by user space after every write of the tables and flags: net_maps.py
 * bump_generation). A slot is used only when its arguments and generation
 * match exactly, so the result is the one pc_net_judge would give under the
 * current tables; generation 0 (no tables written yet) is never used.
 *
 * Per CPU, so no other CPU writes a slot while it is read; a run that
 * interrupts another on the same CPU (softirq over process context) and
 * rewrites the slot it was using is caught by the order of reads (verdict
 * first, then the arguments, then the generation) and of writes
 * (generation cleared first, arguments checked again before it is set). */
#define PC_MEMO_SLOTS 512

struct pc_judge_memo {
	u8 addr[16];
	u16 dport;
	u8 family;
	u8 proto;       /* pc_norm_proto */
	u8 via_lo;
	u8 _pad0;
	u16 flags;      /* what pc_net_judge added to *flags */
	u32 rule;
	u32 _pad1;
	u64 gen;        /* 0: empty */
};
BPF_PERCPU_ARRAY(pc_judge_memos, struct pc_judge_memo, PC_MEMO_SLOTS);
BPF_ARRAY(pc_net_gen, u64, 1);   /* rule-table generation, bumped by user space */

static __always_inline u64 pc_net_generation(void)
{
	int zero = 0;
	u64 *g = pc_net_gen.lookup(&zero);
	return g ? *(volatile u64 *)g : 0;
}

/* 1 when the two 16-byte addresses are equal (word compares, no loop). */
static __always_inline int pc_same_addr(const u8 *a, const u8 *b)
{
	u32 x[4], y[4];
	__builtin_memcpy(x, a, 16);
	__builtin_memcpy(y, b, 16);
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

static __always_inline int pc_memo_is(const struct pc_judge_memo *m, const u32 *w, u16 dport, u8 fam,
				      u8 proto, u8 via_lo)
{
	return pc_same_addr(m->addr, (const u8 *)w) &&
	       m->dport == dport && m->family == fam && m->proto == proto && m->via_lo == via_lo;
}

/* The memo slot of these arguments. */
static __always_inline u32 pc_memo_slot(const u32 *w, u16 dport, u8 fam, u32 np, int via_lo)
{
	u32 h = (w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9e3779b1u;
	h ^= ((u32)dport << 16 | np << 8 | fam) * 0x85ebca6bu;
	h ^= (u32)via_lo;
	return (h ^ (h >> 15)) & (PC_MEMO_SLOTS - 1);
}

/* What a miss leaves for the fill after pc_net_judge, in a map value: kept
 * in registers or on the stack across the judge, the hit/miss/no-memo
 * branches before it would each carry their own state through its whole
 * body, and the verifier would walk it once per branch (it did: +0.8 s of
 * load for connect4/6 and egress). */
struct pc_memo_stash {
	u64 gen;       /* 0: nothing to fill */
	u32 slot;
	u32 _pad;
};
BPF_PERCPU_ARRAY(pc_memo_stashes, struct pc_memo_stash, 1);

static __always_inline void pc_memo_fill(u8 fam, const u8 *addr16, u32 proto, u16 dport, int via_lo,
					 u32 rule, u16 f)
{
	int zero = 0;
	struct pc_memo_stash *st = pc_memo_stashes.lookup(&zero);
	if (!st || !st->gen)
		return;
	u64 gen = st->gen;          /* read before the judge: a newer one would stamp a stale verdict */
	u32 slot = st->slot & (PC_MEMO_SLOTS - 1);
	st->gen = 0;
	struct pc_judge_memo *m = pc_judge_memos.lookup(&slot);
	if (!m)
		return;
	u32 np = pc_norm_proto(proto);
	u32 w[4];
	__builtin_memcpy(w, addr16, 16);
	*(volatile u64 *)&m->gen = 0;
	__builtin_memcpy(m->addr, w, 16);
	m->dport = dport;
	m->family = fam;
	m->proto = (u8)np;
	m->via_lo = (u8)via_lo;
	*(volatile u32 *)&m->rule = rule;
	*(volatile u16 *)&m->flags = f;
	if (pc_memo_is(m, w, dport, fam, (u8)np, (u8)via_lo) && *(volatile u32 *)&m->rule == rule &&
	    *(volatile u16 *)&m->flags == f)
		*(volatile u64 *)&m->gen = gen;
}

/* pc_net_judge, from this CPU's memo when it holds these arguments under
 * the current generation. */
static __always_inline u32 pc_net_judge_memo(struct pc_config *cfg, u8 fam, const u8 *addr16,
					     u32 proto, u16 dport, int via_lo, u16 *flags)
{
	int zero = 0;
	struct pc_memo_stash *st = pc_memo_stashes.lookup(&zero);
	if (st)
		st->gen = 0;
	u64 gen = pc_net_generation();
	u32 np = pc_norm_proto(proto);
	if (st && gen && np <= 255) {
		u32 w[4];
		__builtin_memcpy(w, addr16, 16);
		u32 slot = pc_memo_slot(w, dport, fam, np, via_lo);
		struct pc_judge_memo *m = pc_judge_memos.lookup(&slot);
		if (m) {
			u32 rule = *(volatile u32 *)&m->rule;
			u16 got = *(volatile u16 *)&m->flags;
			if (pc_memo_is(m, w, dport, fam, (u8)np, (u8)via_lo) && *(volatile u64 *)&m->gen == gen) {
				*flags |= got;
				return rule;
			}
			st->slot = slot;
			st->gen = gen;
		}
	}
	/* one call site: pc_net_judge is inlined, and each copy is verified */
	u16 f = 0;
	u32 rule = pc_net_judge(cfg, fam, addr16, proto, dport, via_lo, &f);
	*flags |= f;
	pc_memo_fill(fam, addr16, proto, dport, via_lo, rule, f);
	return rule;
}

#endif /* PYCONTAIN_NET_BPF_H */
