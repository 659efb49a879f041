/* SPDX-License-Identifier: Apache-2.0
 * GPU allocation: a cgroup device program that lets an agent open only the
 * /dev/nvidiaN nodes it was given. Self-contained (its own BPF object, loaded
 * by pycontain/kernel/devices.py only when some agent is confined).
 *
 * /dev/nvidiaN is char 195:N. Minors 254 (nvidia-modeset) and 255 (nvidiactl)
 * are control nodes every CUDA process needs; nvidia-uvm, nvidia-uvm-tools and
 * nvidia-caps have majors of their own. So only 195:0..253 is ever denied.
 */
#include <uapi/linux/bpf.h>

#define PC_NVIDIA_MAJOR 195
#define PC_FIRST_CONTROL_MINOR 254
#define PC_MAX_LEVELS 16

/* which GPU minors an agent may open: bit N of bits[N / 64] */
struct pc_gpu_grant {
	u64 bits[4];
};

BPF_HASH(pc_gpu_grants, u64, struct pc_gpu_grant, 4096);   /* agent cgroup v2 id -> grant */

static __always_inline int pc_granted(struct pc_gpu_grant *g, u32 minor)
{
	u32 word = (minor >> 6) & 3;
	return (g->bits[word] >> (minor & 63)) & 1;
}

/* Relies on: the kernel running every BPF_CGROUP_DEVICE program attached to
 * the task's cgroup and its ancestors (BPF_F_ALLOW_MULTI) on open() of a
 * device inode (devcgroup_inode_permission) and on mknod, in the context of
 * the task doing it, and turning a return of 0 into -EPERM. So the current
 * task's cgroup ancestry says which agent asks; the deepest agent cgroup
 * found in pc_gpu_grants is the one whose grant applies. The program is only
 * attached to agent cgroups: a task running it with no grant found is in an
 * agent cgroup whose entry is being removed, and gets no GPU (fail closed). */
int pc_gpu_device(struct bpf_cgroup_dev_ctx *ctx)
{
	u32 type = ctx->access_type & 0xffff;
	if (type != BPF_DEVCG_DEV_CHAR || ctx->major != PC_NVIDIA_MAJOR || ctx->minor >= PC_FIRST_CONTROL_MINOR)
		return 1;
	struct pc_gpu_grant *found = 0;
#pragma unroll
	for (int level = 0; level < PC_MAX_LEVELS; level++) {
		u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		struct pc_gpu_grant *g = pc_gpu_grants.lookup(&id);
		if (g)
			found = g;
	}
	if (!found)
		return 0;
	return pc_granted(found, ctx->minor);
}
