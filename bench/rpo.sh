#!/usr/bin/env bash
# Benchmark: the agent's recovery point (RPO) when the whole cluster is lost.
# Each run: a fresh 3-member etcd 3.5 cluster on 127.0.0.1, an S3 repository (moto, one server
# for all runs, a bucket per run), one `quorum agent` capturing deltas every 0.5 s; a writer
# (crates/agent/examples/rpo_load.rs) puts unique keys at RATE/s from STREAMS concurrent streams
# and logs every acknowledged put with its revision and wall time; at a random moment in the
# second half of DURATION every etcd member is killed with kill -9. The agent is stopped once its
# spool is empty, the newest captured revision is restored (`quorum restore --at-revision`) into
# a new member, and the acknowledged puts missing from it are counted: how many, and the span of
# wall time their acknowledgements cover.
# Results: one line per run, then min/median/max; also written to bench/out/rpo-results.txt.
# Usage: bench/rpo.sh   Knobs (environment): DURATION seconds (300), RUNS (5), RATE (1000),
# STREAMS (32), INTERVAL (delta.interval_seconds, 0.5), KEEP=1 keeps the work directory.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION="${DURATION:-300}" RUNS="${RUNS:-5}" RATE="${RATE:-1000}" STREAMS="${STREAMS:-32}" INTERVAL="${INTERVAL:-0.5}"
t_start=$(date +%s)
bench_build
(cd "$root" && cargo build --release --locked -q -p agent --example rpo_load)
LOAD="$root/target/release/examples/rpo_load"
MOTO="$root/.tools/pyenv/bin/moto_server"
[ -x "$MOTO" ] || { echo "bench: $MOTO missing (scripts/setup.sh)" >&2; exit 1; }

