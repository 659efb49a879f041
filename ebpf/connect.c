/* SPDX-License-Identifier: Apache-2.0
 * Egress verdicts at connect/sendmsg and TCP state of agent sockets (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py). The cgroup_sock_addr
 * programs below are attached by pycontain/kernel/cgroup_attach.py to each
 * agent cgroup with BPF_F_ALLOW_MULTI (programs already on the host keep
 * running; the kernel runs ours for every descendant cgroup too).
 *
 * Verdict: pc_net_judge (net.bpf.h), the same function egress.c applies to
 * every packet, so the early EPERM here and the packet verdict never differ:
 *   1. pc_ports[dport].tcp_rule / .udp_rule for the socket's protocol;
 *   2. an address+port deny rule (pc_rules4/6 + pc_addr_rules);
 *   3. the destination is in pc_deny4 / pc_deny6 (longest prefix), unless
 *      it is a deny_internal/metadata entry and a nameservers rule covers it;
 *   4. PC_CFG_NET_DEFAULT_DENY is set and no allow entry covers it:
 *      rule pc_net_rules[PC_NR_DEFAULT] (the id of "network.default").
 * Allow entries never override a port or CIDR deny. Destinations are
 * canonical: IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) on dual-stack
 * sockets are checked against the IPv4 tables and flagged PC_F_V4_MAPPED;
 * loopback aliases and the unspecified address are judged as loopback.
 *
 * Deny: return 0, the syscall fails with EPERM before any packet is built.
 * Monitor mode (pc_config.mode): return 1 and report PC_WOULD_DENY.
 */

#include "net.bpf.h"
#include "detect.bpf.h"
#include "local.bpf.h"   /* issue 10: loopback destinations (pc_local_rule4/6) */
#include "aggregate.bpf.h"   /* issue 14: repeat allowed destinations counted, not sent */

#define PC_TCP_ESTABLISHED 1
#define PC_TCP_CLOSE 7

#define PC_UDP_REPORT_NS (30ULL * 1000000000ULL)  /* re-report an allowed UDP flow after 30 s */

/* The owner of a socket is the task that connects or sends on it first;
 * recorded in process context because later hooks (softirq) cannot ask. */
static __always_inline void pc_owner_of_current(struct pc_sk_owner *o, u32 agent)
{
	u64 pt = bpf_get_current_pid_tgid();
	o->agent = agent;
	o->pid = pt >> 32;
	o->tid = (u32)pt;
	o->uid = (u32)bpf_get_current_uid_gid();
	o->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&o->comm, sizeof(o->comm));
}

struct pc_udp_key {
	u32 pid;
	u16 dport;
	u16 _pad0;
	u8 daddr[16];
};
/* first allowed UDP send per (pid, daddr, dport) -> time reported */
BPF_TABLE("lru_hash", struct pc_udp_key, u64, pc_udp_seen, 8192);

/* Relies on: cgroup_sock_addr programs run in the connect()/sendmsg() caller's
 * process context, so current pid/comm/cgroup are the agent's. */
static __always_inline void pc_remember_owner(void *ctx, u32 agent)
{
	u64 cookie = pc_socket_cookie(ctx);
	if (pc_sk_owners.lookup(&cookie))
		return;   /* cookies are never reused: the first sender owns it */
	struct pc_sk_owner o = {};
	pc_owner_of_current(&o, agent);
	pc_sk_owners.update(&cookie, &o);
}

/* 1 when an allowed UDP send to this (pid, daddr, dport) should be reported. */
static __always_inline int pc_udp_first(u32 pid, const u8 *daddr16, u16 dport)
{
	struct pc_udp_key k = {};
	k.pid = pid;
	k.dport = dport;
	__builtin_memcpy(k.daddr, daddr16, 16);
	u64 now = bpf_ktime_get_boot_ns();
	u64 *last = pc_udp_seen.lookup(&k);
	if (last && now - *last < PC_UDP_REPORT_NS)
		return 0;
	pc_udp_seen.update(&k, &now);
	return 1;
}

/* Common body of the four hooks. daddr16/saddr16: 16 bytes, IPv4 in the
 * first 4. Returns what the hook returns (1 allow, 0 deny). */
