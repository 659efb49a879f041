/* SPDX-License-Identifier: Apache-2.0
 * Every packet of an agent judged on its real destination (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py). cgroup_skb/egress on each
 * agent cgroup (pycontain/kernel/cgroup_attach.py, BPF_F_ALLOW_MULTI).
 * connect.c judges the address a program passes to connect()/sendmsg();
 * what leaves can differ: ICMP echo on a ping socket (no connect/sendmsg
 * hook runs), a source-routed IPv4 packet or an IPv6 routing header (the
 * header names the first hop, the call named the last), replies on a
 * connection accepted from outside (a bind shell: no connect at all),
 * subflows the kernel opens for an MPTCP socket (a kernel worker). Here the
 * IP header is read as it leaves and pc_net_judge (net.bpf.h, the same
 * verdict connect.c uses) decides on its destination, protocol and port:
 *   - IPv4 packets with a loose or strict source route option, and IPv6
 *     packets with a routing header, are dropped (rule
 *     network.source_route, PC_F_SOURCE_ROUTED);
 *   - a packet leaving through the loopback device is judged as loopback;
 *   - a non-first fragment is passed: its first fragment carries the
 *     transport header and was judged; without it nothing reassembles.
 * Deny: return 0 (dropped before the device), one PC_EV_PACKET record per
 * socket per second. Monitor mode: passed, reported PC_WOULD_DENY.
 */

#include "net.bpf.h"
#include "detect.bpf.h"

#define PC_EG_ETH_P_IP 0x0800
#define PC_EG_ETH_P_IPV6 0x86DD
#define PC_IPOPT_LSRR 0x83
#define PC_IPOPT_SSRR 0x89
#define PC_LOOPBACK_IFINDEX 1       /* lo is ifindex 1 in every network namespace */
#define PC_PKT_REPORT_NS 1000000000ULL

/* What the packet is: destination, protocol, port, and whether its route
 * was chosen by the sender (source route / routing header). */
struct pc_pkt {
	u8 daddr[16];
	u8 saddr[16];
	u32 proto;
	u32 l4off;
	u16 dport;
	u16 sport;
	u8 family;
	u8 routed;      /* a source route option / routing header */
	u8 later_frag;  /* a non-first fragment: no transport header */
	u8 tcp_flags;   /* issue 12: TCP flags byte (SYN 0x02, ACK 0x10) */
	u32 payoff;     /* issue 12: TCP payload offset */
};

BPF_TABLE("lru_hash", u64, u64, pc_pkt_seen, 8192);   /* socket cookie -> last report */

/* 1 when the IPv4 options (ihl > 5) hold a loose or strict source route.
 * Options are type-length-value except EOL (0) and NOP (1). */
struct pc_ip_opts {
	u8 b[64];
};
BPF_PERCPU_ARRAY(pc_ip_opts_buf, struct pc_ip_opts, 1);   /* too big to zero on the stack */

static __always_inline int pc_ip4_source_routed(struct __sk_buff *skb, u32 hlen)
{
	u32 n = hlen - 20;
	if (n == 0)
		return 0;
	n &= 63;
	if (n == 0 || n > 40)
		return 1;   /* ihl is 4 bits: cannot happen; fail closed */
	int zero = 0;
	struct pc_ip_opts *o = pc_ip_opts_buf.lookup(&zero);
	if (!o)
		return 1;
	u8 *opt = o->b;
	if (bpf_skb_load_bytes(skb, 20, opt, n) < 0)
		return 1;   /* unreadable options: fail closed */
	u32 i = 0;
	for (int k = 0; k < 40; k++) {
		if (i >= n)
			break;
		u8 t = opt[i & 63];
		if (t == 0)
			break;
		if (t == PC_IPOPT_LSRR || t == PC_IPOPT_SSRR)
			return 1;
		if (t == 1) {
			i++;
			continue;
		}
		u32 l = opt[(i + 1) & 63];
		if (l < 2)
			return 1;   /* malformed: fail closed */
		i += l;
	}
	return 0;
}

