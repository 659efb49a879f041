/* SPDX-License-Identifier: Apache-2.0
 * Local services are not a way out (BCC C, issue 10 part 4): which local
 * sockets are the agent's own, and the unix-socket connect/sendmsg verdict.
 * The inet verdict is ebpf/local.bpf.h's, called from connect.c.
 *
 * Compiles on its own (test_ebpf_sources.py). The cgroup programs are
 * attached by pycontain/kernel/cgroup_attach.py like connect.c's; the unix
 * ones only where the kernel has the hooks (6.7+), else `pycontain doctor`
 * says that unix sockets are guarded by the agent's uid alone.
 *
 * Unix verdict: an agent may connect (or send a datagram) to a unix socket
 * address only if it is listed in network.local_services, or was bound by
 * this agent (recorded at bind(2) by the syscall tracepoints below).
 * Addresses are names, not objects: a filesystem path an agent bound and
 * later replaced by a link to another socket would pass; an agent with a
 * dynamic uid (the default for `run`) cannot open other users' sockets in
 * the first place (the kernel checks write permission on the socket file),
 * which is why that stays the first line for path sockets. Abstract names
 * have no permissions and cannot be linked: for them this hook is the line.
 */

#include "local.bpf.h"

#define PC_AF_UNIX 1

/* sockaddr_un pointer given to bind(2), by thread, between enter and exit */
BPF_HASH(pc_unix_binding, u32, u64, 4096);
BPF_PERCPU_ARRAY(pc_unix_scratch, struct pc_unix_key, 1);

/* post_bind4 may read only the IPv4 fields of the socket, post_bind6 only
 * the IPv6 ones: one key builder each. */
static __always_inline void pc_local_key4(struct pc_local_key *k, struct bpf_sock *sk)
{
	k->proto = (u8)sk->protocol;
	k->family = PC_AF_INET;
	k->port = (u16)sk->src_port;
	u32 a = sk->src_ip4;
	__builtin_memcpy(k->addr, &a, 4);
}

static __always_inline void pc_local_key6(struct pc_local_key *k, struct bpf_sock *sk)
{
	k->proto = (u8)sk->protocol;
	k->family = PC_AF_INET6;
	k->port = (u16)sk->src_port;
	u32 a0 = sk->src_ip6[0], a1 = sk->src_ip6[1], a2 = sk->src_ip6[2], a3 = sk->src_ip6[3];
	__builtin_memcpy(&k->addr[0], &a0, 4);
	__builtin_memcpy(&k->addr[4], &a1, 4);
	__builtin_memcpy(&k->addr[8], &a2, 4);
	__builtin_memcpy(&k->addr[12], &a3, 4);
}

/* The bound key is kept on the socket too (pc_sk_infos: the release hook
 * may not read the socket's address). No storage, or pc_local_bound full:
 * the bind is not recorded as the agent's (its own server is refused to it:
 * fail closed). */
static __always_inline void pc_local_remember(struct bpf_sock *sk, struct pc_local_key *k, u32 agent)
{
	struct pc_sk_info *i = pc_sk_infos.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!i)
		return;
	i->local = *k;
	if (pc_local_bound.update(k, &agent) == 0)
		i->bound = 1;
}

/* Relies on: BPF_CGROUP_INET4_POST_BIND runs in the binding task's context
 * after a successful bind(2) (explicit binds only: a listen() that
 * autobinds is not recorded, and the agent is then refused its own
 * server — fail closed), with src_ip4/src_port set. */
int pc_local_post_bind4(struct bpf_sock *sk)
{
	u32 agent = pc_agent_of_current(pc_cfg());
	struct pc_local_key k = {};
	if (!agent)
		return 1;
	pc_local_key4(&k, sk);
	pc_local_remember(sk, &k, agent);
	return 1;
}

/* Relies on: BPF_CGROUP_INET6_POST_BIND, as post_bind4. */
int pc_local_post_bind6(struct bpf_sock *sk)
{
	u32 agent = pc_agent_of_current(pc_cfg());
	struct pc_local_key k = {};
	if (!agent)
		return 1;
	pc_local_key6(&k, sk);
	pc_local_remember(sk, &k, agent);
	return 1;
}

