#!/usr/bin/env python3
"""`pycontain run` as a user runs it (not a test): wall time of the command.

    sudo /opt/pycontain/venv/bin/python scripts/bench_run_cli.py [--rounds 5] [--baseline-tree DIR]

Two ways, each a fresh `python -m pycontain.cli run ... -- true`, timed from
the spawn to its exit (interpreter start, imports, the run and its exit):

* standalone: `run --no-daemon` (this run compiles or loads its programs,
  contains `true`, tears down), with a warm program cache;
* daemon: `run` through a node daemon of the same tree on a private socket
  (started once per tree, pins in a private bpffs dir, released at the end).

With --baseline-tree (a checkout, e.g. a git worktree of an older commit)
the same is measured for that tree; trees alternate within each round, and
the medians are reported with their spread and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_ready import ROOT, tree_env  # scripts/ is on sys.path when a script runs


def timed_run(tree: str, env: dict[str, str], args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pycontain.cli", "run", *args, "--", "true"], env=env, cwd=tree,
                   check=True, capture_output=True)
    return time.perf_counter() - t


class Daemon:
    """A node daemon of `tree` on a private socket and pin dir."""

    def __init__(self, tree: str, tmp: str, name: str):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.env = tree_env(tree, {"PYCONTAIN_BPFFS": f"/sys/fs/bpf/pycontain-runcli-{os.getpid()}-{name}"})
        self.cmd = [sys.executable, "-m", "pycontain.cli", "daemon", "--socket", self.sock]
        self.proc = subprocess.Popen([*self.cmd, "--allow-no-gpu", "--audit-log", os.path.join(tmp, f"{name}.jsonl")],
                                     env=self.env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the daemon of {tree} exited ({self.proc.returncode})")
            time.sleep(0.1)
        time.sleep(1.0)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        subprocess.run([*self.cmd, "--release"], env=self.env, capture_output=True)


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:7.0f} ms ({min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-tree", help="another checkout to compare with, interleaved")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (loads BPF programs)", file=sys.stderr)
        return 2
    trees = {"this": ROOT}
    if args.baseline_tree:
        trees["baseline"] = os.path.abspath(args.baseline_tree)
    res: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pycontain-runcli-") as tmp:
        daemons = {name: Daemon(tree, tmp, name) for name, tree in trees.items()}
        try:
            for tree in trees.values():      # warm each tree's program cache
                timed_run(tree, tree_env(tree, {}), ["--no-daemon"])
            for r in range(args.rounds):
                for name, tree in trees.items():
                    res.setdefault((name, "standalone"), []).append(
                        timed_run(tree, tree_env(tree, {}), ["--no-daemon"]))
                    res.setdefault((name, "daemon"), []).append(
                        timed_run(tree, daemons[name].env, ["--daemon-only", "--daemon-socket", daemons[name].sock]))
                print(f"round {r + 1} done", file=sys.stderr, flush=True)
        finally:
            for d in daemons.values():
                d.close()
    for way in ("standalone", "daemon"):
        for name in trees:
            xs = res[(name, way)]
            ratio = ""
            if "baseline" in trees:
                ratio = f"  ratio to baseline {statistics.median(xs) / statistics.median(res[('baseline', way)]):.2f}"
            print(f"{way:10s} {name:8s} {summary(xs)}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
