/* SPDX-License-Identifier: Apache-2.0
 * Mining protocol detection in agent egress payload (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py); pc_sk_owners, pc_socket_cookie
 * and pc_net_rule_slot are in net.bpf.h. cgroup_skb/egress on each agent
 * cgroup: parse IPv4/IPv6 + TCP/UDP headers with bpf_skb_load_bytes, copy the
 * first PC_SCAN_LEN payload bytes and look for the JSON-RPC methods miners
 * send whatever the port (stratum on 443 is the usual disguise):
 *   "mining.subscribe|authorize|submit|extranonce…|configure|suggest_…",
 *   "eth_submitLogin|eth_submitWork|eth_submitHashrate|eth_getWork",
 *   and the cryptonote/XMRig login: "method" <ws/:> "login" together with an
 *   "agent" or "algo" key in the same segment.
 * Method names are anchored on their opening quote (a JSON string), so prose
 * that merely mentions them is not matched; whitespace between "method", the
 * colon and the value is allowed.
 *
 * Enforce mode: the segment is dropped (return 0): the peer never receives
 * it, the flow stalls and TCP retransmits are dropped again. Monitor mode:
 * passed, reported PC_WOULD_DENY. Reports are rate-limited per flow (socket
 * cookie); drops are not.
 *
 * Limits (docs/network.md): TLS-wrapped stratum is opaque here; a method name
 * split across two segments is missed; only the first PC_SCAN_LEN payload
 * bytes of each segment are scanned; IPv6 extension headers are not walked.
 * CPU/GPU budgets catch what this misses.
 */

#include "net.bpf.h"

#define PC_SCAN_LEN 512              /* payload bytes scanned per segment */
#define PC_SCAN_MASK (PC_SCAN_LEN - 1)
#define PC_LOAD_MASK 1023            /* what the verifier is shown as the load length bound */
#define PC_SCAN_BUF (PC_LOAD_MASK + 1 + 64)  /* slack: word reads past any position stay in bounds */
#define PC_STRATUM_REPORT_NS (5ULL * 1000000000ULL)
#define PC_SNIPPET_BEFORE 24         /* snippet starts this many bytes before the match */

#define PC_ETH_P_IP 0x0800
#define PC_ETH_P_IPV6 0x86DD

#define PC_HIT_MINING 1
#define PC_HIT_ETH 2
#define PC_HIT_LOGIN 3

struct pc_scan_buf {
	u8 b[PC_SCAN_BUF];
	/* anchors of the current scan: position + 1 of the last one seen, 0 = none */
	u32 mining;
	u32 eth_sub;
	u32 eth_get;
	u32 method;
	u32 agent;   /* an "agent" or "algo" key was seen */
	u32 pos;     /* where the hit starts */
	u32 n;       /* payload bytes in b */
};
BPF_PERCPU_ARRAY(pc_scan, struct pc_scan_buf, 1);
BPF_TABLE("lru_hash", u64, u64, pc_stratum_seen, 8192);   /* socket cookie -> last report */

/* Multi-byte constants in memory order, so one load compares 2/4/8 bytes. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PC_W2(a, b) ((u16)(a) | (u16)(b) << 8)
#define PC_W4(a, b, c, d) ((u32)(a) | (u32)(b) << 8 | (u32)(c) << 16 | (u32)(d) << 24)
#define PC_W8(a, b, c, d, e, f, g, h) ((u64)PC_W4(a, b, c, d) | (u64)PC_W4(e, f, g, h) << 32)
#else
#define PC_W2(a, b) ((u16)(b) | (u16)(a) << 8)
#define PC_W4(a, b, c, d) ((u32)(d) | (u32)(c) << 8 | (u32)(b) << 16 | (u32)(a) << 24)
#define PC_W8(a, b, c, d, e, f, g, h) ((u64)PC_W4(e, f, g, h) | (u64)PC_W4(a, b, c, d) << 32)
#endif

/* p <= PC_SCAN_MASK + 32 at every call: reads stay inside the buffer. */
#define PC_LD2(b, p) (*(const u16 *)((b) + (p)))
#define PC_LD4(b, p) (*(const u32 *)((b) + (p)))
#define PC_LD8(b, p) (*(const u64 *)((b) + (p)))

/* Whitespace and ':' as bits of a 64-bit mask: ' ' 32, '\t' 9, '\n' 10,
 * '\r' 13, ':' 58. */
