"""The ROME demo a newcomer runs: every move stopped, checked from outside."""

from __future__ import annotations

import subprocess
import sys


def test_rome_demo_stops_every_move(privileged):
    r = subprocess.run([sys.executable, "-m", "pycontain.demo"], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "every ROME move was stopped" in out
    assert "sentinel file never created" in out
    assert "pool listener accepted 0" in out and "ssh target accepted 0" in out
    assert "none of them stratum" in out
    # legitimate work still worked
    assert "HTTP GET" in out and "worked" in out
