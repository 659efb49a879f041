/* SPDX-License-Identifier: Apache-2.0
 * Inbound policy of agent listeners (issue 12 part 4) (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py). cgroup_skb/ingress on each
 * agent cgroup: a TCP SYN (no ACK: a new connection, not a reply) to an
 * agent socket from a source the policy does not admit is dropped, so a
 * listener on 0.0.0.0 is not reachable from outside:
 *   PC_CFG_INBOUND_LOOPBACK: only loopback sources (127.0.0.0/8, ::1,
 *     ::ffff:127.x, or a packet that arrived through lo: the node itself);
 *   PC_CFG_INBOUND_DENY: no source at all;
 *   neither: every source (network.inbound: allow).
 * Replies an agent listener sends to a peer the address policy denies are
 * dropped by egress.c. Rule network.inbound; one PC_EV_PACKET record per
 * listener per second (daddr/dport: the agent's address and port,
 * saddr/sport: the remote peer). Monitor mode: passed, PC_WOULD_DENY.
 * IPv6 extension headers before TCP are walked (six at most; a packet with
 * more from outside the node is dropped: it may be a SYN).
 * Limit: UDP has no connection to tell a request from a reply; an agent's
 * UDP socket gets what its peers send (its sends are judged by egress).
 */

#include "net.bpf.h"

#define PC_IN_LOOPBACK_IFINDEX 1
#define PC_IN_OPAQUE (-2)        /* extension headers past PC_IPV6_EXT_MAX: the transport is unknown */
#define PC_IN_REPORT_NS 1000000000ULL

BPF_TABLE("lru_hash", u64, u64, pc_inbound_seen, 4096);   /* socket cookie -> last report */

struct pc_in_pkt {
	u8 saddr[16];
	u8 daddr[16];
	u16 sport;
	u16 dport;
	u8 family;
	u8 loop;
	u8 syn;        /* SYN without ACK */
};

/* The transport header's protocol past the extension headers, its offset
 * in *off. Relies on: ingress runs after IPv6 reassembly and after the
 * kernel skipped those headers itself (ip6_input: it delivers to TCP
 * whatever options the sender put first; a remote host may add them). */
static __always_inline int pc_in_ip6_transport(struct __sk_buff *skb, u32 nh, u32 *off)
{
#pragma unroll
	for (int k = 0; k < PC_IPV6_EXT_MAX; k++) {
		if (!pc_ip6_ext(nh))
			return nh;
		u8 ext[2];
		if (PC_SKB_READ(skb, *off, ext, sizeof(ext)) < 0)
			return PC_IN_OPAQUE;
		*off += pc_ip6_ext_len(nh, ext[1]);
		nh = ext[0];
	}
	return pc_ip6_ext(nh) ? PC_IN_OPAQUE : (int)nh;
}

