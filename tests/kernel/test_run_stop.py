"""`pycontain run` stops like `docker stop` (issue 13 part 4): the signal is
forwarded to the agent; an agent that traps it is killed, with every process
of its cgroup, after --stop-timeout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
TRAPPING = "trap 'echo got-$1 >> {log}' TERM INT; ( trap '' TERM INT; sleep 317 ) & while :; do sleep 0.1; done"


def wait_ready(log_path, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if "ready" in log_path.read_text():
            return True
        time.sleep(0.2)
    return False


def test_trapping_agent_gets_the_signal_then_is_killed(privileged, tmp_path):
    log, err = tmp_path / "agent.log", tmp_path / "err.log"
    log.write_text("")
    script = f"echo ready >> {log}; " + TRAPPING.format(log=log).replace("got-$1", "got-signal")
    with open(err, "w") as fh:
        # --user root: the agent logs into pytest's root-only temp dir (the test is about signals)
        p = subprocess.Popen(PYCONTAIN + ["run", "--user", "root", "--name", "stoptest", "--stop-timeout", "1", "--",
                                          "bash", "-c", script], stdout=fh, stderr=subprocess.STDOUT)
    try:
        assert wait_ready(log, p), err.read_text()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert "got-signal" in log.read_text(), "the agent never saw the forwarded SIGTERM"
    assert rc == 128 + signal.SIGKILL, err.read_text()
    assert "did not stop within 1s" in err.read_text()
    # nothing of the agent is left: its background child ignored TERM too
    r = subprocess.run(["pgrep", "-f", "sleep 317"], capture_output=True, text=True)
    assert r.stdout.strip() == "", r.stdout
