# The pycontain node daemon image, as deploy/kubernetes/daemonset.yaml names it:
#   docker build -t ghcr.io/pycontain/pycontain:0.1.0 .
# BCC compiles the probes when the daemon starts, against the host kernel's
# headers, which the DaemonSet mounts (/lib/modules, /usr/src). bcc and
# libseccomp's Python bindings come from Ubuntu (PyPI's "bcc" is another
# project), so the venv sees the system site-packages.
FROM ubuntu:24.04

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3-bpfcc python3-seccomp python3-venv python3-pip ca-certificates iproute2 \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY pycontain /src/pycontain
# the probe sources are compiled at run time: kernel/loader.py reads them here
COPY ebpf /usr/share/pycontain/ebpf
RUN python3 -m venv --system-site-packages /opt/pycontain \
 && /opt/pycontain/bin/pip install --no-cache-dir /src \
 && rm -rf /src

ENV PYCONTAIN_EBPF_DIR=/usr/share/pycontain/ebpf \
    PATH=/opt/pycontain/bin:$PATH
LABEL org.opencontainers.image.title="pycontain" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/pycontain/pycontain" \
      org.opencontainers.image.description="Kernel-level containment of AI agents on GPU nodes (node daemon)"
# root: loading BPF programs and writing cgroups need it (the DaemonSet runs privileged)
ENTRYPOINT ["pycontain"]
CMD ["daemon", "--policy=/etc/pycontain/policy.yaml"]