static __always_inline int pc_pkt_ip4(struct __sk_buff *skb, struct pc_pkt *p)
{
	u8 ip[20];
	if (PC_SKB_READ(skb, 0, ip, sizeof(ip)) < 0)
		return -1;
	u32 hlen = (ip[0] & 0xf) * 4;
	if (hlen < 20)
		return -1;
	p->family = PC_AF_INET;
	p->proto = ip[9];
	__builtin_memcpy(p->saddr, &ip[12], 4);
	__builtin_memcpy(p->daddr, &ip[16], 4);
	p->later_frag = (((ip[6] & 0x1f) << 8) | ip[7]) != 0;
	p->routed = pc_ip4_source_routed(skb, hlen);
	p->l4off = hlen;
	return 0;
}

/* Walk the IPv6 extension headers to the transport header. */
static __always_inline int pc_pkt_ip6(struct __sk_buff *skb, struct pc_pkt *p)
{
	u8 ip6[40];
	if (bpf_skb_load_bytes(skb, 0, ip6, sizeof(ip6)) < 0)
		return -1;
	p->family = PC_AF_INET6;
	__builtin_memcpy(p->saddr, &ip6[8], 16);
	__builtin_memcpy(p->daddr, &ip6[24], 16);
	u32 nh = ip6[6];
	u32 off = 40;
#pragma unroll
	for (int k = 0; k < PC_IPV6_EXT_MAX; k++) {
		if (nh == PC_IPV6_ROUTING) {
			p->routed = 1;
			break;
		}
		if (!pc_ip6_ext(nh))
			break;
		u8 ext[4];
		if (bpf_skb_load_bytes(skb, off & 0xffff, ext, sizeof(ext)) < 0)
			return -1;
		if (nh == PC_IPV6_FRAGMENT && ((((u32)ext[2] << 8) | ext[3]) & 0xfff8))
			p->later_frag = 1;
		off += pc_ip6_ext_len(nh, ext[1]);
		nh = ext[0];
	}
	p->proto = nh;
	p->l4off = off;
	return 0;
}

static __always_inline int pc_pkt_parse(struct __sk_buff *skb, struct pc_pkt *p)
{
	int r;
	if (skb->protocol == bpf_htons(PC_EG_ETH_P_IP))
		r = pc_pkt_ip4(skb, p);
	else if (skb->protocol == bpf_htons(PC_EG_ETH_P_IPV6))
		r = pc_pkt_ip6(skb, p);
	else
		return -1;
	if (r < 0 || p->routed || p->later_frag)
		return r;
	u32 proto = pc_norm_proto(p->proto);
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		u8 ports[4];
		if (PC_SKB_READ(skb, p->l4off, ports, sizeof(ports)) < 0)
			return -1;
		p->sport = (u16)ports[0] << 8 | ports[1];
		p->dport = (u16)ports[2] << 8 | ports[3];
	}
	if (proto == IPPROTO_TCP) {
		u8 off_flags[2];
		if (PC_SKB_READ(skb, p->l4off + 12, off_flags, sizeof(off_flags)) < 0)
			return -1;
		p->payoff = p->l4off + (off_flags[0] >> 4) * 4;
		p->tcp_flags = off_flags[1];
	}
	return 0;
}

static __always_inline int pc_pkt_report_due(u64 cookie)
{
	u64 now = bpf_ktime_get_boot_ns();
	u64 *last = pc_pkt_seen.lookup(&cookie);
	if (last && now - *last < PC_PKT_REPORT_NS)
		return 0;
	pc_pkt_seen.update(&cookie, &now);
	return 1;
}

/* The record of a denied packet. The header names the socket's owner
 * recorded at connect/sendmsg when there is one; otherwise the current task
 * when the packet is not TCP (ICMP/UDP/raw are sent from the sending
 * syscall, in its task), else no task (pid 0): TCP may run in softirq. */