#define PC_WS_MASK ((1ULL << 32) | (1ULL << 9) | (1ULL << 10) | (1ULL << 13) | (1ULL << 58))

/* 1 when c is whitespace or ':', without a branch. */
static __always_inline u32 pc_is_ws(u32 c)
{
	u32 low = (((c >> 6) - 1) >> 31) & 1;   /* 1 iff c < 64 */
	return (u32)(PC_WS_MASK >> (c & 63)) & low;
}

#define PC_MASK7 PC_W8(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0)
#define PC_MASK6 PC_W8(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0)

/* Pass 1 over the payload: one byte compare per position, and after an
 * opening quote one 8-byte load compared with six anchors; the position (+1)
 * of the last of each kind is stored and pass 2 (pc_stratum_confirm) checks
 * what follows, once. "mining. is a hit by itself and ends the scan.
 *
 * Verifier budget: the loop is verified once per position (the index is an
 * exact constant), so its body must fork few states: anchor positions,
 * flags and even the length bound live in the map value (volatile), not in
 * registers, and the body has no inner loop. About 200 verified
 * instructions per position, ~115k for the whole program (limit 1M). */
static __always_inline void pc_stratum_anchors(struct pc_scan_buf *s)
{
	const u8 *b = s->b;
	for (u32 i = 0; i < PC_SCAN_LEN; i++) {
		/* compared with a fresh load: a break must not narrow the caller's
		 * n differently at each position (the code after the loop would be
		 * verified once per position) */
		if (i >= *(volatile u32 *)&s->n)
			break;
		u32 p = i & PC_SCAN_MASK;
		if (b[p] != '"')
			continue;
		u64 x = PC_LD8(b, p);
		if (x == PC_W8('"', 'm', 'i', 'n', 'i', 'n', 'g', '.')) {
			*(volatile u32 *)&s->mining = p + 1;
			break;
		}
		if (x == PC_W8('"', 'e', 't', 'h', '_', 's', 'u', 'b'))
			*(volatile u32 *)&s->eth_sub = p + 1;
		else if (x == PC_W8('"', 'e', 't', 'h', '_', 'g', 'e', 't'))
			*(volatile u32 *)&s->eth_get = p + 1;
		else if (x == PC_W8('"', 'm', 'e', 't', 'h', 'o', 'd', '"'))
			*(volatile u32 *)&s->method = p + 1;
		else if ((x & PC_MASK7) == PC_W8('"', 'a', 'g', 'e', 'n', 't', '"', 0) ||
			 (x & PC_MASK6) == PC_W8('"', 'a', 'l', 'g', 'o', '"', 0, 0))
			*(volatile u32 *)&s->agent = 1;
	}
}

/* Pass 2: returns the hit kind (0: none) and stores its position in s->pos. */
static __always_inline u32 pc_stratum_confirm(struct pc_scan_buf *s)
{
	const u8 *b = s->b;
	u32 a = *(volatile u32 *)&s->mining;
	if (a) {
		s->pos = (a - 1) & PC_SCAN_MASK;
		return PC_HIT_MINING;
	}
	a = *(volatile u32 *)&s->eth_sub;
	if (a) {
		u32 p = (a - 1) & PC_SCAN_MASK;
		/* eth_submitLogin / eth_submitWork / eth_submitHashrate */
		if ((PC_LD4(b, p + 8) & PC_W4(0xff, 0xff, 0xff, 0)) == PC_W4('m', 'i', 't', 0)) {
			s->pos = p;
			return PC_HIT_ETH;
		}
	}
	a = *(volatile u32 *)&s->eth_get;
	if (a) {
		u32 p = (a - 1) & PC_SCAN_MASK;
		if (PC_LD4(b, p + 8) == PC_W4('W', 'o', 'r', 'k')) {
			s->pos = p;
			return PC_HIT_ETH;
		}
	}
	a = *(volatile u32 *)&s->method;
	if (a && *(volatile u32 *)&s->agent) {
		u32 p = (a - 1) & PC_SCAN_MASK;
		u32 j = p + 8;
		u32 more = 1;
#pragma unroll
		for (int k = 0; k < 6; k++) {   /* skip whitespace and the colon, branch-free */
			more &= pc_is_ws(b[j]);
			j += more;
		}
		if (PC_LD4(b, j) == PC_W4('"', 'l', 'o', 'g') && PC_LD2(b, j + 4) == PC_W2('i', 'n') &&
		    b[j + 6] == '"') {
			s->pos = p;
			return PC_HIT_LOGIN;
		}
	}
	return 0;
}

