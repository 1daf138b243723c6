#!/usr/bin/env bash
# Provide everything Quorum's tests, demo and benchmarks need. Idempotent.
#  - etcd 3.4.23 from Debian bookworm (etcd-server, etcd-client), installed system-wide;
#  - etcd 3.5.16 from Debian trixie, fetched with `apt-get download` through a private apt
#    configuration and unpacked into .tools/etcd-3.5 (no system upgrade); it brings etcdutl;
#  - build tools (protoc for etcd-client's gRPC code, GNU time for benchmarks).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in etcd-server etcd-client protobuf-compiler time hyperfine openssl curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}"
fi

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
"$e35/usr/bin/etcd" --version | head -1
etcd --version | head -1