static __always_inline void pc_pkt_report(struct __sk_buff *skb, u32 agent, u64 cgid, u8 verdict,
					  u32 rule, u16 flags, const struct pc_pkt *p)
{
	u64 cookie = pc_socket_cookie(skb);
	struct pc_sk_owner *o = pc_sk_owners.lookup(&cookie);
	/* monitor mode: a socket connect/sendmsg judged (it has an owner) was
	 * reported there with the same verdict; its packets are not news */
	if (verdict == PC_WOULD_DENY && o)
		return;
	if (!pc_pkt_report_due(cookie))
		return;
	struct pc_net *e = PC_RESERVE(struct pc_net);
	if (!e)
		return;
	if (o || pc_norm_proto(p->proto) == IPPROTO_TCP) {
		pc_fill_header_owner(&e->h, PC_EV_PACKET, o, agent, cgid);
	} else {
		pc_fill_header(&e->h, PC_EV_PACKET, agent);
		e->h.cgroup_id = cgid;
	}
	e->h.verdict = verdict;
	e->h.rule_id = rule;
	e->h.flags = flags;
	pc_fill_net(e, p->family, (u8)pc_norm_proto(p->proto), p->dport, p->sport, p->daddr, p->saddr);
	pc_submit(e, &e->h);
}

/* 1 when w's first n (1-8) bytes, in memory order, could begin an SSH
 * identification string. */
static __always_inline int pc_ssh_prefix(u64 w, u32 n)
{
	u64 v2, v1;
	__builtin_memcpy(&v2, "SSH-2.0-", 8);
	__builtin_memcpy(&v1, "SSH-1.99", 8);
	u64 mask = ~0ULL >> ((64 - 8 * n) & 63);   /* little endian: the first n bytes */
	return ((w ^ v2) & mask) == 0 || ((w ^ v1) & mask) == 0;
}

/* 1 when the segment carries the stream's first byte: it is the oldest
 * unacknowledged one and no data has been acknowledged yet (bytes_acked
 * counts the SYN on the connecting side). Relies on: bpf_tcp_sock (5.1+)
 * reading tcp_sock's snd_una and bytes_acked, which tcp_snd_una_update
 * advances together. */
static __always_inline int pc_stream_start(struct __sk_buff *skb, const struct pc_pkt *p)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	u32 seq;
	if (!tp || bpf_skb_load_bytes(skb, (p->l4off + 4) & 0xffff, &seq, 4) != 0)
		return 0;
	return bpf_ntohl(seq) == tp->snd_una && tp->bytes_acked <= 1;
}

/* 1 when the segment's payload starts with an SSH identification string
 * and SSH sessions are judged (network.ssh). sshd reads the banner from the
 * stream, so a relay may split it ("S", then "SH-2.0-..."): a segment of
 * fewer than 9 bytes that begins the stream and could begin a banner counts
 * as one. Dropped, it is sent again merged with what followed
 * (tcp_retrans_try_collapse) and judged whole; nothing after it reaches
 * sshd meanwhile. Only such segments pay for the socket lookup. */
static __always_inline int pc_ssh_payload(struct __sk_buff *skb, struct pc_config *cfg, const struct pc_pkt *p)
{
	if (!(cfg->flags & PC_CFG_SSH) || skb->len <= p->payoff)
		return 0;
	u8 b[9];
	u32 n = skb->len - p->payoff;
	if (n >= 9)
		return bpf_skb_load_bytes(skb, p->payoff & 0xffff, b, sizeof(b)) == 0 && pc_is_ssh_banner(b);
	/* the packet's last 8 bytes (headers before a short payload make 8):
	 * a fixed-size load, where a variable one cost the verifier 2.5x */
	u64 w;
	if (bpf_skb_load_bytes(skb, (skb->len - 8) & 0xffff, &w, 8) != 0)
		return 0;
	w >>= (8 * (8 - n)) & 63;
	return (u8)w == 'S' && pc_ssh_prefix(w, n) && pc_stream_start(skb, p);
}

/* 1 when the segment's payload may hold (the start of) an SSH banner: the
 * kept verdict's fast path leaves those to pc_ssh_payload. */
static __always_inline int pc_maybe_ssh(struct __sk_buff *skb, struct pc_config *cfg, const struct pc_pkt *p)
{
	u8 c = 0;
	return (cfg->flags & PC_CFG_SSH) && skb->len > p->payoff &&
	       bpf_skb_load_bytes(skb, p->payoff & 0xffff, &c, 1) == 0 && c == 'S';
}

/* Issue 12: scan detection on a new TCP flow (a SYN without ACK: connect
 * counted it first; this catches SYNs no connect hook saw) and SSH on the
 * first bytes of a TCP segment. Returns a rule id or 0. The agent is looked
 * up here only for a SYN the scan limits count (*agent 0: not yet looked
 * up; still 0 after: not an agent's socket, nothing to count). */
