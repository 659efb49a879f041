#!/usr/bin/env bash
# pycontain set-up, one idempotent command, as root, on Debian or Ubuntu:
#   - distro packages: BCC's Python bindings (python3-bpfcc) and kernel headers
#     for the running kernel (or, where the distro has none, its generic headers
#     linked into /lib/modules/$(uname -r), with a message saying so)
#   - tracefs mounted (BCC attaches tracepoints through it)
#   - a venv made from the SYSTEM python with system site packages (BCC's
#     bindings exist only there; PyPI's "bcc" is an unrelated package)
#   - the project installed into it (editable: the native agent spawner
#     pycontain/actuate/_spawn.c is compiled next to its source; gcc and
#     python3-dev are installed for it; without them agents start through
#     the slower Python path), and `pycontain` on root's PATH
# Re-running it does nothing that is already done.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PYCONTAIN_PREFIX:-/opt/pycontain}
VENV="$PREFIX/venv"
QUIET=${PYCONTAIN_INSTALL_QUIET:-0}
say() { [ "$QUIET" = 1 ] || echo "install: $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: must run as root (it installs distro packages and loads BPF programs)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install.sh: only Debian/Ubuntu (apt) are supported by this script" >&2
  exit 1
fi

KREL=$(uname -r)
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $APT_UPDATED = 0 ]; then say "apt-get update"; apt-get update -qq; APT_UPDATED=1; fi
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install python3-bpfcc python3-seccomp python3-venv python3-pip python3-dev gcc iproute2 ca-certificates

# --- kernel headers ----------------------------------------------------------
if [ ! -e "/lib/modules/$KREL/build/include" ]; then
  if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1 || { [ $APT_UPDATED = 0 ] && apt-get update -qq && APT_UPDATED=1 && apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; }; then
    apt_install "linux-headers-$KREL"
  else
    . /etc/os-release
    generic=linux-headers-amd64
    [ "${ID:-}" = ubuntu ] && generic=linux-headers-generic
    [ "$(dpkg --print-architecture)" = arm64 ] && generic=${generic/amd64/arm64}
    apt_install "$generic"
    hdr=$(ls -d /usr/src/linux-headers-*-"$(dpkg --print-architecture)" /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n1 || true)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$hdr" ]; then echo "install.sh: no kernel headers found after installing $generic" >&2; exit 1; fi
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$hdr" "/lib/modules/$KREL/build"
    ln -sfn "${common:-$hdr}" "/lib/modules/$KREL/source"
    echo "install: NOTE: the distro has no headers for kernel $KREL; linked the generic headers $hdr" \
         "into /lib/modules/$KREL. pycontain's probes read no kernel struct layouts from headers" \
         "(offsets come from BTF), so tracepoint and cgroup programs work with them."
  fi
fi

# --- tracefs -----------------------------------------------------------------
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug || true
fi

# --- venv + project ----------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import bcc" 2>/dev/null; then
  say "creating $VENV (system python, --system-site-packages)"
  rm -rf "$VENV"
  mkdir -p "$PREFIX"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$PREFIX/.installed"
want="$SRC $(cat "$SRC/pyproject.toml" "$SRC/setup.py" "$SRC/pycontain/actuate/_spawn.c" | sha256sum | cut -c1-16)"
native() { "$VENV/bin/python" -c "import pycontain.actuate._spawn" 2>/dev/null; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c "import pycontain, click" 2>/dev/null \
   || ! native; then
  say "installing pycontain from $SRC"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$SRC[test]"
  echo "$want" > "$stamp"
  native || echo "install: NOTE: the native agent spawner (pycontain/actuate/_spawn.c) did not build;" \
                 "agents start through the slower Python path (see docs/benchmarks.md)" >&2
fi
ln -sfn "$VENV/bin/pycontain" /usr/local/bin/pycontain
say "ready: $(command -v pycontain) ($("$VENV/bin/python" -c 'import pycontain; print(pycontain.__version__)'))"
