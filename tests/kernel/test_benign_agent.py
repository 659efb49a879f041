"""A benign agent under the default policy is never touched (issue 12 part 11).

Through `pycontain run` with the built-in default policy plus an SSH allow
entry for the test host: downloads from several HTTP services, HTTP to many
paths, an SSH session to the allowed host, DNS queries to a resolver stand-in.
Checked from the far side (the bytes arrived) and from the audit log (no
violation, no denied record)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
HTTP_PORTS = (80, 8000, 8080)

# run by the agent (a dynamic uid) from $AGENT, so no file of pytest's root-only tmp is needed
AGENT = r"""
import hashlib, os, socket, struct, sys, time, urllib.request
host, host6 = os.environ["HOST"], os.environ["HOST6"]
out = []
for port in (80, 8000, 8080):                       # downloads from several services
    data = urllib.request.urlopen(f"http://{host}:{port}/blob.bin", timeout=5).read()
    out.append(f"download {port} {hashlib.sha256(data).hexdigest()}")
data = urllib.request.urlopen(f"http://[{host6}]:8080/blob.bin", timeout=5).read()
out.append(f"download6 {hashlib.sha256(data).hexdigest()}")
ok = 0
for i in range(120):                                # a crawler: many paths, a few services
    port = (80, 8000, 8080)[i % 3]
    try:
        urllib.request.urlopen(f"http://{host}:{port}/page{i}.html", timeout=5).read()
    except urllib.error.HTTPError as e:
        ok += e.code == 404
    else:
        ok += 1
out.append(f"pages {ok}")
s = socket.create_connection((host, 22), timeout=3)  # git over SSH: the client speaks first
s.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + b"\x00\x00\x01\x0c\x0a\x14" + b"k" * 16)
time.sleep(0.3); s.close()
out.append("ssh sent")
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
for _ in range(5):                                  # DNS to the resolver
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(q, (host, 53)); u.close()
out.append("dns sent")
print("\n".join(out), flush=True)
"""


def test_benign_agent_is_never_touched_under_default(privileged, testhost):
    www = tempfile.mkdtemp(prefix="pc-benign-")
    try:
        _benign_run(testhost, www)
    finally:
        shutil.rmtree(www, ignore_errors=True)


def _benign_run(testhost, www: str) -> None:
    os.chmod(www, 0o755)
    blob = os.urandom(1 << 20)
    with open(os.path.join(www, "blob.bin"), "wb") as fh:
        fh.write(blob)
    for i in range(0, 120, 2):
        with open(os.path.join(www, f"page{i}.html"), "w") as fh:
            fh.write(f"<p>{i}</p>")
    h4, h6 = testhost.peer_ip4, testhost.peer_ip6
    for port in HTTP_PORTS:
        testhost.run([sys.executable, "-m", "http.server", str(port), "--bind", h4, "--directory", www],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    testhost.run([sys.executable, "-m", "http.server", "8080", "--bind", h6, "--directory", www],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ssh, dns = testhost.tcp_listener(22), testhost.udp_listener(53)
    _wait(f"http://{h4}:8080/blob.bin")
    policy = os.path.join(www, "policy.yaml")
    with open(policy, "w") as fh:
        fh.write(f"extends: default\nname: t-benign\nnetwork:\n  ssh:\n    allow: [{{cidr: {h4}/32}}]\n")
    audit = os.path.join(www, "audit.jsonl")
    env = dict(os.environ, AGENT=AGENT, HOST=h4, HOST6=h6)
    r = subprocess.run(PYCONTAIN + ["run", "--name", "t-benign", "--policy", policy, "--audit-log", audit, "--",
                                    sys.executable, "-c", "import os; exec(os.environ['AGENT'])"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    digest = hashlib.sha256(blob).hexdigest()
    assert [f"download {p} {digest}" for p in HTTP_PORTS] == r.stdout.splitlines()[:3]
    assert f"download6 {digest}" in r.stdout and "pages 120" in r.stdout
    assert ssh.wait(contains=b"SSH-2.0-OpenSSH_9.2p1") and dns.wait(accepted=5)   # the far side got them
    assert b"\x07example\x03com" in dns.received
    recs = [json.loads(x) for x in open(audit) if x.strip()]
    bad = [x for x in recs if x.get("kind") == "violation" or x.get("verdict") not in (None, "allow")]
    assert not bad, bad[:5]


def _wait(url: str) -> None:
    for _ in range(50):
        try:
            urllib.request.urlopen(url, timeout=0.5).read()
            return
        except OSError:
            time.sleep(0.1)