static __always_inline u32 pc_egress_detect(struct __sk_buff *skb, struct pc_config *cfg, u32 *agent, u64 *cgid,
					    const struct pc_pkt *p, u16 *flags)
{
	if (pc_norm_proto(p->proto) != IPPROTO_TCP)
		return 0;
	int loop = (*flags & PC_F_LOOPBACK) != 0;
	/* a Fast Open SYN carries the stream's first bytes: judged as data (its
	 * connect() passed the connect hook, which counted the destination) */
	if ((p->tcp_flags & 0x12) == 0x02 && skb->len <= p->payoff) {
		if (!(cfg->flags & PC_CFG_SCAN) || loop)
			return 0;   /* what pc_scan_judge answers before it needs the agent */
		*agent = pc_agent_of_skb(skb, cfg, cgid);
		return pc_scan_judge(cfg, *agent, p->family, p->daddr, p->proto, p->dport, loop);
	}
	if (!pc_ssh_payload(skb, cfg, p))
		return 0;
	*flags |= PC_F_SSH;
	return pc_ssh_judge(cfg, p->family, p->daddr, loop);
}

/* A reply of a TCP connection the agent accepted (pc_passive, inbound.c):
 * its destination port is the peer's, which the agent did not choose. */
static __always_inline int pc_passive_reply(const struct pc_pkt *p)
{
	if (pc_norm_proto(p->proto) != IPPROTO_TCP)
		return 0;
	if (!pc_passive_port(p->sport))
		return 0;   /* no accepted connection has this local port */
	struct pc_passive_key k = {};
	k.family = p->family;
	k.lport = p->sport;
	k.rport = p->dport;
	__builtin_memcpy(k.raddr, p->daddr, 16);
	return pc_passive.lookup(&k) != 0;
}

/* ---- the verdict of an established flow, kept on its socket ---------------
 *
 * A TCP socket's packets all go to the destination its first packet went to
 * (until it is disconnected and connected again), so the address judgement
 * (pc_net_judge_memo, and the pc_passive lookup for a reply of an accepted
 * connection) is made once and kept on the socket (pc_sk_infos, net.bpf.h) with the rule-table
 * generation it was made under. A later packet to the same destination,
 * port and device class under the same generation is allowed without the
 * lookups. Kept from the PC_VERDICT_KEEP_SEGS-th segment on (a short
 * connection never pays for creating the storage), or earlier on a socket
 * that already has one (a bound socket, local.c). Only allowed judgements
 * are kept; a SYN is always judged in full (the scan limits count it), and
 * so is a payload that starts with an SSH banner (network.ssh).
 *
 * Invalidation: user space bumps pc_net_gen[0] after every rewrite of the
 * rule tables, the configuration flags and the SSH tries (net_maps.py,
 * bump_generation, called by Probes.set_tables: policy load, reload, new DNS
 * answers). The judgement reads the generation before its lookups and
 * stores what it read, so an entry judged against half-written tables is
 * stale once the write is complete; generation 0 (no tables written yet)
 * is never cached. A mismatch is judged in full, so a flow is never freer
 * than a fresh judgement under the current tables.
 *
 * Kept only for judgements made with the packet's own destination port: a
 * reply of an accepted connection (pc_passive: address rules only) is
 * judged in full every time; a hit skips the pc_passive lookup, so the
 * port rules that applied when the flow was first judged keep applying. */
#define PC_VERDICT_KEEP_SEGS 8   /* segments a TCP socket sends before storage is made for its verdict */

/* What pycontain keeps on the packet's socket, or NULL (none, or skb->sk
 * not a full socket: a request or timewait socket). */
static __always_inline struct pc_sk_info *pc_info_of_skb(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	return sk ? pc_sk_infos.sk_storage_get(sk, 0, 0) : 0;
}

/* 1 when c is an allowed judgement of this very destination made under
 * generation gen. */
static __always_inline int pc_verdict_hit(const struct pc_sk_info *c, const struct pc_pkt *p, int via_lo, u64 gen)
{
	if (*(volatile u64 *)&c->gen != gen)
		return 0;
	return c->family == p->family && c->dport == p->dport && c->via_lo == via_lo &&
	       pc_same_addr(c->daddr, p->daddr);
}

