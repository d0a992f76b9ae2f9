# Shared set-up steps for scripts/run and scripts/test. Every step is idempotent:
# it checks first and only installs what is missing, so a warm machine pays nothing.
# shellcheck shell=sh disable=SC2034  # SYSTEM_PACKAGES_* are used by the scripts that source this

: "${PYTHON:=python3}"
: "${DP_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/dynamic-prefix}"
export DP_CACHE
GO_MIN_MINOR=26
GO_TOOLCHAIN_VERSION=go1.26.8

say() { printf '==> %s\n' "$*" >&2; }

# logged LOG COMMAND...: run COMMAND with its output in LOG (one `say` line per step is what shows);
# when it fails, show the end of LOG.
logged() {
  _log=$1
  shift
  "$@" >"$_log" 2>&1 && return 0
  tail -n 30 "$_log" >&2
  say "failed: $* (the whole output: $_log)"
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

# System packages: Python's venv and headers (systemd-python builds against
# libsystemd), and the real peers the tests talk to.
SYSTEM_PACKAGES_RUN="python3-venv python3-dev gcc pkg-config libsystemd-dev iproute2"
SYSTEM_PACKAGES_TEST="$SYSTEM_PACKAGES_RUN mosquitto mosquitto-clients radvd nftables isc-dhcp-server isc-dhcp-client dhcpcd-base busybox shellcheck systemd unzip curl git ca-certificates openssl buildah debootstrap faketime"

ensure_system_packages() {
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "not a Debian/Ubuntu machine: install these yourself:$missing"; return 0
  fi
  say "installing system packages:$missing"
  mkdir -p "$DP_CACHE"
  apt_log=$DP_CACHE/apt.log
  # shellcheck disable=SC2086
  if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >"$apt_log" 2>&1 ||
         { as_root apt-get update -q >>"$apt_log" 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >>"$apt_log" 2>&1; }; }; then
    say "could not install:$missing (needs root or passwordless sudo; apt's output: $apt_log); the tests that need them will say so"
  fi
}

go_ok() {
  command -v go >/dev/null 2>&1 || return 1
  v=$(go env GOVERSION 2>/dev/null) || return 1
  minor=$(printf '%s' "$v" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  [ -n "$minor" ] && [ "$minor" -ge "$GO_MIN_MINOR" ]
}

# Go >= 1.26 builds kube-apiserver, etcd and helm. If the machine has none, the
# toolchain is fetched from the Go module proxy (golang.org/toolchain), the same
# place `GOTOOLCHAIN` takes it from.
ensure_go() {
  go_ok && return 0
  dir="$DP_CACHE/$GO_TOOLCHAIN_VERSION"
  if [ ! -x "$dir/bin/go" ]; then
    arch=$(uname -m); case "$arch" in x86_64) arch=amd64;; aarch64) arch=arm64;; esac
    url="https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN_VERSION.linux-$arch.zip"
    say "fetching Go $GO_TOOLCHAIN_VERSION from the Go module proxy"
    mkdir -p "$DP_CACHE" && tmp=$(mktemp -d "$DP_CACHE/go.XXXXXX") || return 0
    if curl -fsSL -o "$tmp/go.zip" "$url" && unzip -q "$tmp/go.zip" -d "$tmp"; then
      rm -rf "$dir" && mv "$tmp/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN_VERSION.linux-$arch" "$dir"
    else
      say "could not fetch Go; the kube-apiserver tests will say so"
    fi
    rm -rf "$tmp"
  fi
  [ -x "$dir/bin/go" ] && PATH="$dir/bin:$PATH" && export PATH
  return 0
}

ensure_venv() {
  ensure_venv_at .venv "$@"
}

# ensure_venv_at DIR PIP-ARGS...: a venv in DIR with PIP-ARGS installed, redone
# only when pyproject.toml, a requirements file named in PIP-ARGS or the
# arguments change.
ensure_venv_at() {
  venv=$1
  shift
  if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$PYTHON" -m venv "$venv"
  fi
  reqs=""
  prev=""
  for arg in "$@"; do
    [ "$prev" = "-r" ] && reqs="$reqs $arg"
    prev=$arg
  done
  # One stamp per set of arguments: scripts sharing .venv with different
  # extras do not undo each other (pip installs only add).
  # shellcheck disable=SC2086 # a word list of requirement files
  stamp=$venv/.installed-$({ cat pyproject.toml $reqs; echo "$@"; } | cksum | cut -d' ' -f1)
  [ -f "$stamp" ] && return 0
  say "updating pip in $venv"
  logged "$venv/pip.log" "$venv/bin/python" -m pip install --upgrade pip
  say "installing $* into $venv"
  logged "$venv/pip.log" "$venv/bin/python" -m pip install "$@"
  touch "$stamp"
}