static __always_inline u32 pc_stratum_scan(struct pc_scan_buf *s, u32 n)
{
	s->mining = 0;
	s->eth_sub = 0;
	s->eth_get = 0;
	s->method = 0;
	s->agent = 0;
	s->pos = 0;
	s->n = n;
	pc_stratum_anchors(s);
	return pc_stratum_confirm(s);
}

static __always_inline int pc_stratum_report_due(u64 cookie)
{
	u64 now = bpf_ktime_get_boot_ns();
	u64 *last = pc_stratum_seen.lookup(&cookie);
	if (last && now - *last < PC_STRATUM_REPORT_NS)
		return 0;
	pc_stratum_seen.update(&cookie, &now);
	return 1;
}

/* ---- packet parsing ------------------------------------------------------ */

/* Addresses (network byte order, IPv4 in the first 4 bytes), ports (host
 * order), protocol and payload offset of one egress packet. */
struct pc_flow {
	u8 daddr[16];
	u8 saddr[16];
	u32 proto;
	u32 payoff;    /* payload offset from the network header */
	u16 sport;
	u16 dport;
	u8 family;
};

/* IPv4 or IPv6 header: family, protocol, addresses; *l4off is where the
 * transport header starts. Returns 0, or -1 for a packet not scanned. */
static __always_inline int pc_parse_ip(struct __sk_buff *skb, struct pc_flow *f, u32 *l4off)
{
	if (skb->protocol == bpf_htons(PC_ETH_P_IP)) {
		u8 ip[20];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)) < 0)
			return -1;
		u32 off = (ip[0] & 0xf) * 4;
		if (off < 20)
			return -1;
		if (((ip[6] & 0x1f) << 8 | ip[7]) != 0)
			return -1;   /* a non-first fragment carries no L4 header */
		f->proto = ip[9];
		__builtin_memcpy(f->saddr, &ip[12], 4);
		__builtin_memcpy(f->daddr, &ip[16], 4);
		f->family = PC_AF_INET;
		*l4off = off;
		return 0;
	}
	if (skb->protocol == bpf_htons(PC_ETH_P_IPV6)) {
		u8 ip6[40];
		if (bpf_skb_load_bytes(skb, 0, ip6, sizeof(ip6)) < 0)
			return -1;
		f->proto = ip6[6];
		__builtin_memcpy(f->saddr, &ip6[8], 16);
		__builtin_memcpy(f->daddr, &ip6[24], 16);
		f->family = PC_AF_INET6;
		*l4off = 40;
		return 0;
	}
	return -1;
}

/* TCP or UDP header at l4off: ports and payload offset. Returns 0, or -1
 * for another protocol or a header that cannot be read. */
static __always_inline int pc_parse_l4(struct __sk_buff *skb, struct pc_flow *f, u32 l4off)
{
	if (f->proto == IPPROTO_TCP) {
		u8 tcp[20];
		if (bpf_skb_load_bytes(skb, l4off, tcp, sizeof(tcp)) < 0)
			return -1;
		u32 doff = (tcp[12] >> 4) * 4;
		if (doff < 20)
			return -1;
		f->sport = (u16)tcp[0] << 8 | tcp[1];
		f->dport = (u16)tcp[2] << 8 | tcp[3];
		f->payoff = l4off + doff;
		return 0;
	}
	if (f->proto == IPPROTO_UDP) {
		u8 udp[8];
		if (bpf_skb_load_bytes(skb, l4off, udp, sizeof(udp)) < 0)
			return -1;
		f->sport = (u16)udp[0] << 8 | udp[1];
		f->dport = (u16)udp[2] << 8 | udp[3];
		f->payoff = l4off + 8;
		return 0;
	}
	return -1;
}

/* Copy the first payload bytes (at most PC_SCAN_LEN) into buf->b, NUL
 * terminated. Returns how many, 0 when there are too few to scan. */
