#!/usr/bin/env bash
# Benchmark: reading objects from a backup in an S3 bucket (moto) without fetching the snapshot
# (issue 17): `k8s get --repo` of one object, `k8s ls --repo -n NS`, `k8s get --repo -n NS` and
# `backups get --etcd-key`, against `backups get` of the whole snapshot, on a snapshot of >= 1 GiB;
# and `restore --repo` from the bucket against `snapshot restore` of the local file (one member).
# The S3 server is reached through quorum-testkit's relay, which counts the bytes it forwards:
# what each command fetched is measured on the wire, not reported by Quorum. Wall time is the
# median of RUNS (3). `restore --repo` fetches from the server directly; the bench gives its CPU
# time and the S3 server's: they share this machine's cores, which the reference (the restore
# of a local file) has to itself.
# Results: printed and written to bench/out/k8s-repo-results.txt.
# Usage: bench/k8s-repo.sh [SNAPSHOT_FILE]   (default: bench/out/snapshot-1g.db, made once)
# Knobs: RUNS (3), LEVEL (the repository's zstd level, `repo init --compression`; default -1).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${RUNS:-3}"
bench_build
snap="${1:-$out/snapshot-1g.db}"
[ -n "${1:-}" ] || big_snapshot "$snap" 800
size=$(stat -c %s "$snap")
MOTO="$root/.tools/pyenv/bin/moto_server"
TK="$root/target/release/quorum-testkit"
work="$out/k8s-repo-work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
results="$work/results"; : >"$results"
say() { printf '%s\n' "$*" | tee -a "$results"; }
export QUORUM_PASSWORD=quorum-bench-password AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
unset QUORUM_REPO QUORUM_PASSWORD_FILE QUORUM_KEY_FILE
s3port=$(free_port) rport=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1 & pids+=($!)
echo pass >"$work/relay.fault"
"$TK" relay --listen "127.0.0.1:$rport" --to "127.0.0.1:$s3port" --control "$work/relay.fault" 2>"$work/relay.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$rport/" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$rport/bench" >/dev/null
R=(--repo s3://bench/etcd --endpoint "http://127.0.0.1:$rport" --region us-east-1)
init_level=(); [ -z "${LEVEL:-}" ] || init_level=("--compression=$LEVEL")
"$Q" repo init "${R[@]}" "${init_level[@]}" >/dev/null
echo "backing up $snap ($size bytes) into S3 through the relay" >&2
"$Q" backup "${R[@]}" --cluster prod --snapshot "$snap" --quiet >/dev/null

first=$("$Q" k8s ls "$snap" --resource configmaps -w json | python3 -c 'import json,sys; o=json.load(sys.stdin)[0]; print(o["namespace"], o["name"], o["key"])')
read -r ns name key <<<"$first"
nkeys=$("$Q" k8s ls "$snap" -n "$ns" -w json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "object: configmaps/$name in namespace $ns ($nkeys objects in it)" >&2

down() { sleep 0.3; awk '{ print $2 }' "$work/relay.stats"; }
# ticks PID...: the CPU time (user + system, in clock ticks) the processes have used so far.
ticks() { local p n=0; for p in "$@"; do n=$(( n + $(awk '{ print $14 + $15 }' "/proc/$p/stat") )); done; echo "$n"; }
hz=$(getconf CLK_TCK)
# run NAME CMD...: RUNS runs; the median wall time, the bytes the relay forwarded to Quorum, and
# the median CPU seconds of the command (user + system) and of the S3 server (with the relay)
# while it ran: on a machine of few cores they share the cores with the command.
declare -A T B CPU SRV
run() {
  local name="$1"; shift
  local i t0 b0 s0 walls=() cpus=() srvs=()
  for i in $(seq 1 "$RUNS"); do
    rm -rf "$work/whole.db" "$work/d"; sync
    b0=$(down); s0=$(ticks "${pids[@]}"); t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$work/$name.cpu" "$@" >/dev/null 2>"$work/$name.err" \
      || { echo "bench: $name failed: $(cat "$work/$name.err")" >&2; exit 1; }
    walls+=("$(awk "BEGIN{ printf \"%.3f\", $(date +%s.%N) - $t0 }")")
    srvs+=("$(awk "BEGIN{ printf \"%.2f\", ($(ticks "${pids[@]}") - $s0) / $hz }")")
    cpus+=("$(awk '{ printf "%.2f", $1 + $2 }' "$work/$name.cpu")")
    B[$name]=$(( $(down) - b0 ))
  done
  T[$name]=$(median "${walls[@]}") CPU[$name]=$(median "${cpus[@]}") SRV[$name]=$(median "${srvs[@]}")
}
run backups_get_whole "$Q" backups get "${R[@]}" latest -o "$work/whole.db" --quiet
run k8s_get_one "$Q" k8s get "${R[@]}" latest configmaps "$name" -n "$ns"
run k8s_ls_ns "$Q" k8s ls "${R[@]}" latest -n "$ns"
run k8s_get_ns "$Q" k8s get "${R[@]}" latest configmaps -n "$ns" -o json
run etcd_key "$Q" backups get "${R[@]}" latest --etcd-key "$key"
one=(--name m1 --initial-cluster m1=http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380)
run restore_native "$Q" snapshot restore --quiet "$snap" "${one[@]}" --data-dir "$work/d"
# Straight to the server: the relay is this bench's meter, and copies every byte once more.
direct=(--repo s3://bench/etcd --endpoint "http://127.0.0.1:$s3port" --region us-east-1)
run restore_repo "$Q" restore --quiet "${direct[@]}" latest "${one[@]}" --data-dir "$work/d"

say "snapshot $size bytes; S3 (moto) through a counting relay; medians of $RUNS"
say "$(printf '%-22s %10s %14s %10s %12s' command "wall (s)" "bytes fetched" "% snapshot" "vs whole")"
for n in backups_get_whole k8s_get_one k8s_ls_ns k8s_get_ns etcd_key; do
  say "$(printf '%-22s %10s %14s %10s %12s' "$n" "${T[$n]}" "${B[$n]}" "$(awk "BEGIN{ printf \"%.2f\", 100 * ${B[$n]} / $size }")" "$(ratio "${T[$n]}" "${T[backups_get_whole]}")x")"
done
say "target: one object <= 2% of the snapshot"
say "restore --repo from S3 (without the relay): ${T[restore_repo]} s against snapshot restore of the file: ${T[restore_native]} s ($(ratio "${T[restore_repo]}" "${T[restore_native]}")x; target <= 1.5x)"
say "  CPU (user + system, medians): restore --repo ${CPU[restore_repo]} s ($(ratio "${CPU[restore_repo]}" "${CPU[restore_native]}")x" \
  "the native restore's ${CPU[restore_native]} s), S3 server ${SRV[restore_repo]} s, on $(nproc) cores"
cp "$results" "$out/k8s-repo-results.txt"
