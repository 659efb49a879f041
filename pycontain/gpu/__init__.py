"""The GPU edge: the NVML wrapper (one error funnel), the sampler, the
attribution of GPU processes to agents, and GPU allocation per agent.

It may import `core` (samples, GPU rules), `actuate` (cgroup layout for
attribution, the v1 devices controller), `kernel` (the cgroup device
program) and pynvml.
"""