static __always_inline int pc_net_decide(void *ctx, struct pc_config *cfg, u32 agent, u8 type,
					 u8 family, u32 proto, u16 dport, u16 sport,
					 const u8 *daddr16, const u8 *saddr16, u32 rule, u16 flags)
{
	u8 verdict = rule ? pc_deny_verdict(cfg) : PC_ALLOW;
	int ret = verdict != PC_DENY;
	if (ret)
		pc_remember_owner(ctx, agent);
	if (verdict == PC_ALLOW && pc_quiet_hit(agent, family, proto, dport, daddr16))
		return ret;
	if (verdict == PC_ALLOW && type == PC_EV_SEND) {
		u32 pid = bpf_get_current_pid_tgid() >> 32;
		if (!pc_udp_first(pid, daddr16, dport))
			return ret;
	}
	struct pc_net *e = PC_RESERVE_FOR(struct pc_net, agent, verdict != PC_ALLOW);
	if (!e)
		return ret;
	pc_fill_header(&e->h, type, agent);
	e->h.verdict = verdict;
	e->h.rule_id = rule;
	e->h.flags = flags;
	pc_fill_net(e, family, (u8)pc_norm_proto(proto), dport, sport, daddr16, saddr16);
	pc_submit(e, &e->h);
	return ret;
}

static __always_inline int pc_net4(struct bpf_sock_addr *ctx, u8 type)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent || !cfg)
		return 1;
	u32 proto = ctx->protocol;
	u32 daddr = ctx->user_ip4;
	u16 dport = bpf_ntohs((u16)ctx->user_port);
	u8 d16[16] = {};
	u8 s16[16] = {};
	__builtin_memcpy(d16, &daddr, 4);
	u16 sport = 0;
	if (type == PC_EV_SEND) {
		u32 src = ctx->msg_src_ip4;
		__builtin_memcpy(s16, &src, 4);
	}
	struct bpf_sock *sk = ctx->sk;
	if (sk) {
		sport = (u16)sk->src_port;
		if (type == PC_EV_CONNECT) {
			u32 src = sk->src_ip4;
			__builtin_memcpy(s16, &src, 4);
		}
	}
	if (daddr == 0) {   /* judge where it goes, not what was passed */
		u32 src;
		__builtin_memcpy(&src, s16, 4);
		daddr = pc_any4_target(sk, proto, src);
		__builtin_memcpy(d16, &daddr, 4);
	}
	u16 flags = 0;
	u32 rule = pc_net_judge_memo(cfg, PC_AF_INET, d16, proto, dport, 0, &flags);
	if (!rule)   /* issue 12: past the scan limits no new destination */
		rule = pc_scan_judge(cfg, agent, PC_AF_INET, d16, proto, dport, flags & PC_F_LOOPBACK);
	if (!rule)   /* issue 10: loopback services the agent did not start */
		rule = daddr ? pc_local_rule4(ctx, cfg, agent, daddr, dport, proto) : pc_local_unknown(cfg);
	return pc_net_decide(ctx, cfg, agent, type, PC_AF_INET, proto, dport, sport, d16, s16, rule, flags);
}

/* A dual-stack socket bound to an IPv4-mapped address (or ::ffff:0.0.0.0). */
static __always_inline int pc_sk_v4_mapped(struct bpf_sock *sk)
{
	return sk->src_ip6[0] == 0 && sk->src_ip6[1] == 0 && sk->src_ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int pc_net6(struct bpf_sock_addr *ctx, u8 type)
{
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent || !cfg)
		return 1;
	u32 proto = ctx->protocol;
	u16 dport = bpf_ntohs((u16)ctx->user_port);
	struct pc_lpm6 k = {};
	u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(&k.addr[0], &w0, 4);
	__builtin_memcpy(&k.addr[4], &w1, 4);
	__builtin_memcpy(&k.addr[8], &w2, 4);
	__builtin_memcpy(&k.addr[12], &w3, 4);
	u8 s16[16] = {};
	u16 sport = 0;
	if (type == PC_EV_SEND) {
		u32 s0 = ctx->msg_src_ip6[0], s1 = ctx->msg_src_ip6[1], s2 = ctx->msg_src_ip6[2], s3 = ctx->msg_src_ip6[3];
		__builtin_memcpy(&s16[0], &s0, 4);
		__builtin_memcpy(&s16[4], &s1, 4);
		__builtin_memcpy(&s16[8], &s2, 4);
		__builtin_memcpy(&s16[12], &s3, 4);
	}
	struct bpf_sock *sk = ctx->sk;
	if (sk)
		sport = (u16)sk->src_port;
	u16 flags = 0;
	u32 rule = pc_net_judge_memo(cfg, PC_AF_INET6, k.addr, proto, dport, 0, &flags);
	if (!rule)   /* issue 12: past the scan limits no new destination */
		rule = pc_scan_judge(cfg, agent, PC_AF_INET6, k.addr, proto, dport, flags & PC_F_LOOPBACK);
	/* issue 10: loopback services the agent did not start. `::` and
	 * ::ffff:0.0.0.0 are judged as loopback above (their aliases); here
	 * the receiver is looked up where the kernel sends them. Decided after
	 * the judgement, so its paths are verified once (before it, they took
	 * this program's verification from 183 to 609 ms). */
	if (!rule) {
		if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff))
			rule = pc_local_rule4_any(ctx, cfg, agent, sk, w3, dport, proto);
		else if ((w0 | w1 | w2 | w3) == 0 && sk && type == PC_EV_CONNECT && pc_sk_v4_mapped(sk))
			/* tcp_v6_connect / __ip6_datagram_connect: :: from a
			 * v4-mapped source is 127.0.0.1 (udpv6_sendmsg rewrites it
			 * before the hook, so sendmsg4 sees that one) */
			rule = pc_local_rule4(ctx, cfg, agent, bpf_htonl(0x7f000001), dport, proto);
		else
			rule = pc_local_rule6(ctx, cfg, agent, &k, dport, proto);
	}
	return pc_net_decide(ctx, cfg, agent, type, PC_AF_INET6, proto, dport, sport, k.addr, s16, rule, flags);
}

