/* SPDX-License-Identifier: Apache-2.0
 * Socket creation: raw IP sockets and packet sockets (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py); pc_net_rule_slot is in net.bpf.h.
 *
 * - SOCK_RAW in AF_INET/AF_INET6: cgroup/sock_create (pc_sock_create),
 *   attached to each agent cgroup. Deny returns 0: socket() fails with
 *   EPERM and no socket exists.
 * - AF_PACKET never reaches that hook (it runs in inet_create/inet6_create
 *   only). Fallback: syscalls:sys_enter_socket, where bpf_send_signal(SIGKILL)
 *   kills the calling process; the signal is delivered on the return to user
 *   mode, so the process dies before user code can use the descriptor. Where
 *   BPF-LSM is available, the socket_create LSM hook is the stronger choice
 *   (it fails the call instead of killing); this kernel refuses LSM programs.
 *   io_uring's IORING_OP_SOCKET does not pass sys_enter_socket.
 * - Families no hook judges (PC_CFG_DENY_FAMILY): everything but unix, inet,
 *   inet6, netlink, packet and alg. AF_VSOCK reaches the hypervisor and
 *   other VMs, AF_RDS and AF_TIPC carry data to other nodes from kernel
 *   sockets, AF_MCTP reaches the BMC: none passes the cgroup sock_addr or
 *   skb programs. Same tracepoint, same kill.
 */

#include "net.bpf.h"

#define PC_SOCK_RAW 3
#define PC_SOCK_PACKET 10      /* obsolete AF_INET/SOCK_PACKET: the kernel makes it AF_PACKET */
#define PC_SOCK_TYPE_MASK 0xf  /* type also carries SOCK_NONBLOCK / SOCK_CLOEXEC */
#define PC_AF_UNIX 1
#define PC_AF_NETLINK 16
#define PC_AF_PACKET 17
#define PC_AF_ALG 38

/* Families whose traffic a program judges (unix: local.c; inet: connect.c,
 * egress.c), that stay on the node (netlink, alg: the kernel's own), or that
 * have a rule of their own (packet). */
static __always_inline int pc_family_judged(u32 family)
{
	return family == PC_AF_INET || family == PC_AF_INET6 || family == PC_AF_UNIX ||
	       family == PC_AF_NETLINK || family == PC_AF_ALG;
}

static __always_inline void pc_socket_emit(u32 agent, u8 verdict, u32 rule, u16 flags,
					   u32 family, u32 type, u32 protocol)
{
	struct pc_socket *e = PC_RESERVE_FOR(struct pc_socket, agent, verdict != PC_ALLOW);
	if (!e)
		return;
	pc_fill_header(&e->h, PC_EV_SOCKET, agent);
	e->h.verdict = verdict;
	e->h.rule_id = rule;
	e->h.flags = flags;
	e->family = family;
	e->type = type;
	e->protocol = protocol;
	e->_pad0 = 0;
	pc_submit(e, &e->h);
}

/* Relies on: BPF_CGROUP_INET_SOCK_CREATE runs in inet_create/inet6_create in
 * the socket() caller's context, after the sock is allocated and before the
 * descriptor is installed; returning 0 frees it and socket() fails (EPERM). */
int pc_sock_create(struct bpf_sock *sk)
{
	/* the type first: a field read, where the agent test is a hash lookup */
	u32 type = sk->type;
	if (type != PC_SOCK_RAW)
		return 1;   /* stream/dgram sockets are judged at connect/sendmsg */
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent || !cfg)
		return 1;
	u8 verdict = PC_ALLOW;
	u32 rule = 0;
	if (cfg->flags & PC_CFG_DENY_RAW) {
		rule = pc_net_rule_slot(PC_NR_RAW);
		verdict = pc_deny_verdict(cfg);
	}
	pc_socket_emit(agent, verdict, rule, 0, sk->family, type, sk->protocol);
	return verdict != PC_DENY;
}

/* Relies on: sys_enter_socket runs in the caller's context before the socket
 * exists; bpf_send_signal(SIGKILL) queues a fatal signal for the whole thread
 * group, acted on before the syscall returns to user mode. */
TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
	u32 family = (u32)args->family;
	u32 type = (u32)args->type;
	int packet = family == PC_AF_PACKET ||
		     (family == PC_AF_INET && (type & PC_SOCK_TYPE_MASK) == PC_SOCK_PACKET);
	if (!packet && pc_family_judged(family))
		return 0;
	struct pc_config *cfg = pc_cfg();
	u32 agent = pc_agent_of_current(cfg);
	if (!agent || !cfg)
		return 0;
	u8 verdict = PC_ALLOW;
	u32 rule = 0;
	u16 flags = 0;
	u32 deny = packet ? PC_CFG_DENY_PACKET : PC_CFG_DENY_FAMILY;
	if (cfg->flags & deny) {
		rule = packet ? pc_net_rule_slot(PC_NR_PACKET) : pc_named_rule(PC_NX_FAMILY);
		verdict = pc_deny_verdict_kill(cfg, &flags);
	}
	pc_socket_emit(agent, verdict, rule, flags, family, type, (u32)args->protocol);
	return 0;
}
