#!/usr/bin/env bash
# Benchmark: a staged whole-cluster migration's cutover window against the downtime of the
# one-shot migration, etcd 3.5.16, 3-member source into new 3-member clusters. Per run:
#   staged    a writer (crates/migrate/examples/mixed_load.rs: puts, overwrites, deletes, 4-op
#             transactions, keys on a kept-alive lease and on 5 s leases left to run out) at RATE
#             operations/s; `quorum migrate --stage` while it writes; the new members started;
#             `--follow` for FOLLOW seconds; then the writer is stopped and the window runs from
#             that moment until `--cutover` has synced and verified hashkv on every new member.
#             Checked after it: the revisions are equal, and at 20 revisions from the backup's to
#             the last, the writer's keys read with `get --rev` (and hashkv on every member at
#             three of them) equal the source's.
#   one-shot  the writer stopped, the downtime runs from that moment until today's one-shot
#             `quorum migrate` (backup, native restore, the new members started, verification)
#             has finished.
# Prints each run's window and downtime, their medians and ratio. Knobs: OBJECTS (20000), MIB
# (load that many MiB of values instead, e.g. 1024), RUNS (5), RATE (200), FOLLOW (60),
# REVISIONS=deltas (a `quorum agent` captures the source into the repository from the stage on,
# and --follow and --cutover read its delta chain instead of a watch).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
(cd "$root" && cargo build --release --locked -q -p migrate --example mixed_load)
LOAD="$root/target/release/examples/mixed_load"
OBJECTS="${OBJECTS:-20000}" RUNS="${RUNS:-5}" RATE="${RATE:-200}" FOLLOW="${FOLLOW:-60}" REVISIONS="${REVISIONS:-watch}"
BIN="$E35"
declare -A client peer
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
big="--max-request-bytes 16777216 --max-txn-ops 10000 --quota-backend-bytes 8589934592"
start_member() { # name data-dir initial-cluster token
  "$BIN/etcd" --name "$1" --data-dir "$2" --listen-client-urls "${client[$1]}" --advertise-client-urls "${client[$1]}" \
    --listen-peer-urls "${peer[$1]}" --initial-advertise-peer-urls "${peer[$1]}" --initial-cluster "$3" \
    --initial-cluster-state new --initial-cluster-token "$4" --log-level error ${MIB:+$big} >>"$work/$1.log" 2>&1 &
  pids+=("$!")
}
healthy() { for _ in $(seq 1 600); do "$BIN/etcdctl" --endpoints "$1" --dial-timeout 1s --command-timeout 1s endpoint health >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.2f\", $(now) - $1}"; }
members() { local p="$1" s=""; for i in 0 1 2; do s+="${s:+,}$p-$i=${peer[$p-$i]}"; done; echo "$s"; }
clients() { local p="$1" s=""; for i in 0 1 2; do s+="${s:+,}${client[$p-$i]}"; done; echo "$s"; }
for p in src new one; do for i in 0 1 2; do client[$p-$i]="http://127.0.0.1:$(free_port)"; peer[$p-$i]="http://127.0.0.1:$(free_port)"; done; done
src_eps="$(clients src)"

export QUORUM_PASSWORD=quorum-bench-password
unset QUORUM_REPO QUORUM_PASSWORD_FILE QUORUM_KEY_FILE
base="$(mktemp -d -t quorum-stage-base-XXXXXX)"
work="$base"
trap 'stop_all; rm -rf "$base" "${run_dir:-}"' EXIT
# The loaded source is made once, stopped cleanly, and each run starts from a copy.
for i in 0 1 2; do start_member "src-$i" "$base/src-$i" "$(members src)" stage-src; done
healthy "$src_eps"
if [ -n "${MIB:-}" ]; then
  "$root/target/release/quorum-testkit" bulk --endpoints "$src_eps" --mib "$MIB" --min-value 256 --max-value 4096 --concurrency 4 >&2
else
  "$root/target/release/quorum-testkit" load --endpoints "$src_eps" --objects "$OBJECTS" >/dev/null
fi
for p in "${pids[@]}"; do kill "$p"; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=()
echo "bench: source: $(du -sh "$base/src-0" | cut -f1) per member" >&2

windows=() downtimes=()
for run in $(seq 1 "$RUNS"); do
  run_dir="$(mktemp -d -t quorum-stage-XXXXXX)"; work="$run_dir"
  repo="file://$run_dir/repo"
  "$Q" repo init --repo "$repo" >/dev/null 2>&1
  for i in 0 1 2; do cp -a "$base/src-$i" "$run_dir/src-$i"; done
  for i in 0 1 2; do start_member "src-$i" "$run_dir/src-$i" "$(members src)" stage-src; done
  healthy "$src_eps"
  "$LOAD" --endpoints "$src_eps" --rate "$RATE" >"$run_dir/load.out" 2>"$run_dir/load.err" &
  writer=$!
  args=(migrate --repo "$repo" --cluster "stage-$run" --from-endpoints "$src_eps" --initial-cluster "$(members new)"
    --initial-cluster-token "stage-$run" --data-dir "$run_dir/{name}")
  "$Q" "${args[@]}" --stage >"$run_dir/stage.out" 2>"$run_dir/stage.err" || { cat "$run_dir/stage.err" >&2; exit 1; }
  for i in 0 1 2; do start_member "new-$i" "$run_dir/new-$i" "$(members new)" "stage-$run"; done
  healthy "$(clients new)"
  args+=(--to-endpoints "$(clients new)" --revisions-from "$REVISIONS")
  agent=""
  if [ "$REVISIONS" = deltas ]; then
    # The agent's capture starts after the newest backup of the cluster: the stage's.
    cat >"$run_dir/agent.yaml" <<EOF