/* Relies on: BPF_CGROUP_INET4_CONNECT runs in __inet_stream_connect /
 * udp_pre_connect before any packet is built, also for TCP Fast Open
 * (sendto with MSG_FASTOPEN goes through tcp_sendmsg_fastopen's connect
 * hook) and for AF_INET destinations given to dual-stack UDP sockets. */
int pc_connect4(struct bpf_sock_addr *ctx)
{
	return pc_net4(ctx, PC_EV_CONNECT);
}

/* Relies on: BPF_CGROUP_INET6_CONNECT, same guarantees as connect4. */
int pc_connect6(struct bpf_sock_addr *ctx)
{
	return pc_net6(ctx, PC_EV_CONNECT);
}

/* Relies on: BPF_CGROUP_UDP4_SENDMSG runs in udp_sendmsg for every send on
 * an unconnected UDP socket (the destination comes with the call); sends on a
 * connected socket were judged at connect. */
int pc_sendmsg4(struct bpf_sock_addr *ctx)
{
	return pc_net4(ctx, PC_EV_SEND);
}

/* Relies on: BPF_CGROUP_UDP6_SENDMSG, same guarantees as sendmsg4. */
int pc_sendmsg6(struct bpf_sock_addr *ctx)
{
	return pc_net6(ctx, PC_EV_SEND);
}

/* ---- TCP state of agent sockets -------------------------------------------
 *
 * A sock_ops program on each agent cgroup, so that only agent sockets pay:
 * the host-wide sock:inet_sock_set_state tracepoint it replaces ran for
 * every TCP state change of every task on the node (ten per loopback
 * connection, both ends). At the connect callback the socket's owner
 * (recorded by connect4/6 under its cookie a moment before, in the same
 * call) is copied into the socket's storage and the state callbacks are
 * turned on for that socket alone; a repeat allowed destination (quiet,
 * aggregate.bpf.h) is not followed (its connect was counted). Only the
 * transitions that say something are reported: the connection came up
 * (ESTABLISHED) or ended (CLOSE). */

struct pc_tcp_args {
	u8 family;
	u8 oldstate;
	u8 newstate;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
};

static __always_inline void pc_tcp_emit(struct pc_tcp_args *a, const struct pc_sk_owner *o)
{
	struct pc_tcp_state *e = PC_RESERVE_FOR(struct pc_tcp_state, o->agent, 0);
	if (!e)
		return;
	/* the header from the recorded owner: this may run in softirq, where
	 * current is whatever task the packet interrupted */
	pc_fill_header_owner(&e->h, PC_EV_TCP_STATE, o, o->agent, o->cgroup_id);
	e->family = a->family;
	e->oldstate = a->oldstate;
	e->newstate = a->newstate;
	e->_pad0 = 0;
	e->sport = a->sport;
	e->dport = a->dport;
	__builtin_memcpy(e->saddr, a->saddr, 16);
	__builtin_memcpy(e->daddr, a->daddr, 16);
	pc_submit(e, &e->h);
}

