"""Feature detection never raises and reports every hook kind."""

from __future__ import annotations

from pycontain.kernel.features import detect_features


def test_report_shape():
    r = detect_features().as_dict()
    assert set(r["hooks"]) == {"tracepoint", "raw_tracepoint", "kprobe", "cgroup_sock_addr",
                               "cgroup_skb", "cgroup_sock", "lsm", "ringbuf", "exit_mmap_tracepoint"}
    for state in r["hooks"].values():
        assert state == "available" or state.startswith("unavailable: ")
    assert r["exec_enforcement"] == ("lsm" if r["hooks"]["lsm"] == "available" else "tracepoint+send_signal")