work="$out/rpo-work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
# stop PID...: kill -9 and reap our own children, and forget them (a PID is never reused by us).
stop() {
  local p
  for p in "$@"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  forget "$@"
}
forget() {
  local p q keep
  keep=()
  for q in "${pids[@]}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    keep+=("$q")
  done
  pids=("${keep[@]}")
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
results="$work/results"; : > "$results"
say() { printf '%s\n' "$*" | tee -a "$results"; }
now_ms() { date +%s%3N; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
metric() { curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s; fail after SECONDS.
wait_for() {
  local t="$1"; shift
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "bench: timed out waiting for: $*" >&2; return 1; }
    sleep 0.2
  done
}

export QUORUM_PASSWORD=quorum-bench-password AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
unset QUORUM_REPO QUORUM_PASSWORD_FILE QUORUM_KEY_FILE
s3port=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_for 60 curl -sf "http://127.0.0.1:$s3port/"
s3=(--endpoint "http://127.0.0.1:$s3port" --region us-east-1)

echo "bench: RPO, $RUNS runs of up to ${DURATION}s at $RATE puts/s ($STREAMS streams), delta interval ${INTERVAL}s" >&2
say "run acked rate_per_s killed_at_s restored_revision lost lost_span_ms window_ms"
for run in $(seq 1 "$RUNS"); do
  d="$work/run$run"; mkdir -p "$d"
  # The cluster.
  curls=() purls=() ic=""
  for i in 0 1 2; do
    curls+=("http://127.0.0.1:$(free_port)"); purls+=("http://127.0.0.1:$(free_port)")
    ic+="${ic:+,}m$i=${purls[$i]}"
  done
  epids=()
  for i in 0 1 2; do
    "$E35/etcd" --name "m$i" --data-dir "$d/m$i" --listen-client-urls "${curls[$i]}" --advertise-client-urls "${curls[$i]}" \
      --listen-peer-urls "${purls[$i]}" --initial-advertise-peer-urls "${purls[$i]}" --initial-cluster "$ic" \
      --initial-cluster-token "rpo$run" --log-level error >"$d/m$i.log" 2>&1 &
    epids+=($!); pids+=($!)
  done
  eps="$(IFS=,; echo "${curls[*]}")"
  wait_for 60 "$E35/etcdctl" --endpoints "$eps" --command-timeout=2s endpoint health
  # The repository and the agent.
  curl -sf -X PUT "http://127.0.0.1:$s3port/run$run" >/dev/null
  url="s3://run$run/etcd"
  "$Q" repo init --repo "$url" "${s3[@]}" >"$d/init.log" 2>&1
  mport=$(free_port)
  cat >"$d/agent.yaml" <<EOF
cluster: bench
name: a0
endpoints: [$eps]
listen: 127.0.0.1:$mport
election: {ttl_seconds: 2}
repo: {url: '$url', endpoint: 'http://127.0.0.1:$s3port', region: us-east-1}
backup: {schedule: '0 0 1 1 *', from: endpoints}
defrag: {enabled: false}
delta: {interval_seconds: $INTERVAL, spool_dir: '$d/spool'}
EOF
  "$Q" agent --config "$d/agent.yaml" >/dev/null 2>"$d/agent.log" &
  apid=$!; pids+=($apid)
  capturing() { [ "$(metric "$mport" quorum_capture_running)" = 1 ]; }
  wait_for 120 capturing || { cat "$d/agent.log" >&2; exit 1; }
  # The writer, and kill -9 of the cluster at a random moment of the second half.
  kill_at=$(awk -v s="$RANDOM$run" -v d="$DURATION" 'BEGIN { srand(s); printf "%.3f", d / 2 + rand() * d / 2 }')
  "$LOAD" write --endpoints "$eps" --acks "$d/acks" --rate "$RATE" --streams "$STREAMS" --duration-secs "$DURATION" >"$d/write.out" 2>"$d/write.err" &
  wpid=$!; pids+=($wpid)
  sleep "$kill_at"
  kill -9 "${epids[@]}" 2>/dev/null || true
  killed_ms=$(now_ms)
  stop "${epids[@]}"
  wait_for 60 sh -c "! kill -0 $wpid" || { echo "bench: the writer does not stop" >&2; exit 1; }
  wrc=0; wait "$wpid" || wrc=$?
  forget "$wpid"
  [ "$wrc" = 0 ] || { cat "$d/write.err" >&2; exit 1; }
  # The agent: wait until its spool is empty and the uploaded revision stays put, then stop it.
  sleep 2
  prev=-1 end=$(( $(date +%s) + 60 ))
  while :; do
    segs=$(metric "$mport" quorum_delta_spool_segments); rev=$(metric "$mport" quorum_last_delta_revision)
    [ "$segs" = 0 ] && [ "$rev" = "$prev" ] && break
    prev="$rev"
    [ "$(date +%s)" -lt "$end" ] || { echo "bench: the agent does not settle (spool $segs)" >&2; cat "$d/agent.log" >&2; exit 1; }
    sleep 1
  done
  stop "$apid"
  # Restore the newest captured revision into a new member and count what is missing.
  to=$("$Q" backups deltas --repo "$url" "${s3[@]}" --cluster bench -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["chain"]["contiguous_to"])')
  rc="http://127.0.0.1:$(free_port)" rp="http://127.0.0.1:$(free_port)"
  "$Q" restore --repo "$url" "${s3[@]}" --cluster bench --at-revision "$to" --name r --initial-cluster "r=$rp" \
    --initial-advertise-peer-urls "$rp" --initial-cluster-token "restored$run" --data-dir "$d/restored" >"$d/restore.log" 2>&1
  "$E35/etcd" --name r --data-dir "$d/restored" --listen-client-urls "$rc" --advertise-client-urls "$rc" \
    --listen-peer-urls "$rp" --initial-advertise-peer-urls "$rp" --initial-cluster "r=$rp" --log-level error >"$d/r.log" 2>&1 &
  rpid=$!; pids+=($rpid)
  wait_for 60 "$E35/etcdctl" --endpoints "$rc" --command-timeout=2s endpoint health
  line=$("$LOAD" check --endpoints "$rc" --acks "$d/acks" --revision "$to" --kill-ms "$killed_ms")
  stop "$rpid"
  row="$run $(field acked "$line") $(field rate "$line") $kill_at $to $(field lost "$line") $(field lost_span_ms "$line") $(field window_ms "$line")"
  echo "$row" >> "$work/rows"
  say "$row"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
done

# The distribution over the runs: min / median / max.
dist() {
  awk -v c="$1" '{ print $c }' "$work/rows" | sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "min %s  median %s  max %s", v[1], m, v[NR] }'
}
say ""
say "acknowledged writes lost:        $(dist 6)"
say "their span of wall time (ms):    $(dist 7)"
say "first lost ack before kill (ms): $(dist 8)"
say "writer rate (puts/s):            $(dist 3)"
say "total $(( $(date +%s) - t_start ))s"
cp "$results" "$out/rpo-results.txt"