/* A ctx field read as a load at its own offset: without volatile the
 * compiler merges the IPv4 and IPv6 loads under a branch into one load
 * through a moved ctx pointer, which the verifier refuses. */
#define PC_OPS_U32(ops_, field_) (*(volatile u32 *)&(ops_)->field_)

/* The socket's addresses and ports as the records carry them: ports in
 * host order, addresses in network order (IPv4 in the first 4 bytes). */
static __always_inline void pc_tcp_addrs(struct bpf_sock_ops *ops, struct pc_tcp_args *a)
{
	u32 family = ops->family;
	a->family = (u8)family;
	a->sport = (u16)ops->local_port;                  /* host order */
	a->dport = (u16)bpf_ntohl(ops->remote_port);      /* network order, in the upper half */
	if (family == PC_AF_INET6) {
		u32 s[4] = {PC_OPS_U32(ops, local_ip6[0]), PC_OPS_U32(ops, local_ip6[1]),
			    PC_OPS_U32(ops, local_ip6[2]), PC_OPS_U32(ops, local_ip6[3])};
		u32 d[4] = {PC_OPS_U32(ops, remote_ip6[0]), PC_OPS_U32(ops, remote_ip6[1]),
			    PC_OPS_U32(ops, remote_ip6[2]), PC_OPS_U32(ops, remote_ip6[3])};
		__builtin_memcpy(a->saddr, s, 16);
		__builtin_memcpy(a->daddr, d, 16);
	} else {
		u32 s4 = PC_OPS_U32(ops, local_ip4), d4 = PC_OPS_U32(ops, remote_ip4);
		__builtin_memcpy(a->saddr, &s4, 4);
		__builtin_memcpy(a->daddr, &d4, 4);
	}
}

/* The connect callback: follow this socket's states unless its destination
 * is quiet. No owner under the cookie: not a socket connect4/6 allowed for
 * an agent (or its entry was evicted): not followed, as before. */
static __always_inline void pc_tcp_follow(struct bpf_sock_ops *ops)
{
	u64 cookie = pc_socket_cookie(ops);
	struct pc_sk_owner *o = pc_sk_owners.lookup(&cookie);
	if (!o)
		return;
	struct pc_tcp_args a = {};
	pc_tcp_addrs(ops, &a);
	if (pc_quiet_tcp(o->agent, a.family, a.dport, a.daddr))
		return;   /* a repeat allowed flow: its connect was counted */
	struct bpf_sock *sk = ops->sk;
	if (!sk)
		return;
	struct pc_sk_info *i = pc_sk_infos.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!i)
		return;   /* no memory: its states go unreported (records, not verdicts) */
	i->owner = *o;
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A state change of a followed socket: ESTABLISHED and CLOSE reported. */
static __always_inline void pc_tcp_changed(struct bpf_sock_ops *ops)
{
	u32 newstate = ops->args[1];
	if (newstate != PC_TCP_ESTABLISHED && newstate != PC_TCP_CLOSE)
		return;
	struct bpf_sock *sk = ops->sk;
	if (!sk)
		return;
	struct pc_sk_info *i = pc_sk_infos.sk_storage_get(sk, 0, 0);
	if (!i || !i->owner.agent)
		return;
	struct pc_tcp_args a = {};
	pc_tcp_addrs(ops, &a);
	a.oldstate = (u8)ops->args[0];
	a.newstate = (u8)newstate;
	struct pc_sk_owner copy = i->owner;
	pc_tcp_emit(&a, &copy);
}

/* Relies on: a BPF_CGROUP_SOCK_OPS program runs for the TCP sockets of its
 * cgroup and descendants: BPF_SOCK_OPS_TCP_CONNECT_CB from tcp_connect()
 * in the connecting task (connect() or a TFO sendto), after connect4/6 ran
 * in the same call and after the socket entered SYN_SENT; with
 * BPF_SOCK_OPS_STATE_CB_FLAG set on a socket (4.16+),
 * BPF_SOCK_OPS_STATE_CB from tcp_set_state() on each later transition,
 * softirq included, with args[0] the old state and args[1] the new one,
 * while the socket and its storage still exist. */
int pc_tcp_ops(struct bpf_sock_ops *ops)
{
	u32 op = ops->op;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		pc_tcp_follow(ops);
	else if (op == BPF_SOCK_OPS_STATE_CB)
		pc_tcp_changed(ops);
	return 1;
}
