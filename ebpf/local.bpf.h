/* SPDX-License-Identifier: Apache-2.0
 * Local services are not a way out (issue 10 part 4), the part that the
 * inet connect/sendmsg path calls (ebpf/connect.c: pc_local_rule4/6) and
 * the maps ebpf/local.c fills.
 *
 * A destination on this node (127.0.0.0/8, ::1, 0.0.0.0 and :: which the
 * kernel sends to loopback, their ::ffff: forms, and the node's own
 * addresses in pc_node_addrs: a wildcard listener such as sshd on
 * 0.0.0.0:22 answers on eth0's address too) is allowed only when
 *   1. it is a listed local service or a node resolver (pc_local_svc:
 *      address + port, written from network.local_services and
 *      /etc/resolv.conf, 127.0.0.53/54:53 always), or
 *   2. the socket the kernel would deliver to (looked up in the current
 *      network namespace with bpf_sk_lookup_tcp/udp, as the stack itself
 *      does: a wildcard listener on :22 answers 127.0.0.1:22) was bound by
 *      this agent (pc_local_bound, written by local.c's post_bind hooks and
 *      cleared at release), or
 *   3. nothing is bound there (the connection is refused anyway).
 * Otherwise the verdict names rule pc_local_rule[0] ("network.local_services").
 */
#ifndef PYCONTAIN_LOCAL_BPF_H
#define PYCONTAIN_LOCAL_BPF_H

#include "net.bpf.h"

#define PC_UNIX_PATH_LEN 108

struct pc_local_svc_key {      /* a listed local service / resolver */
	u16 port;
	u16 _pad0;
	u8 addr[16];
};

struct pc_node_addr_key {      /* one of the node's own addresses (kernel/node_addrs.py) */
	u8 family;
	u8 _pad0[3];
	u8 addr[16];             /* network order, IPv4 in the first 4 */
};

struct pc_unix_key {           /* a unix socket address as connect() names it */
	u32 len;                 /* abstract names: their length; paths: 0 */
	char path[PC_UNIX_PATH_LEN];
	u64 dir;                 /* a relative path: the caller's working directory (its dentry); else 0 */
};

BPF_HASH(pc_local_bound, struct pc_local_key, u32, 16384);      /* -> agent; full: its own server is refused */
BPF_HASH(pc_local_svc, struct pc_local_svc_key, u32, 1024);     /* -> 1 */
BPF_HASH(pc_local_unix, struct pc_unix_key, u32, 1024);         /* listed unix services -> PC_ANY_AGENT */
/* unix addresses agents bound -> agent; LRU: an evicted entry only refuses
 * the agent its own socket (fail closed), it never grants anything */
BPF_TABLE("lru_hash", struct pc_unix_key, u32, pc_unix_bound, 16384);
/* the node's own addresses, kept current from netlink by user space; an
 * address the map lacks for a moment is judged as remote (documented) */
BPF_HASH(pc_node_addrs, struct pc_node_addr_key, u32, 1024);
BPF_ARRAY(pc_local_rule, u32, 1);                               /* rule id of network.local_services */

#define PC_ANY_AGENT 0xffffffffu

static __always_inline u32 pc_local_rule_id(void)
{
	int zero = 0;
	u32 *r = pc_local_rule.lookup(&zero);
	return r && *r ? *r : 1;
}

/* The receiver's key, from the socket the lookup found. */
static __always_inline u32 pc_local_owner(struct bpf_sock *sk, u32 proto)
{
	struct pc_local_key k = {};
	k.proto = (u8)proto;
	k.family = (u8)sk->family;
	k.port = (u16)sk->src_port;
	if (sk->family == PC_AF_INET6) {
		u32 a0 = sk->src_ip6[0], a1 = sk->src_ip6[1], a2 = sk->src_ip6[2], a3 = sk->src_ip6[3];
		__builtin_memcpy(&k.addr[0], &a0, 4);
		__builtin_memcpy(&k.addr[4], &a1, 4);
		__builtin_memcpy(&k.addr[8], &a2, 4);
		__builtin_memcpy(&k.addr[12], &a3, 4);
	} else {
		u32 a = sk->src_ip4;
		__builtin_memcpy(k.addr, &a, 4);
	}
	u32 *a = pc_local_bound.lookup(&k);
	return a ? *a : 0;
}

static __always_inline int pc_node_addr(u8 family, const u8 *addr16)
{
	struct pc_node_addr_key k = {};
	k.family = family;
	__builtin_memcpy(k.addr, addr16, 16);
	return pc_node_addrs.lookup(&k) != 0;
}

static __always_inline int pc_local_listed(const u8 *addr16, u16 dport)
{
	struct pc_local_svc_key s = {};
	s.port = dport;
	__builtin_memcpy(s.addr, addr16, 16);
	return pc_local_svc.lookup(&s) != 0;
}

/* 0 when the socket the kernel would deliver `t` to is the agent's own or
 * none (refused anyway), else the rule id of network.local_services.
 * proto 262 is MPTCP, whose listeners are TCP sockets. */