static __always_inline u32 pc_load_payload(struct __sk_buff *skb, u32 payoff, struct pc_scan_buf *buf)
{
	if (skb->len <= payoff)
		return 0;   /* no payload: SYN, pure ACK, FIN */
	u32 n = skb->len - payoff;
	if (n > PC_SCAN_LEN)
		n = PC_SCAN_LEN;
	/* clang folds the clamp into a form the verifier cannot follow; the
	 * barrier keeps it, the mask proves the bound */
	asm volatile("" : "+r"(n));
	n &= PC_LOAD_MASK;
	if (n < 8)
		return 0;   /* shorter than any method name */
	if (bpf_skb_load_bytes(skb, payoff, buf->b, n) < 0)
		return 0;
	buf->b[n] = 0;   /* NUL sentinel; n <= PC_SCAN_LEN */
	return n;
}

/* ---- report ------------------------------------------------------------- */

/* PC_PAYLOAD_LEN bytes of the scanned payload from a little before the hit,
 * zero past the payload's end. */
static __always_inline void pc_stratum_snippet(struct pc_stratum *e, const struct pc_scan_buf *buf, u32 n)
{
	u32 pos = buf->pos;
	u32 start = pos > PC_SNIPPET_BEFORE ? pos - PC_SNIPPET_BEFORE : 0;
	start &= PC_SCAN_MASK;
	u32 len = n > start ? n - start : 0;
	if (len > PC_PAYLOAD_LEN)
		len = PC_PAYLOAD_LEN;
	e->payload_len = len;
	e->_pad0[0] = 0;
	e->_pad0[1] = 0;
	e->_pad0[2] = 0;
	__builtin_memcpy(e->payload, buf->b + start, PC_PAYLOAD_LEN);
#pragma unroll
	for (int k = 0; k < PC_PAYLOAD_LEN; k++) {
		if (k >= len)
			e->payload[k] = 0;   /* no stale bytes of other flows in the record */
	}
}

/* Queue the record of a hit. The header names the socket's owner recorded at
 * connect/sendmsg (pc_sk_owners) and the skb's cgroup: this program may run
 * in softirq, where the task helpers would name an unrelated task. */
static __always_inline void pc_stratum_report(struct __sk_buff *skb, struct pc_config *cfg, u64 cookie,
					      u8 verdict, const struct pc_flow *f,
					      const struct pc_scan_buf *buf, u32 n)
{
	u64 cgid = 0;
	u32 agent = pc_agent_of_skb(skb, cfg, &cgid);
	struct pc_sk_owner *o = pc_sk_owners.lookup(&cookie);
	struct pc_stratum *e = PC_RESERVE_FOR(struct pc_stratum, agent ? agent : (o ? o->agent : 0), 1);
	if (!e)
		return;
	pc_fill_header_owner(&e->n.h, PC_EV_STRATUM, o, agent ? agent : (o ? o->agent : 0), cgid);
	e->n.h.verdict = verdict;
	e->n.h.rule_id = pc_net_rule_slot(PC_NR_STRATUM);
	pc_fill_net(&e->n, f->family, (u8)f->proto, f->dport, f->sport, f->daddr, f->saddr);
	pc_stratum_snippet(e, buf, n);
	pc_submit(e, &e->n.h);
}

/* Relies on: cgroup_skb egress programs see every IP packet that a socket of
 * the cgroup (or a descendant) sends, before it reaches the device, with the
 * skb's data starting at the network header; returning 0 drops it. Runs in
 * process context for first transmissions and in softirq for retransmits:
 * nothing here reads the current task. */
int pc_stratum_egress(struct __sk_buff *skb)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->flags & PC_CFG_DETECT_STRATUM))
		return 1;
	struct pc_flow f = {};
	u32 l4off = 0;
	if (pc_parse_ip(skb, &f, &l4off) < 0 || pc_parse_l4(skb, &f, l4off) < 0)
		return 1;
	int zero = 0;
	struct pc_scan_buf *buf = pc_scan.lookup(&zero);
	if (!buf)
		return 1;
	u32 n = pc_load_payload(skb, f.payoff, buf);
	if (!n)
		return 1;
	if (!pc_stratum_scan(buf, n))
		return 1;
	u8 verdict = pc_deny_verdict(cfg);
	int ret = verdict != PC_DENY;
	u64 cookie = pc_socket_cookie(skb);
	if (pc_stratum_report_due(cookie))
		pc_stratum_report(skb, cfg, cookie, verdict, &f, buf, n);
	return ret;
}
