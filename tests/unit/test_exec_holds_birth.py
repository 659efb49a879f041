"""A child held at birth (clone3 into another cgroup, issue 10) is never
released: only killed and settled (pycontain/kernel/exec_holds.py)."""

from __future__ import annotations

import ctypes

from pycontain.kernel import exec_holds


class _Table(dict):
    def __getitem__(self, k):
        return super().__getitem__(int(k.value))

    def __delitem__(self, k):
        super().__delitem__(int(k.value))

    def items(self):
        return [(ctypes.c_uint32(k), v) for k, v in super().items()]


def _bpf(held: dict[int, int]) -> dict[bytes, object]:
    t = _Table({pid: ctypes.c_uint64(v) for pid, v in held.items()})
    return {b"pc_exec_held": t, b"pc_exec_holds": {}}


def test_a_child_held_at_birth_is_not_released_and_times_out_like_any_hold():
    bpf = _bpf({4242: 1_000 | exec_holds.HELD_AT_BIRTH})
    assert exec_holds.release(bpf, 4242) is False
    assert 4242 in bpf[b"pc_exec_held"]                 # still held: the gate still kills it
    assert exec_holds.held(bpf) == {4242: 1_000}        # the timeout sees its real age


def test_release_of_a_pid_not_held_does_nothing():
    assert exec_holds.release(_bpf({}), 4242) is False


def test_the_gates_returned_mark_is_not_part_of_the_hold_time():
    bpf = _bpf({4242: 5_000 | exec_holds.HELD_RETURNED, 4343: 7_000 | exec_holds.HELD_AT_BIRTH})
    assert exec_holds.held(bpf) == {4242: 5_000, 4343: 7_000}