/* Relies on: BPF_CGROUP_INET_SOCK_RELEASE (5.9+) runs in inet_release for
 * every socket of the cgroup, before the socket (and its storage) is freed.
 * A bound key names one live socket (two share it only in a SO_REUSEPORT
 * group, whose other members are then refused to the agent: fail closed).
 * A socket that bound nothing has no key: one storage lookup, no map.
 * Its owner record (pc_sk_owners, written at connect/sendmsg) goes too:
 * left to the LRU, every insert on a node with many agent sockets evicted
 * one, and churned connections pushed a live socket's owner out. What is
 * flushed or retransmitted after close() then names no owner in a record
 * (the agent still comes from the skb): a closed socket carries no
 * session. */
int pc_local_release(struct bpf_sock *sk)
{
	u64 cookie = pc_socket_cookie(sk);
	pc_sk_owners.delete(&cookie);
	struct pc_sk_info *i = pc_sk_infos.sk_storage_get(sk, 0, 0);
	if (!i || !i->bound)
		return 1;
	struct pc_local_key copy = i->local;
	i->bound = 0;
	pc_local_bound.delete(&copy);
	return 1;
}

/* The address a unix connect/sendmsg names, from the kernel's copy.
 * Relies on: the ctx of a cgroup_sock_addr program is struct
 * bpf_sock_addr_kern, whose `uaddr` (the kernel's copy of the address,
 * not the caller's memory) and `uaddrlen` are at PC_OFF_SAK_UADDR /
 * PC_OFF_SAK_UADDRLEN (BTF, kernel/btf.py); reading it with
 * bpf_probe_read_kernel needs CAP_PERFMON, which the loader has. */
#ifndef PC_OFF_SAK_UADDR
#define PC_OFF_SAK_UADDR 8
#endif
#ifndef PC_OFF_SAK_UADDRLEN
#define PC_OFF_SAK_UADDRLEN 32
#endif

/* Which directory a relative path is resolved in: the current task's working
 * directory, as its dentry's address (the kernel resolves a relative
 * sun_path from there: unix_find_bsd). The same name bound in the agent's
 * directory and connected from /run/dbus are then two keys. A bound socket
 * pins its file's dentry and so its directory's. Without BTF offsets: ~0,
 * which no bind records (relative names are then never the agent's own). */
static __always_inline u64 pc_cwd_id(void)
{
#ifdef PC_HAVE_BTF_OFFSETS
	const void *task = (const void *)bpf_get_current_task();
	u64 dentry = pc_read_ptr((const void *)pc_read_ptr(task, PC_OFF_TASK_FS), PC_OFF_FS_PWD_DENTRY);
	return dentry ? dentry : ~0ULL;
#else
	return ~0ULL;
#endif
}

static __always_inline int pc_unix_read(struct pc_unix_key *k, const void *sun, u32 addrlen)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (addrlen <= 2)
		return -1;                   /* autobind / unnamed */
	u32 n = addrlen - 2;
	if (n > PC_UNIX_PATH_LEN)
		n = PC_UNIX_PATH_LEN;
	if (bpf_probe_read_kernel(k->path, PC_UNIX_PATH_LEN, (const char *)sun + 2) < 0)
		return -1;
	if (k->path[0] == 0) {
		k->len = n;                  /* abstract: the name is exactly n bytes */
		/* bytes past n are not part of the name */
#pragma unroll
		for (int i = 1; i < PC_UNIX_PATH_LEN; i++)
			if (i >= n)
				k->path[i] = 0;
	} else {
		int end = 0;                 /* a path ends at its first NUL */
#pragma unroll
		for (int i = 0; i < PC_UNIX_PATH_LEN; i++) {
			if (k->path[i] == 0)
				end = 1;
			if (end)
				k->path[i] = 0;
		}
		if (k->path[0] != '/')
			k->dir = pc_cwd_id();
	}
	return 0;
}

