#!/usr/bin/env python3
"""Controller start-up benchmark (not a test): Controller.start() to ready.

    sudo /opt/pycontain/venv/bin/python scripts/bench_ready.py [--rounds 5] [--baseline-tree DIR]

Each sample is a fresh process, as each `pycontain run --no-daemon` is: it
starts the real controller (bench.py's policy) and reports the time to ready
with its parts: the BCC compile (bpf_module_create_c_from_string) and the
program loads (bcc_func_load: the kernel verifier; summed over the two
threads that load programs, so it can exceed its share of ready). Configurations
run in interleaved rounds, medians and spread reported:

* compile: the program cache off (PYCONTAIN_BPF_CACHE=off), every start compiles;
* cache: a warm program cache (kernel/prog_cache.py), written before round 1;
* baseline (with --baseline-tree, e.g. a git worktree of the parent commit):
  that tree's code and ebpf/ sources.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, tempfile
from bcc.libbcc import lib
spent = {"compile": 0.0, "verify": 0.0}
def timed(name, key):
    f = getattr(lib, name)
    def w(*a):
        t = time.perf_counter()
        try:
            return f(*a)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(lib, name, w)
timed("bpf_module_create_c_from_string", "compile")
timed("bcc_func_load", "verify")
from pycontain.app.controller import Controller
from pycontain.core.policy import load_policy_text
from pycontain.observe.audit import AuditLog
from pycontain.observe.state import NodeState
policy = "extends: default\nname: bench\nnetwork:\n  local_services: any\n"
with tempfile.NamedTemporaryFile(suffix=".jsonl") as audit:
    ctl = Controller(load_policy_text(policy), audit=AuditLog(audit.name), state=NodeState(), allow_no_gpu=True)
    ctl.start()
    ready = ctl.started_ready_s
    ctl.close()
print(json.dumps({"ready": ready, **spent}))
"""


def tree_env(tree: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment that runs `tree`'s code and ebpf/ sources (also bench_run_cli.py)."""
    return {**os.environ, "PYTHONPATH": tree, "PYCONTAIN_EBPF_DIR": os.path.join(tree, "ebpf"), **extra}


def sample(tree: str, env_extra: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD], env=tree_env(tree, env_extra), cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-tree", help="another checkout to compare with, interleaved")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (loads BPF programs)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pycontain-bench-cache-") as cache:
        configs = {"compile": (ROOT, {"PYCONTAIN_BPF_CACHE": "off"}),
                   "cache": (ROOT, {"PYCONTAIN_BPF_CACHE": cache})}
        if args.baseline_tree:
            configs["baseline"] = (os.path.abspath(args.baseline_tree), {"PYCONTAIN_BPF_CACHE": "off"})
        sample(*configs["cache"])          # writes the cache
        res: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
        for r in range(args.rounds):
            for name, (tree, env) in configs.items():
                res[name].append(sample(tree, env))
                print(f"round {r + 1} {name}: {res[name][-1]['ready']:.2f} s", file=sys.stderr, flush=True)
    out = {name: {part: statistics.median(s[part] for s in samples) for part in ("ready", "compile", "verify")}
           for name, samples in res.items()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    ref = out["baseline" if "baseline" in out else "compile"]["ready"]
    for name, samples in res.items():
        parts = {p: [s[p] for s in samples] for p in ("ready", "compile", "verify")}
        print(f"{name:9s} ready {summary(parts['ready'])}  compile {summary(parts['compile'])}  "
              f"verify {summary(parts['verify'])}  "
              f"ratio {statistics.median(parts['ready']) / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