static __always_inline int pc_in_parse(struct __sk_buff *skb, struct pc_in_pkt *p)
{
	u32 l4off;
	if (skb->protocol == bpf_htons(0x0800)) {
		u8 ip[20];
		if (PC_SKB_READ(skb, 0, ip, sizeof(ip)) < 0 || ip[9] != IPPROTO_TCP)
			return -1;
		if (((ip[6] & 0x1f) << 8 | ip[7]) != 0)
			return -1;   /* non-first fragment: no TCP header */
		p->family = PC_AF_INET;
		__builtin_memcpy(p->saddr, &ip[12], 4);
		__builtin_memcpy(p->daddr, &ip[16], 4);
		p->loop = ip[12] == 127;
		l4off = (ip[0] & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		u8 ip6[40];
		if (PC_SKB_READ(skb, 0, ip6, sizeof(ip6)) < 0)
			return -1;
		l4off = 40;
		int nh = pc_in_ip6_transport(skb, ip6[6], &l4off);
		if (nh == PC_IN_OPAQUE)
			return PC_IN_OPAQUE;
		if (nh != IPPROTO_TCP)
			return -1;
		p->family = PC_AF_INET6;
		__builtin_memcpy(p->saddr, &ip6[8], 16);
		__builtin_memcpy(p->daddr, &ip6[24], 16);
		u32 w[4] = {};
		__builtin_memcpy(w, p->saddr, 16);
		int low = (w[0] | w[1]) == 0;
		p->loop = (low && w[2] == 0 && w[3] == bpf_htonl(1)) ||
			  (low && w[2] == bpf_htonl(0x0000ffff) && p->saddr[12] == 127);
	} else {
		return -1;
	}
	u8 tcp[14];
	if (PC_SKB_READ(skb, l4off & 0x3fff, tcp, sizeof(tcp)) < 0)
		return -1;
	p->sport = (u16)tcp[0] << 8 | tcp[1];
	p->dport = (u16)tcp[2] << 8 | tcp[3];
	p->syn = (tcp[13] & 0x12) == 0x02;
	p->loop |= skb->ifindex == PC_IN_LOOPBACK_IFINDEX;
	return 0;
}

static __always_inline void pc_in_report(struct __sk_buff *skb, u32 agent, u64 cgid, u8 verdict,
					 const struct pc_in_pkt *p)
{
	u64 cookie = pc_socket_cookie(skb);
	u64 now = bpf_ktime_get_boot_ns();
	u64 *last = pc_inbound_seen.lookup(&cookie);
	if (last && now - *last < PC_IN_REPORT_NS)
		return;
	pc_inbound_seen.update(&cookie, &now);
	struct pc_net *e = PC_RESERVE_FOR(struct pc_net, agent, 1);
	if (!e)
		return;
	pc_fill_header_owner(&e->h, PC_EV_PACKET, 0, agent, cgid);
	e->h.verdict = verdict;
	e->h.rule_id = pc_named_rule(PC_NX_INBOUND);
	pc_fill_net(e, p->family, IPPROTO_TCP, p->dport, p->sport, p->daddr, p->saddr);
	pc_submit(e, &e->h);
}

/* The flow this SYN opens, for egress.c's reply judgement (pc_passive). */
static __always_inline void pc_note_passive(const struct pc_in_pkt *p)
{
	struct pc_passive_key k = {};
	k.family = p->family;
	k.lport = p->dport;
	k.rport = p->sport;
	__builtin_memcpy(k.raddr, p->saddr, 16);
	u8 one = 1;
	pc_passive.update(&k, &one);
	pc_passive_port_add(p->dport);   /* before the reply: TCP answers this SYN after the hook */
}

/* A packet with more IPv6 extension headers than walked may be a SYN: an
 * agent socket under a restricted inbound policy does not get it from
 * outside the node (fail closed). */
static __always_inline int pc_in_opaque(struct __sk_buff *skb, struct pc_config *cfg)
{
	if (skb->ifindex == PC_IN_LOOPBACK_IFINDEX || !(cfg->flags & (PC_CFG_INBOUND_DENY | PC_CFG_INBOUND_LOOPBACK)))
		return 1;
	u64 cgid = 0;
	if (!pc_agent_of_skb(skb, cfg, &cgid))
		return 1;
	return pc_deny_verdict(cfg) != PC_DENY;
}

/* Relies on: cgroup_skb ingress programs run from sk_filter on the socket
 * that receives the packet (for a SYN: the listener), with skb->sk set to
 * it during the run, so bpf_skb_cgroup_id() names the listener's cgroup;
 * the data starts at the network header; returning 0 drops the packet
 * before TCP sees it (no SYN-ACK, no accept). */
int pc_inbound(struct __sk_buff *skb)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg)
		return 1;
	/* the SYN test first: it reads the packet, the agent test a hash map,
	 * and every other segment of a connection passes either way */
	struct pc_in_pkt p = {};
	int parsed = pc_in_parse(skb, &p);
	if (parsed == PC_IN_OPAQUE)
		return pc_in_opaque(skb, cfg);
	if (parsed < 0 || !p.syn)
		return 1;
	u64 cgid = 0;
	u32 agent = pc_agent_of_skb(skb, cfg, &cgid);
	if (!agent)
		return 1;
	/* refused: every SYN under inbound deny, a non-loopback one under
	 * inbound loopback (only loopback peers may connect) */
	u8 verdict = PC_ALLOW;
	if ((cfg->flags & PC_CFG_INBOUND_DENY) || (!p.loop && (cfg->flags & PC_CFG_INBOUND_LOOPBACK))) {
		verdict = pc_deny_verdict(cfg);
		pc_in_report(skb, agent, cgid, verdict, &p);
	}
	if (verdict != PC_DENY)
		pc_note_passive(&p);
	return verdict != PC_DENY;
}
