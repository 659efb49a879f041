"""`privileges:` (issue 10): everything taken by default, each relaxed by name."""

from __future__ import annotations

import pytest

from pycontain.actuate.privileges import DENIED_SYSCALLS, DROPPED_CAPS
from pycontain.core.errors import PycontainError
from pycontain.core.policy import Privileges, load_policy_text


def test_default_takes_everything():
    p = load_policy_text("name: x\n")
    assert p.privileges == Privileges(no_new_privs=True, drop_capabilities=True, seccomp=True)


def test_each_key_relaxes_one_measure():
    p = load_policy_text("name: x\nprivileges:\n  seccomp: false\n")
    assert p.privileges == Privileges(no_new_privs=True, drop_capabilities=True, seccomp=False)


def test_unknown_key_names_file_line_and_key():
    with pytest.raises(PycontainError) as e:
        load_policy_text("name: x\nprivileges:\n  seccmop: false\n", "p.yaml")
    assert "p.yaml:3" in str(e.value) and "seccmop" in str(e.value)


def test_the_escape_capabilities_and_syscalls_are_covered():
    for cap in ("CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_NET_ADMIN",
                "CAP_SYS_RAWIO"):
        assert cap in DROPPED_CAPS
    for sc in ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "bpf", "perf_event_open",
               "kexec_load", "init_module", "finit_module"):
        assert sc in DENIED_SYSCALLS
