"""The ROME demo a newcomer runs: every move stopped, checked from outside."""

from __future__ import annotations

import os
import subprocess
import sys


def test_rome_demo_stops_every_move(privileged):
    r = subprocess.run([sys.executable, "-m", "pycontain.demo"], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, COLUMNS="200"))    # table cells on one line each
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "every ROME move was stopped" in out
    assert "sentinel file never created" in out
    assert "pool listener accepted 0" in out and "ssh target accepted 0" in out
    assert "none of them stratum" in out
    # legitimate work still worked
    assert "HTTP GET" in out and "worked" in out
    # probing (issue 12 part 10): the scan is cut off by scan detection; the service
    # the scan would find (port 1900, past the first 64 ports) was never reached
    assert "service on port 1900 accepted 0 connection(s); network.scan reported" in out
    assert "64 closed, 1036 refused by the kernel (EPERM)" in out
    # GPU diversion: the screen says the GPU is simulated; the renamed miner dies by its GPU use
    assert "The GPU in this demo is SIMULATED" in out
    assert "killed by gpu.signature" in out or "killed by gpu.correlation" in out
    assert "move 6: divert the GPU" in out and "the GPU miner finished" not in out
