#!/usr/bin/env bash
# Provide everything Quorum's tests, demo and benchmarks need. Idempotent.
#  - etcd 3.4.23 from Debian bookworm (etcd-server, etcd-client), installed system-wide;
#  - etcd 3.5.16 from Debian trixie, fetched with `apt-get download` through a private apt
#    configuration and unpacked into .tools/etcd-3.5 (no system upgrade); it brings etcdutl;
#  - build tools (protoc for etcd-client's gRPC code, GNU time for benchmarks, man-db to
#    check the generated manual pages);
#  - xfsprogs, to loop-mount a small XFS with reflinks (restore's copy-on-write member dbs);
#  - systemd, for `systemd-analyze verify` of deploy/quorum-agent.service (nothing is started);
#  - promtool 2.42 from Debian bookworm's `prometheus` (without its recommends; the server's
#    service is left stopped): the agent tests lint a live /metrics scrape and unit-test the
#    alerting rules in deploy/ with it;
#  - the object-storage test servers of crates/testkit/src/servers.rs: tinyproxy from Debian (the
#    tests run their own instances; the system service is left stopped), moto[server] (S3) and
#    gcp-storage-emulator (GCS) in a project venv at .tools/pyenv, Azurite (Azure Blob) from npm
#    in .tools/node;
#  - OpenStack nova 34.0.0 in a venv of its own at .tools/nova-venv (apart from .tools/pyenv, so
#    that moto's pins and nova's never meet): crates/numa/tests/nova/differential.py asks it the
#    answers `quorum numa fit` must give.
# Versions are pinned below.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in etcd-server etcd-client protobuf-compiler time hyperfine openssl curl tinyproxy systemd man-db xfsprogs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}"
fi

# promtool: only the tool is wanted. --no-install-recommends keeps node-exporter (a service) out.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: installing prometheus (for promtool)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends prometheus
fi
if [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
promtool --version 2>&1 | sed -n 1p

# etcd 3.5 from trixie, unpacked locally.
e35="$tools/etcd-3.5"
if [ ! -x "$e35/usr/bin/etcdutl" ] || [ ! -x "$e35/usr/bin/etcd" ]; then
  echo "setup: fetching etcd 3.5 from Debian trixie into $e35"
  apt_dir="$tools/apt-trixie"
  rm -rf "$apt_dir" "$e35.tmp"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/preferences.d" "$apt_dir/dl" "$e35.tmp"
  # Use the Debian mirror this machine is already configured with; only the suite changes.
  mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)"
  [ -n "$mirror" ] || mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1 || true)"
  [ -n "$mirror" ] || { echo "setup: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$apt_dir/sources.list"
  touch "$apt_dir/status"
  opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::Preferences="$apt_dir/etc/preferences" -o Dir::Etc::PreferencesParts="$apt_dir/etc/preferences.d"
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::Status="$apt_dir/status"
        -o Dir::Cache="$apt_dir/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -q
  (cd "$apt_dir/dl" && apt-get "${opts[@]}" download etcd-server etcd-client)
  for deb in "$apt_dir"/dl/*.deb; do dpkg-deb -x "$deb" "$e35.tmp"; done
  rm -rf "$e35"; mv "$e35.tmp" "$e35"
  rm -rf "$apt_dir"
fi
# sed, not head: head would exit after one line and, with pipefail, etcd's SIGPIPE fails the script.
"$e35/usr/bin/etcd" --version | sed -n 1p
etcd --version | sed -n 1p

# tinyproxy: only the binary is wanted; tests start their own on free ports.
if [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now tinyproxy >/dev/null 2>&1 || true
fi

# A venv at $1 with the pinned requirements $2, built from whatever python3 is on PATH
# (python3-venv installed when missing); $3 records the pins, so a change of pins rebuilds it.
make_venv() {
  local dir="$1" reqs="$2" marker="$3"
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: installing python3-venv"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3 python3-venv
  fi
  echo "setup: installing $reqs into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086
  "$dir/bin/pip" install -q --disable-pip-version-check $reqs
  echo "$reqs" > "$dir/$marker"
}

# Python servers (and the Prometheus text parser the agent tests use) in a project venv.
MOTO_VERSION=5.2.5
GCS_EMULATOR_VERSION=2026.7.19
PROMETHEUS_CLIENT_VERSION=0.21.1
py_reqs="moto[server]==$MOTO_VERSION gcp-storage-emulator==$GCS_EMULATOR_VERSION prometheus_client==$PROMETHEUS_CLIENT_VERSION"
pyenv="$tools/pyenv"
# The venv is rebuilt when the pins change, its Python is gone, or the checkout moved (entry
# scripts carry the venv's absolute path in their #! line).
venv_ok() {
  "$pyenv/bin/python" -c '' 2>/dev/null || return 1
  [ "$(cat "$pyenv/.testkit-reqs" 2>/dev/null)" = "$py_reqs" ] || return 1
  for exe in moto_server gcp-storage-emulator; do
    [ -x "$pyenv/bin/$exe" ] && IFS= read -r first < "$pyenv/bin/$exe" || return 1
    case "$first" in "#!$pyenv/bin/python"*) ;; *) return 1 ;; esac
  done
}
venv_ok || make_venv "$pyenv" "$py_reqs" .testkit-reqs

# nova itself, for the differential test of `quorum numa fit`, in a venv of its own. Rebuilt when
# the pin changes or the venv's Python is gone (only bin/python is used, so a moved checkout
# keeps working).
NOVA_VERSION=34.0.0
nova_reqs="nova==$NOVA_VERSION"
nova_venv="$tools/nova-venv"
nova_venv_ok() {
  "$nova_venv/bin/python" -c '' 2>/dev/null || return 1
  [ "$(cat "$nova_venv/.nova-reqs" 2>/dev/null)" = "$nova_reqs" ] || return 1
}
nova_venv_ok || make_venv "$nova_venv" "$nova_reqs" .nova-reqs

# Azurite from npm. 3.35.0 is the newest release that supports Node 20 (3.36 needs Node >= 21).
AZURITE_VERSION=3.35.0
node_dir="$tools/node"
if [ ! -x "$node_dir/node_modules/.bin/azurite-blob" ] \
   || [ "$(cat "$node_dir/.testkit-azurite" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  if ! command -v npm >/dev/null; then
    echo "setup: installing nodejs npm"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
  fi
  echo "setup: installing azurite $AZURITE_VERSION into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
  echo "$AZURITE_VERSION" > "$node_dir/.testkit-azurite"
fi
"$pyenv/bin/moto_server" --help >/dev/null
"$nova_venv/bin/python" -W ignore -c 'import nova.virt.hardware, nova.virt.libvirt.driver'
echo "moto $MOTO_VERSION, gcp-storage-emulator $GCS_EMULATOR_VERSION, azurite $("$node_dir/node_modules/.bin/azurite-blob" --version), $(tinyproxy -v), nova $NOVA_VERSION"
