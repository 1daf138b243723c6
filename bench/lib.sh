# Shared helpers for the benchmarks: build, make a >= 1 GiB snapshot from a real etcd, time commands.
# shellcheck shell=bash
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/bench/out"
mkdir -p "$out"
E34=/usr/bin
E35="$root/.tools/etcd-3.5/usr/bin"
export ETCDCTL_API=3

# QUORUM_BIN=PATH: measure that quorum binary (e.g. a build of another commit) instead of
# building this checkout's.
bench_build() {
  bash "$root/scripts/setup.sh" >/dev/null
  if [ -n "${QUORUM_BIN:-}" ]; then
    Q="$QUORUM_BIN"
    return 0
  fi
  (cd "$root" && cargo build --release --locked -q -p quorum -p testkit)
  Q="$root/target/release/quorum"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# big_snapshot FILE MIB: a snapshot of a real etcd 3.5 member holding about MIB MiB of values
# (kube-like keys, values of 256 B to 4 KiB), made once and reused.
big_snapshot() {
  local file="$1" mib="$2"
  [ -s "$file" ] && return 0
  local d; d="$(mktemp -d -t quorum-bench-XXXXXX)"
  local c="http://127.0.0.1:$(free_port)" p="http://127.0.0.1:$(free_port)"
  "$E35/etcd" --name b --data-dir "$d/b" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "b=$p" \
    --unsafe-no-fsync --quota-backend-bytes 8589934592 --max-request-bytes 16777216 --max-txn-ops 10000 \
    --log-level error >"$d/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do "$E35/etcdctl" --endpoints "$c" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  echo "bench: loading $mib MiB into etcd 3.5 (one time, cached in $file)" >&2
  "$root/target/release/quorum-testkit" bulk --endpoints "$c" --mib "$mib" --min-value 256 --max-value 4096 --concurrency 4 >&2
  "$E35/etcdctl" --endpoints "$c" snapshot save "$file.part" >/dev/null 2>&1
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$d"
  mv "$file.part" "$file"
}

# measure NAME RUNS CMD...: best wall seconds and peak RSS (MiB) over RUNS runs; sets
# WALL[NAME] and RSS[NAME].
declare -A WALL RSS
measure() {
  local name="$1" runs="$2"; shift 2
  local best="" rss=0 i w m
  for i in $(seq 1 "$runs"); do
    /usr/bin/time -f "%e %M" -o "$out/.time" "$@" >/dev/null 2>&1 || { echo "bench: $name failed: $*" >&2; exit 1; }
    read -r w m < "$out/.time"
    if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
    [ "$m" -gt "$rss" ] && rss="$m"
  done
  WALL[$name]="$best"; RSS[$name]=$((rss / 1024))
}

# alternate SETUP RUNS NAME_A CMD_A NAME_B CMD_B: run the two shell commands in turn, RUNS
# times each, SETUP (then sync) before every run; so drift on a shared machine (page cache,
# writeback, a neighbour's load) falls on both alike. Sets WALL (best), MED (median wall),
# CPU (median user + system seconds) and RSS (peak, MiB) for both names.
declare -A MED CPU
alternate() {
  local setup="$1" runs="$2"; shift 2
  local -A walls cpus peak
  local i n c w u s m
  for i in $(seq 1 "$runs"); do
    for n in "$1" "$3"; do
      if [ "$n" = "$1" ]; then c="$2"; else c="$4"; fi
      $setup; sync
      /usr/bin/time -f "%e %U %S %M" -o "$out/.time" sh -c "$c" >/dev/null 2>&1 || { echo "bench: $n failed: $c" >&2; exit 1; }
      read -r w u s m < "$out/.time"
      walls[$n]+="$w "; cpus[$n]+="$(awk "BEGIN{print $u + $s}") "
      [ "$m" -gt "${peak[$n]:-0}" ] && peak[$n]="$m"
    done
  done
  for n in "$1" "$3"; do
    WALL[$n]=$(tr ' ' '\n' <<<"${walls[$n]}" | grep . | sort -g | head -1)
    MED[$n]=$(median ${walls[$n]}); CPU[$n]=$(median ${cpus[$n]}); RSS[$n]=$((peak[$n] / 1024))
  done
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2] + v[NR/2+1]) / 2 }'; }

ratio() { awk "BEGIN{ if ($2 == 0) print \"inf\"; else printf \"%.2f\", $1 / $2 }"; }

# print_results NAME...: the wall time and peak RSS of each measured command, as a table.
print_results() {
  printf '\n%-28s %10s %12s\n' command "wall (s)" "peak RSS MiB"
  local n
  for n in "$@"; do printf '%-28s %10s %12s\n' "$n" "${WALL[$n]}" "${RSS[$n]}"; done
  echo
}