/* Keep an allowed judgement (made under gen) on the packet's socket (c: its
 * storage if it has one). The generation is cleared first and written
 * last: a reader on another CPU meets either a complete entry or a
 * mismatch. */
static __always_inline void pc_verdict_store(struct __sk_buff *skb, struct pc_sk_info *c, const struct pc_pkt *p,
					     int via_lo, u64 gen)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return;
	if (!c) {
		/* creating a socket's storage costs more than the lookups it
		 * saves on a short connection (measured: a connect + close loop
		 * got slower): only a flow past its first segments gets one */
		struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
		if (!tp || tp->segs_out < PC_VERDICT_KEEP_SEGS)
			return;
		c = pc_sk_infos.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c)
			return;   /* not a full socket, or no memory: judged in full next time */
	}
	*(volatile u64 *)&c->gen = 0;
	__builtin_memcpy(c->daddr, p->daddr, 16);
	c->dport = p->dport;
	c->family = p->family;
	c->via_lo = (u8)via_lo;
	*(volatile u64 *)&c->gen = gen;
}

/* The address verdict of one packet: 1 pass, 0 drop. */
static __always_inline int pc_egress_policy(struct __sk_buff *skb, struct pc_config *cfg, struct pc_pkt *p)
{
	if (p->later_frag && !p->routed)
		return 1;
	int via_lo = skb->ifindex == PC_LOOPBACK_IFINDEX;
	u64 gen = pc_net_generation();
	int tcp = !p->routed && pc_norm_proto(p->proto) == IPPROTO_TCP && gen;
	struct pc_sk_info *kept = tcp && !(p->tcp_flags & 0x02) ? pc_info_of_skb(skb) : 0;
	if (kept && pc_verdict_hit(kept, p, via_lo, gen) && !pc_maybe_ssh(skb, cfg, p))
		return 1;
	/* the agent is looked up only when a verdict or a count needs it: the
	 * judgement is the same for every socket under the attached cgroup,
	 * and an allowed packet of an agent is passed either way */
	u64 cgid = 0;
	u32 agent = 0;
	u32 rule;
	u16 flags = 0;
	if (p->routed) {
		rule = pc_named_rule(PC_NX_SOURCE_ROUTE);
		flags |= PC_F_SOURCE_ROUTED;
	} else {
		/* replies of an accepted connection: address rules only */
		u16 dport = pc_passive_reply(p) ? 0 : p->dport;
		rule = pc_net_judge_memo(cfg, p->family, p->daddr, p->proto, dport, via_lo, &flags);
		if (!rule)
			rule = pc_egress_detect(skb, cfg, &agent, &cgid, p, &flags);
		if (!rule) {
			if (tcp && dport == p->dport && !(p->tcp_flags & 0x02))
				pc_verdict_store(skb, kept, p, via_lo, gen);
			return 1;
		}
	}
	if (!agent)
		agent = pc_agent_of_skb(skb, cfg, &cgid);
	if (!agent)
		return 1;   /* a socket under the attached cgroup that is no agent's */
	u8 verdict = pc_deny_verdict(cfg);
	pc_pkt_report(skb, agent, cgid, verdict, rule, flags, p);
	return verdict != PC_DENY;
}

/* Relies on: cgroup_skb egress programs run for every IP packet a socket
 * of the cgroup (or a descendant) sends, from ip_finish_output /
 * ip6_finish_output, after routing and netfilter and before the device,
 * with the data at the network header and skb->ifindex the output device;
 * bpf_skb_cgroup_id() names the socket's cgroup (set at socket creation,
 * inherited by accepted children and by MPTCP subflows, kernel >= 6.0), so
 * the agent is known in softirq too; skb->sk is the sending socket, whose
 * bpf_sk_storage lives until the socket is freed; returning 0 drops the
 * packet. */
int pc_net_egress(struct __sk_buff *skb)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->tracked_levels | cfg->birth_levels))
		return 1;   /* no agent tracked: nothing to parse */
	struct pc_pkt p = {};
	if (pc_pkt_parse(skb, &p) < 0)
		return 1;   /* not IP: ARP and the like are not sent from agent sockets */
	return pc_egress_policy(skb, cfg, &p);
}
