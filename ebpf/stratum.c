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
 *   and the CryptoNote/XMRig methods: "method":"login" with a "pass", "agent"
 *   or "algo" key; "getjob"; "keepalived"; "submit" with a "job_id" key.
 * Method names are anchored on their opening quote (a JSON string), so prose
 * that merely mentions them is not matched.
 *
 * Tolerant parse (issue 12 part 8): JSON whitespace is removed before the
 * scan (pc_compact), so spacing and newlines between tokens do not matter;
 * every "method" key's value is judged, whatever its nesting or order, and
 * the keys that mark a miner may come before or after it. The first
 * PC_HEAD_LEN bytes of each TCP flow are kept per socket cookie, placed by
 * sequence number (pc_flow_heads), and each segment inside that head is
 * scanned together with the bytes before it: a login split over several
 * send() calls (TCP_NODELAY) is still seen; retransmits overwrite the same
 * bytes. Hand-written: no library parses JSON in a BPF program.
 *
 * Enforce mode: the segment is dropped (return 0): the peer never receives
 * it, the flow stalls and TCP retransmits are dropped again. Monitor mode:
 * passed, reported PC_WOULD_DENY. Reports are rate-limited per flow (socket
 * cookie); drops are not.
 *
 * Limits (docs/network.md): TLS-wrapped stratum is opaque here; split
 * messages are reassembled only within the first PC_HEAD_LEN bytes of a TCP
 * flow (UDP datagrams are judged alone); at most PC_SCAN_LEN bytes (head +
 * segment) are scanned per segment; IPv6 extension headers are not walked.
 * CPU/GPU budgets catch what this misses.
 */

#include "net.bpf.h"

#define PC_SCAN_LEN 512              /* payload bytes scanned per segment */
#define PC_SCAN_MASK (PC_SCAN_LEN - 1)
#define PC_LOAD_MASK 1023            /* what the verifier is shown as the load length bound */
#define PC_HEAD_LEN 256              /* first bytes of a TCP flow kept for reassembly */
#define PC_HEAD_MASK (PC_HEAD_LEN - 1)
/* a segment (<= PC_LOAD_MASK bytes) loaded after up to PC_HEAD_MASK head
 * bytes, plus slack: word reads past any position stay in bounds */
#define PC_SCAN_BUF (PC_HEAD_MASK + PC_LOAD_MASK + 1 + 64)
#define PC_STRATUM_REPORT_NS (5ULL * 1000000000ULL)
#define PC_SNIPPET_BEFORE 24         /* snippet starts this many bytes before the match */

#define PC_ETH_P_IP 0x0800
#define PC_ETH_P_IPV6 0x86DD

#define PC_HIT_MINING 1
#define PC_HIT_ETH 2
#define PC_HIT_LOGIN 3

/* values of a "method" key (pc_scan_buf.methods) */
#define PC_M_LOGIN 1
#define PC_M_GETJOB 2
#define PC_M_SUBMIT 4
#define PC_M_KEEPALIVE 8
/* keys that mark a CryptoNote miner (pc_scan_buf.keys) */
#define PC_K_LOGIN 1   /* "pass", "agent", "algo": login params */
#define PC_K_JOB 2     /* "job_id": submit params */

struct pc_scan_buf {
	u8 b[PC_SCAN_BUF];
	/* anchors of the current scan: position + 1 of the last one seen, 0 = none */
	u32 mining;
	u32 eth_sub;
	u32 eth_get;
	u32 method;  /* last "method" key whose value is a CryptoNote method */
	u32 methods; /* PC_M_* seen as values of "method" keys */
	u32 keys;    /* PC_K_* keys seen */
	u32 pos;     /* where the hit starts */
	u32 n;       /* payload bytes in b */
};
BPF_PERCPU_ARRAY(pc_scan, struct pc_scan_buf, 1);

/* First bytes of a TCP flow, by sequence number from the first data segment
 * seen (base). len: contiguous bytes known from the start. */
struct pc_flow_head {
	u32 base;
	u32 len;
	u8 b[PC_HEAD_LEN];
};
BPF_TABLE("lru_hash", u64, struct pc_flow_head, pc_flow_heads, 8192);   /* socket cookie */
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

/* JSON whitespace (space, tab, LF, CR) as mask bits, ':' excluded. */
#define PC_SPACE_MASK ((1ULL << 32) | (1ULL << 9) | (1ULL << 10) | (1ULL << 13))

/* 1 when c is JSON whitespace, without a branch. */
static __always_inline u32 pc_is_space(u32 c)
{
	u32 low = (((c >> 6) - 1) >> 31) & 1;
	return (u32)(PC_SPACE_MASK >> (c & 63)) & low;
}