cluster: stage-$run
name: a0
endpoints: [${client[src-0]}]
listen: 127.0.0.1:$(free_port)
election: {ttl_seconds: 5}
repo: {url: '$repo'}
backup: {schedule: '0 0 1 1 *', from: endpoints}
defrag: {enabled: false}
delta: {interval_seconds: 0.5, spool_dir: '$run_dir/spool'}
EOF
    "$Q" agent --config "$run_dir/agent.yaml" >/dev/null 2>"$run_dir/agent.log" &
    agent=$!
  fi
  "$Q" "${args[@]}" --follow >"$run_dir/follow.out" 2>"$run_dir/follow.err" &
  follower=$!
  sleep "$FOLLOW"
  # Writers stop: the window starts.
  kill -TERM "$writer"; wait "$writer"
  t0=$(now)
  kill -TERM "$follower"; wait "$follower" || { echo "bench: --follow failed" >&2; cat "$run_dir/follow.err" >&2; exit 1; }
  "$Q" "${args[@]}" --cutover --settle 30s -w json >"$run_dir/cutover.json" 2>"$run_dir/cutover.err" || { cat "$run_dir/cutover.err" >&2; exit 1; }
  window=$(since "$t0")
  # Checked after the window: equal revisions; hashkv and the writer's keys at 20 revisions.
  python3 - "$run_dir/cutover.json" "$BIN/etcdctl" "$src_eps" "$(clients new)" <<'PY' >&2 || exit 1
import json, subprocess, sys
cut, ctl, src, new = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4].split(",")
assert cut["verification"]["ok"], cut
def rev(eps):
    return json.loads(subprocess.check_output([ctl, "--endpoints", eps, "endpoint", "status", "-w", "json"]))[0]["Status"]["header"]["revision"]
# The cutover's revision; the source may have moved on since, as the stopped writer's leases
# run out there (they live a grace longer in the new cluster).
last = int(cut["target_revision"])
assert rev(src) >= last and all(rev(e) == last for e in new), "revisions differ"
def hashkv(ep, r):
    return json.loads(subprocess.check_output([ctl, "--endpoints", ep, "endpoint", "hashkv", "--rev", str(r), "-w", "json"]))[0]["HashKV"]["hash"]
def keys(ep, r):
    out = json.loads(subprocess.check_output([ctl, "--endpoints", ep, "get", "/bench/", "--prefix", "--rev", str(r), "-w", "json"]))
    return out.get("kvs", [])
# 20 revisions spread over the last half of the history (the writer's part of it).
revs = sorted({max(1, last - (last - 1) * i // 40) for i in range(20)})
# hashkv (a pass over the whole store per member) at three of them; the writer's keys at all.
for i, r in enumerate(revs):
    if i in (0, len(revs) // 2, len(revs) - 1):
        want = hashkv(src.split(",")[0], r)
        for e in new:
            assert hashkv(e, r) == want, f"hashkv at {r} on {e}"
    assert keys(new[0], r) == keys(src.split(",")[0], r), f"keys at {r}"
print(f"bench: checked revision {last}, and 20 revisions {revs[0]}..{revs[-1]} (get --rev; hashkv at 3): equal")
PY
  kill -TERM "${pids[@]:3:3}" 2>/dev/null || true
  [ -z "$agent" ] || { kill -TERM "$agent"; wait "$agent" 2>/dev/null || true; }
  # The one-shot migration of the same (stopped) source: the downtime.
  t0=$(now)
  oargs=(migrate --repo "$repo" --cluster "one-$run" --from-endpoints "$src_eps" --initial-cluster "$(members one)"
    --initial-cluster-token "one-$run" --data-dir "$run_dir/{name}" --to-endpoints "$(clients one)" --start-timeout 600s)
  "$Q" "${oargs[@]}" >"$run_dir/one.out" 2>"$run_dir/one.err" &
  one=$!
  until [ -d "$run_dir/one-0/member" ] && [ -d "$run_dir/one-1/member" ] && [ -d "$run_dir/one-2/member" ]; do
    kill -0 "$one" 2>/dev/null || { cat "$run_dir/one.err" >&2; exit 1; }
    sleep 0.05
  done
  for i in 0 1 2; do start_member "one-$i" "$run_dir/one-$i" "$(members one)" "one-$run"; done
  wait "$one" || { cat "$run_dir/one.err" >&2; exit 1; }
  downtime=$(since "$t0")
  echo "run $run: cutover window ${window}s, one-shot downtime ${downtime}s; writer $(cat "$run_dir/load.out"); $(sed -n 's/.*"revisions_applied": *\([0-9]*\).*/cutover applied \1 revision(s)/p' "$run_dir/cutover.json" | head -1), $(sed -n 's/.*"since": *\([0-9]*\).*/verified from the follow'"'"'s checkpoint at revision \1/p' "$run_dir/cutover.json" | head -1)"
  windows+=("$window"); downtimes+=("$downtime")
  stop_all; rm -rf "$run_dir"; run_dir=""
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mw=$(median "${windows[@]}") md=$(median "${downtimes[@]}")
echo "revisions from: $REVISIONS"
echo "cutover window median ${mw}s over $RUNS run(s) (${windows[*]}); one-shot downtime median ${md}s (${downtimes[*]}); ratio $(ratio "$mw" "$md")"