static __always_inline u32 pc_local_receiver(struct bpf_sock_addr *ctx, struct bpf_sock_tuple *t, u32 tuple_len,
					     u32 proto, u32 agent)
{
	struct bpf_sock *sk;
	if (proto == IPPROTO_TCP || proto == 262)
		sk = bpf_sk_lookup_tcp(ctx, t, tuple_len, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, t, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	u32 owner = pc_local_owner(sk, proto == 262 ? IPPROTO_TCP : proto);
	bpf_sk_release(sk);
	return owner == agent ? 0 : pc_local_rule_id();
}

/* Where a connect or send to 0.0.0.0 really goes, network order; 0 when the
 * program cannot tell. Relies on: ip_route_output_key_hash_rcu sends a
 * 0.0.0.0 destination to the flow's source address; with none, to the
 * address of the output interface when one is given, else to 127.0.0.1.
 * src: the socket's bound source (connect) or the send's (IP_PKTINFO
 * ipi_spec_dst included: msg_src_ip4). The interface is seen only as
 * SO_BINDTODEVICE (bound_dev_if); UDP also takes it from IP_UNICAST_IF and
 * IP_PKTINFO's ifindex, which sock_addr programs do not get, so a UDP (or
 * ping) destination 0.0.0.0 without a source is unknown. TCP connect
 * ignores IP_UNICAST_IF (checked on 6.18, tests/kernel/test_local_services.py). */
static __always_inline u32 pc_any4_target(struct bpf_sock *sk, u32 proto, u32 src)
{
	if (src)
		return src;
	if (proto != IPPROTO_TCP && proto != 262)
		return 0;
	if (sk && sk->bound_dev_if)
		return 0;
	return bpf_htonl(0x7f000001);
}

/* The local-services verdict for a destination pc_any4_target could not
 * name: any node address may receive it, so it is refused (fail closed). */
static __always_inline u32 pc_local_unknown(struct pc_config *cfg)
{
	return (cfg->flags & PC_CFG_LOCAL_GUARD) ? pc_local_rule_id() : 0;
}

/* Relies on: bpf_sk_lookup_tcp/udp (4.20+) search the socket tables of the
 * current network namespace as the receive path does (established first,
 * then listeners, wildcard binds included); cgroup_sock_addr programs may
 * call them (sock_addr_func_proto). daddr: network order. */
static __always_inline u32 pc_local_rule4(struct bpf_sock_addr *ctx, struct pc_config *cfg, u32 agent,
					  u32 daddr, u16 dport, u32 proto)
{
	if (!(cfg->flags & PC_CFG_LOCAL_GUARD))
		return 0;
	u8 first = (u8)(daddr & 0xff);   /* 0.0.0.0: resolved by pc_any4_target first */
	u8 a16[16] = {};
	__builtin_memcpy(a16, &daddr, 4);
	if (first != 127 && !pc_node_addr(PC_AF_INET, a16))
		return 0;
	if (pc_local_listed(a16, dport))
		return 0;
	struct bpf_sock_tuple t = {};
	t.ipv4.daddr = daddr;
	t.ipv4.dport = bpf_htons(dport);
	return pc_local_receiver(ctx, &t, sizeof(t.ipv4), proto, agent);
}

/* pc_local_rule4 for an IPv4(-mapped) destination that may be 0.0.0.0
 * (a dual-stack socket's ::ffff:0.0.0.0: tcp_v4_connect's 0.0.0.0). */
static __always_inline u32 pc_local_rule4_any(struct bpf_sock_addr *ctx, struct pc_config *cfg, u32 agent,
					      struct bpf_sock *sk, u32 daddr, u16 dport, u32 proto)
{
	if (daddr == 0)
		daddr = pc_any4_target(sk, proto, sk ? sk->src_ip4 : 0);
	return daddr ? pc_local_rule4(ctx, cfg, agent, daddr, dport, proto) : pc_local_unknown(cfg);
}

/* Relies on: as pc_local_rule4. k->addr: the IPv6 destination (not mapped). */
static __always_inline u32 pc_local_rule6(struct bpf_sock_addr *ctx, struct pc_config *cfg, u32 agent,
					  struct pc_lpm6 *k, u16 dport, u32 proto)
{
	if (!(cfg->flags & PC_CFG_LOCAL_GUARD))
		return 0;
	u32 w0, w1, w2, w3;
	__builtin_memcpy(&w0, &k->addr[0], 4);
	__builtin_memcpy(&w1, &k->addr[4], 4);
	__builtin_memcpy(&w2, &k->addr[8], 4);
	__builtin_memcpy(&w3, &k->addr[12], 4);
	u8 a16[16] = {};
	u32 one = bpf_htonl(1);
	struct bpf_sock_tuple t = {};
	if (w0 || w1 || w2 || (w3 != 0 && w3 != one)) {
		if (!pc_node_addr(PC_AF_INET6, k->addr))
			return 0;                /* neither ::1, :: nor the node's */
		__builtin_memcpy(a16, k->addr, 16);
		t.ipv6.daddr[0] = w0;
		t.ipv6.daddr[1] = w1;
		t.ipv6.daddr[2] = w2;
		t.ipv6.daddr[3] = w3;
	} else {
		__builtin_memcpy(&a16[12], &one, 4);   /* connect(::) goes to ::1 */
		t.ipv6.daddr[3] = one;
	}
	if (pc_local_listed(a16, dport))
		return 0;
	t.ipv6.dport = bpf_htons(dport);
	return pc_local_receiver(ctx, &t, sizeof(t.ipv6), proto, agent);
}

#endif /* PYCONTAIN_LOCAL_BPF_H */
