"""The kernel edge: compiling and loading the BPF programs of ebpf/ with BCC,
writing their maps, reading the ring buffer, BTF offsets and run-time feature
detection.

It may import `core` (event layouts, kernel tables) and bcc. It knows nothing
of cgroup files, NVML, the audit log or the CLI.
"""