/* Remove JSON whitespace from the first s->n bytes in place (also inside
 * strings: no method or key name contains any), store the new length in
 * s->n and NUL-terminate. Branch-free and without a break, so the verifier
 * walks it once and the code after it once. */
static __always_inline void pc_compact(struct pc_scan_buf *s)
{
	u8 *b = s->b;
	u32 n = *(volatile u32 *)&s->n;
	u32 j = 0;
	for (u32 i = 0; i < PC_SCAN_LEN; i++) {
		u32 c = b[i];
		u32 inside = ((i - n) >> 31) & 1;   /* i < n; both < 2^31 */
		b[j & PC_SCAN_MASK] = c;
		j += inside & (pc_is_space(c) ^ 1);
	}
	*(volatile u32 *)&s->n = j;
	b[*(volatile u32 *)&s->n & PC_LOAD_MASK] = 0;   /* j <= PC_SCAN_LEN */
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
/* The value of the "method" key at p (whitespace already removed): a
 * CryptoNote method sets its PC_M_* bit and records the position. Every
 * "method" key is judged, so a nested key of the same name before or after
 * the real one hides nothing. */
static __always_inline void pc_method_value(struct pc_scan_buf *s, u32 p)
{
	const u8 *b = s->b;
	if (PC_LD2(b, p + 8) != PC_W2(':', '"'))
		return;
	u64 v = PC_LD8(b, p + 10);
	u32 m = 0;
	if ((v & PC_MASK6) == PC_W8('l', 'o', 'g', 'i', 'n', '"', 0, 0))
		m = PC_M_LOGIN;
	else if ((v & PC_MASK7) == PC_W8('g', 'e', 't', 'j', 'o', 'b', '"', 0))
		m = PC_M_GETJOB;
	else if ((v & PC_MASK7) == PC_W8('s', 'u', 'b', 'm', 'i', 't', '"', 0))
		m = PC_M_SUBMIT;
	else if (v == PC_W8('k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'))
		m = PC_M_KEEPALIVE;
	if (!m)
		return;
	*(volatile u32 *)&s->methods |= m;
	*(volatile u32 *)&s->method = p + 1;
}

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
			pc_method_value(s, p);
		else if ((x & PC_MASK7) == PC_W8('"', 'a', 'g', 'e', 'n', 't', '"', 0) ||
			 (x & PC_MASK6) == PC_W8('"', 'a', 'l', 'g', 'o', '"', 0, 0) ||
			 (x & PC_MASK6) == PC_W8('"', 'p', 'a', 's', 's', '"', 0, 0))
			*(volatile u32 *)&s->keys |= PC_K_LOGIN;
		else if (x == PC_W8('"', 'j', 'o', 'b', '_', 'i', 'd', '"'))
			*(volatile u32 *)&s->keys |= PC_K_JOB;
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
	if (a) {
		u32 m = *(volatile u32 *)&s->methods;
		u32 k = *(volatile u32 *)&s->keys;
		/* getjob and keepalived are CryptoNote's alone; a JSON-RPC login or
		 * submit needs the miner's keys beside it */
		if ((m & (PC_M_GETJOB | PC_M_KEEPALIVE)) || ((m & PC_M_LOGIN) && (k & PC_K_LOGIN)) ||
		    ((m & PC_M_SUBMIT) && (k & PC_K_JOB))) {
			s->pos = (a - 1) & PC_SCAN_MASK;
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
	s->methods = 0;
	s->keys = 0;
	s->pos = 0;
	s->n = n;
	pc_compact(s);
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
	u32 seq;       /* TCP sequence number of the first payload byte */
	u16 sport;
	u16 dport;
	u8 family;
};

/* 1 when the packet is a TCP segment without payload (SYN, pure ACK, FIN:
 * most segments of a short connection), read from the linear header bytes
 * directly, without a helper call; 0 when it has one or this cannot tell
 * (headers outside the linear part): the full parse decides. */
static __always_inline int pc_tcp_no_payload(struct __sk_buff *skb)
{
	u8 *ip = (u8 *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	u32 l4off;
	if (skb->protocol == bpf_htons(PC_ETH_P_IP)) {
		if ((void *)(ip + 20) > end || ip[9] != IPPROTO_TCP)
			return 0;
		l4off = (ip[0] & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(PC_ETH_P_IPV6)) {
		if ((void *)(ip + 40) > end || ip[6] != IPPROTO_TCP)
			return 0;
		l4off = 40;
	} else {
		return 0;
	}
	u8 *tcp = ip + (l4off & 63);
	if ((void *)(tcp + 13) > end)
		return 0;
	return skb->len <= (l4off & 63) + (u32)(tcp[12] >> 4) * 4;
}

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
		f->seq = (u32)tcp[4] << 24 | (u32)tcp[5] << 16 | (u32)tcp[6] << 8 | tcp[7];
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

/* Copy the segment's first payload bytes into buf->b at off (< PC_HEAD_LEN:
 * the head bytes before it are already there), NUL terminated. Returns the
 * bytes to scan (off + segment, at most PC_SCAN_LEN), 0 when the segment
 * has no payload. */
static __always_inline u32 pc_load_payload(struct __sk_buff *skb, u32 payoff, struct pc_scan_buf *buf, u32 off)
{
	if (skb->len <= payoff)
		return 0;   /* no payload: SYN, pure ACK, FIN */
	asm volatile("" : "+r"(off));   /* keep the mask: clang knows off < PC_HEAD_LEN, the verifier does not */
	off &= PC_HEAD_MASK;
	u32 n = skb->len - payoff;
	if (n > PC_SCAN_LEN - off)
		n = PC_SCAN_LEN - off;
	/* clang folds the clamp into a form the verifier cannot follow; the
	 * barrier keeps it, the mask proves the bound */
	asm volatile("" : "+r"(n));
	n &= PC_LOAD_MASK;
	if (n < 1)
		return 0;
	if (bpf_skb_load_bytes(skb, payoff, buf->b + off, n) < 0)
		return 0;
	u32 total = off + n;
	buf->b[total & PC_LOAD_MASK] = 0;   /* NUL sentinel; total <= PC_SCAN_LEN */
	return total;
}

/* For a TCP segment inside its flow's first PC_HEAD_LEN bytes: put the head
 * known so far into buf->b and return the segment's offset in it (the
 * caller loads the segment there). Returns -1 for a segment scanned alone
 * (UDP, past the head, after a gap, or before the first one seen). */
static __always_inline int pc_head_begin(u64 cookie, const struct pc_flow *f, struct pc_scan_buf *buf)
{
	if (f->proto != IPPROTO_TCP)
		return -1;
	struct pc_flow_head *h = pc_flow_heads.lookup(&cookie);
	if (!h) {
		struct pc_flow_head fresh = {};
		fresh.base = f->seq;
		pc_flow_heads.update(&cookie, &fresh);
		h = pc_flow_heads.lookup(&cookie);
		if (!h)
			return -1;
	}
	u32 off = f->seq - h->base;
	if (off >= PC_HEAD_LEN || off > h->len)
		return -1;
	__builtin_memcpy(buf->b, h->b, PC_HEAD_LEN);
	return (int)off;
}

/* Store the first PC_HEAD_LEN bytes of buf->b (head + this segment) back
 * into the flow's head; done before the scan rewrites buf->b. */
static __always_inline void pc_head_end(u64 cookie, const struct pc_scan_buf *buf, u32 total)
{
	struct pc_flow_head *h = pc_flow_heads.lookup(&cookie);
	if (!h)
		return;
	__builtin_memcpy(h->b, buf->b, PC_HEAD_LEN);
	if (total > PC_HEAD_LEN)
		total = PC_HEAD_LEN;
	if (total > h->len)
		h->len = total;
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
	if (!cfg || !(cfg->flags & PC_CFG_DETECT_STRATUM) || pc_tcp_no_payload(skb))
		return 1;
	struct pc_flow f = {};
	u32 l4off = 0;
	if (pc_parse_ip(skb, &f, &l4off) < 0 || pc_parse_l4(skb, &f, l4off) < 0)
		return 1;
	int zero = 0;
	struct pc_scan_buf *buf = pc_scan.lookup(&zero);
	if (!buf)
		return 1;
	u64 cookie = pc_socket_cookie(skb);
	int off = skb->len > f.payoff ? pc_head_begin(cookie, &f, buf) : -1;
	u32 n = pc_load_payload(skb, f.payoff, buf, off < 0 ? 0 : (u32)off);
	if (!n)
		return 1;
	if (off >= 0)
		pc_head_end(cookie, buf, n);
	if (n < 8 || !pc_stratum_scan(buf, n))   /* shorter than any method name */
		return 1;
	u8 verdict = pc_deny_verdict(cfg);
	int ret = verdict != PC_DENY;
	if (pc_stratum_report_due(cookie))
		pc_stratum_report(skb, cfg, cookie, verdict, &f, buf, n);
	return ret;
}
