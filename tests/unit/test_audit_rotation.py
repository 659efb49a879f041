"""The audit log rotates by size and reopens on request (logrotate +
SIGUSR1) without losing or duplicating a line, while another thread writes;
its lines carry the host, the agent's pod/job and the rule's severity."""

import glob
import json
import os
import threading

from pycontain.core.rule_ids import RuleMeta
from pycontain.observe.audit import AuditLog

N = 3000


def _all_lines(base):
    out = []
    for f in glob.glob(base + "*"):
        with open(f) as fh:
            out += [json.loads(line)["n"] for line in fh]
    return out


def _writer(log, flush_every=7, halfway=None):
    """N lines; with `halfway` (an Event), wait for it after N/2 of them, so a
    rotation surely falls between lines however the threads are scheduled."""
    for i in range(N):
        if halfway is not None and i == N // 2:
            halfway.wait(10)
        log.write({"ts": 0, "agent": "a", "kind": "exec", "pid": 1, "n": i}, flush=i % flush_every == 0)


def test_size_rotation_keeps_every_line_exactly_once(tmp_path):
    base = str(tmp_path / "audit.log")
    log = AuditLog(base, max_bytes=4096, keep=1000)
    t = threading.Thread(target=_writer, args=(log,))
    t.start()
    t.join()
    log.close()
    got = _all_lines(base)
    assert sorted(got) == list(range(N))
    files = glob.glob(base + ".*")
    assert len(files) > 10 and all(os.path.getsize(f) <= 4096 for f in files)
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files + [base])


def test_logrotate_move_then_reopen_loses_nothing(tmp_path):
    base = str(tmp_path / "audit.log")
    log = AuditLog(base)
    halfway = threading.Event()
    t = threading.Thread(target=_writer, args=(log,), kwargs={"halfway": halfway})
    t.start()
    moved = 0
    while t.is_alive() and moved < 20:      # logrotate: rename, then SIGUSR1 -> reopen
        if os.path.exists(base):
            os.replace(base, f"{base}.r{moved}")
            log.reopen()
            moved += 1
            halfway.set()
    t.join()
    log.close()
    assert moved > 0
    assert sorted(_all_lines(base)) == list(range(N))


def test_keep_bounds_the_number_of_old_files(tmp_path):
    base = str(tmp_path / "audit.log")
    log = AuditLog(base, max_bytes=512, keep=3)
    _writer(log)
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    newest = _all_lines(base)
    assert max(newest) == N - 1


def test_records_carry_host_identity_severity_and_tags(tmp_path):
    base = str(tmp_path / "audit.log")
    log = AuditLog(base, host="gpu-node-7")
    log.rule_meta = {"miners": RuleMeta("miners", "critical", ("mining",))}
    log.set_agent("job", "/system.slice/slurmstepd.scope/job_42/step_0")
    log.write({"ts": 1, "agent": "job", "kind": "violation", "pid": 5, "rule": "miners"})
    log.write({"ts": 2, "agent": "other", "kind": "exec", "pid": 6})
    log.forget_agent("job")
    log.write({"ts": 3, "agent": "job", "kind": "agent-stop", "pid": None})
    log.close()
    with open(base) as fh:
        a, b, c = (json.loads(x) for x in fh)
    assert (a["host"], a["slurm_job"], a["slurm_step"], a["severity"], a["tags"]) == \
        ("gpu-node-7", "42", "0", "critical", ["mining"])
    assert b["host"] == "gpu-node-7" and "slurm_job" not in b and "severity" not in b
    assert "slurm_job" not in c