/* The refusal, for the audit log (the connect itself already failed). */
static __always_inline void pc_unix_report(struct pc_config *cfg, u32 agent, const struct pc_unix_key *k)
{
	struct pc_unix *e = PC_RESERVE_FOR(struct pc_unix, agent, 1);
	if (!e)
		return;   /* counted lost for the agent */
	pc_fill_header(&e->h, PC_EV_UNIX, agent);
	e->h.verdict = pc_deny_verdict(cfg);
	e->h.rule_id = pc_local_rule_id();
	e->len = k ? k->len : 0;
	e->_pad0 = 0;
	e->_pad1 = 0;
	if (k)
		__builtin_memcpy(e->path, k->path, sizeof(e->path));
	else
		__builtin_memset(e->path, 0, sizeof(e->path));
	pc_submit(e, &e->h);
}

static __always_inline int pc_unix_decide(struct bpf_sock_addr *ctx)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->flags & PC_CFG_LOCAL_GUARD))
		return 1;
	u32 agent = pc_agent_of_current(cfg);
	if (!agent)
		return 1;
	u64 uaddr = 0;
	u32 ulen = 0;
	bpf_probe_read_kernel(&uaddr, sizeof(uaddr), (const char *)ctx + PC_OFF_SAK_UADDR);
	bpf_probe_read_kernel(&ulen, sizeof(ulen), (const char *)ctx + PC_OFF_SAK_UADDRLEN);
	int zero = 0;
	struct pc_unix_key *k = pc_unix_scratch.lookup(&zero);
	if (!k || !uaddr || pc_unix_read(k, (const void *)uaddr, ulen) < 0) {
		pc_unix_report(cfg, agent, 0);
		return pc_deny_verdict(cfg) != PC_DENY;   /* cannot tell where it goes: fail closed */
	}
	if (pc_local_unix.lookup(k))
		return 1;
	u32 *owner = pc_unix_bound.lookup(k);
	if (owner && *owner == agent)
		return 1;
	pc_unix_report(cfg, agent, k);
	return pc_deny_verdict(cfg) != PC_DENY;
}

/* Relies on: BPF_CGROUP_UNIX_CONNECT (6.7+) runs in unix_stream_connect /
 * unix_dgram_connect before the peer is looked up, in the caller's context;
 * returning 0 fails connect(2) with EPERM. */
int pc_unix_connect(struct bpf_sock_addr *ctx)
{
	return pc_unix_decide(ctx);
}

/* Relies on: BPF_CGROUP_UNIX_SENDMSG (6.7+) runs in unix_dgram_sendmsg for a
 * datagram sent with an address. */
int pc_unix_sendmsg(struct bpf_sock_addr *ctx)
{
	return pc_unix_decide(ctx);
}

/* Relies on: syscalls:sys_enter_bind/sys_exit_bind fire in the binding
 * task; at exit the kernel has bound the address it copied at enter. The
 * address is re-read from the caller's memory at exit (a thread may change
 * it in between: the agent could then record a name it did not bind;
 * documented in docs/threat-model.md as a residual race). */
TRACEPOINT_PROBE(syscalls, sys_enter_bind)
{
	if (args->addrlen <= 2 || args->addrlen > 2 + PC_UNIX_PATH_LEN)
		return 0;
	u16 family = 0;
	bpf_probe_read_user(&family, sizeof(family), (const void *)args->umyaddr);
	if (family != PC_AF_UNIX)
		return 0;
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !pc_agent_of_current(cfg))
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 ptr = ((u64)args->addrlen << 48) | ((u64)args->umyaddr & 0xffffffffffffULL);
	pc_unix_binding.update(&tid, &ptr);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_bind)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *p = pc_unix_binding.lookup(&tid);
	if (!p)
		return 0;
	u64 ptr = *p;
	pc_unix_binding.delete(&tid);
	if (args->ret != 0)
		return 0;
	u32 agent = pc_agent_of_current(pc_cfg());
	int zero = 0;
	struct pc_unix_key *k = pc_unix_scratch.lookup(&zero);
	if (!agent || !k)
		return 0;
	u8 sun[2 + PC_UNIX_PATH_LEN] = {};
	if (bpf_probe_read_user(sun, sizeof(sun), (const void *)(ptr & 0xffffffffffffULL)) < 0)
		return 0;
	if (pc_unix_read(k, sun, (u32)(ptr >> 48)) < 0 || k->dir == ~0ULL)
		return 0;
	pc_unix_bound.update(k, &agent);
	return 0;
}
