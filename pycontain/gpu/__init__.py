"""The GPU edge: the NVML wrapper (one error funnel), the sampler and the
attribution of GPU processes to agents.

It may import `core` (samples, GPU rules) and `actuate` (cgroup layout for
attribution), and pynvml.
"""
