#!/usr/bin/env bash
# Soak: the agent for hours under faults.
# A 3-member etcd 3.5 cluster on 127.0.0.1 under a steady writer (crates/agent/examples/rpo_load.rs,
# unique keys, every acknowledged put logged), a `quorum agent` beside every member (each talks to
# its own member, as a static pod would) capturing deltas into an S3 repository (moto) reached
# through a fault-injecting relay (`quorum-testkit relay`), full backups every FULL_EVERY minutes.
# Every FAULT_EVERY seconds one fault, in turn:
#   member-kill    kill -9 a random member, restart it 10 s later on its data dir
#   member-freeze  SIGSTOP a random member for 30 s, then SIGCONT
#   repo-cut       the relay resets every connection to the repository for 60 s
#   agent-kill     kill -9 the leading agent, restart it 5 s later; one agent (KEPT, a2) is
#                  never killed, so that one process lives the whole run for the RSS figures:
#                  while it leads, a follower is killed instead (the fault log says which)
# After each fault: seconds until the cluster is healthy and the leading agent's last stored
# revision has caught up with etcd (RECOVER_WITHIN, else the fault counts as not recovered).
# At the end: the writer stops, the agents drain and stop; then `repo check --read-data`,
# `backups deltas` (gaps), TEN point-in-time restores at random revisions (each started as a real
# etcd whose `endpoint hashkv --rev R` must equal the source's), a restore of the last revision
# checked against every acknowledged put, leftovers (*.partial*) under the work directory, and each
# agent process's RSS 5 minutes after its start and at its end, and its peaks (VmHWM, reset after
# every 20 s sample through /proc/PID/clear_refs, so no short peak is missed) over its first and
# last 20 minutes, and the same peaks over every agent.
# Results: bench/out/soak-results.txt (and soak-faults.txt, soak-rss.txt).
# Usage: bench/soak.sh   Knobs (environment): DURATION seconds (7200), FAULT_EVERY seconds (150),
# RATE puts/s (100), FULL_EVERY minutes (15), RESTORES (10), RECOVER_WITHIN seconds (180),
# KEPT (2: the agent never killed, started first so that it leads at the start), KEEP=1 keeps
# the work directory.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION="${DURATION:-7200}" FAULT_EVERY="${FAULT_EVERY:-150}" RATE="${RATE:-100}" FULL_EVERY="${FULL_EVERY:-15}"
RESTORES="${RESTORES:-10}" RECOVER_WITHIN="${RECOVER_WITHIN:-180}" KEPT="${KEPT:-2}"
t_start=$(date +%s)
bench_build
(cd "$root" && cargo build --release --locked -q -p agent --example rpo_load)
MOTO="$root/.tools/pyenv/bin/moto_server"
[ -x "$MOTO" ] || { echo "soak: $MOTO missing (scripts/setup.sh)" >&2; exit 1; }

work="$out/soak-work"
declare -A PID  # role -> pid: m0..m2, a0..a2, moto, relay, writer
cleanup() {
  local r
  for r in "${!PID[@]}"; do kill -CONT "${PID[$r]}" 2>/dev/null || true; kill -9 "${PID[$r]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work/bin"
# Private copies: a rebuild during the soak must not change what a restarted agent runs.
cp "$Q" "$root/target/release/quorum-testkit" "$root/target/release/examples/rpo_load" "$work/bin/"
Q="$work/bin/quorum" TK="$work/bin/quorum-testkit" LOAD="$work/bin/rpo_load"
results="$work/results" faults="$work/faults" rsslog="$work/rss"
: >"$results"; : >"$faults"; : >"$rsslog"
say() { printf '%s\n' "$*" | tee -a "$results"; }
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
metric() { curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
wait_for() {
  local t="$1"; shift
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

export QUORUM_PASSWORD=quorum-soak-password AWS_ACCESS_KEY_ID=soak AWS_SECRET_ACCESS_KEY=soak-secret
unset QUORUM_REPO QUORUM_PASSWORD_FILE QUORUM_KEY_FILE
# The repository: moto behind the relay.
s3port=$(free_port) relayport=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1 & PID[moto]=$!
echo pass >"$work/relay.fault"
"$TK" relay --listen "127.0.0.1:$relayport" --to "127.0.0.1:$s3port" --control "$work/relay.fault" 2>"$work/relay.log" & PID[relay]=$!
wait_for 60 curl -sf "http://127.0.0.1:$relayport/" || { echo "soak: the S3 server does not start" >&2; exit 1; }
curl -sf -X PUT "http://127.0.0.1:$relayport/soak" >/dev/null
url="s3://soak/etcd" s3=(--endpoint "http://127.0.0.1:$relayport" --region us-east-1)
"$Q" repo init --repo "$url" "${s3[@]}" >"$work/init.log" 2>&1

# The cluster.
curls=() purls=() ic=""
for i in 0 1 2; do
  curls+=("http://127.0.0.1:$(free_port)"); purls+=("http://127.0.0.1:$(free_port)")
  ic+="${ic:+,}m$i=${purls[$i]}"
done
eps="$(IFS=,; echo "${curls[*]}")"
start_member() {
  local i="$1"
  "$E35/etcd" --name "m$i" --data-dir "$work/m$i" --listen-client-urls "${curls[$i]}" --advertise-client-urls "${curls[$i]}" \
    --listen-peer-urls "${purls[$i]}" --initial-advertise-peer-urls "${purls[$i]}" --initial-cluster "$ic" \
    --initial-cluster-token soak --log-level error >>"$work/m$i.log" 2>&1 &
  PID[m$i]=$!
}
for i in 0 1 2; do start_member "$i"; done
healthy() { "$E35/etcdctl" --endpoints "$eps" --command-timeout=2s endpoint health >/dev/null 2>&1; }
wait_for 60 healthy || { echo "soak: the cluster does not start" >&2; exit 1; }
etcd_rev() { "$E35/etcdctl" --endpoints "$eps" --command-timeout=3s get / --prefix --keys-only --limit 1 -w json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'; }

# The agents.
mports=()
for i in 0 1 2; do
  mports+=("$(free_port)")
  cat >"$work/a$i.yaml" <<EOF
cluster: soak
name: a$i
endpoints: [${curls[$i]}]
listen: 127.0.0.1:${mports[$i]}
election: {ttl_seconds: 5}
repo: {url: '$url', endpoint: 'http://127.0.0.1:$relayport', region: us-east-1, refresh_seconds: 30}
backup: {schedule: '*/$FULL_EVERY * * * *', from: endpoints}
defrag: {enabled: false}
delta: {interval_seconds: 1, spool_dir: '$work/spool-a$i'}
EOF
done
start_agent() {
  local i="$1"
  "$Q" agent --config "$work/a$i.yaml" >/dev/null 2>>"$work/a$i.log" &
  PID[a$i]=$!
  echo "$(date +%s) a$i ${PID[a$i]} start" >>"$rsslog"
}
leader() {
  local i
  for i in 0 1 2; do [ "$(metric "${mports[$i]}" quorum_agent_is_leader)" = 1 ] && { echo "$i"; return 0; }; done
  return 1
}
start_agent "$KEPT"
wait_for 60 sh -c "curl -s --max-time 2 http://127.0.0.1:${mports[$KEPT]}/metrics | grep -qx 'quorum_agent_is_leader 1'" \
  || { echo "soak: agent a$KEPT does not lead" >&2; tail -20 "$work/a$KEPT.log" >&2; exit 1; }
for i in 0 1 2; do [ "$i" = "$KEPT" ] || start_agent "$i"; done
capturing() { local l; l=$(leader) && [ "$(metric "${mports[$l]}" quorum_capture_running)" = 1 ]; }
wait_for 120 capturing || { echo "soak: no agent captures" >&2; tail -20 "$work"/a*.log >&2; exit 1; }
# caught_up [SECONDS]: within SECONDS (RECOVER_WITHIN), the cluster is healthy and the leading
# agent has captured the revision etcd had once healthy, with its spool uploaded.
stored_ge() { local l s; l=$(leader) || return 1; s=$(metric "${mports[$l]}" quorum_last_delta_revision); [ -n "$s" ] && [ "$s" -ge "$1" ] && [ "$(metric "${mports[$l]}" quorum_delta_spool_segments)" = 0 ]; }
caught_up() {
  local end=$(( $(date +%s) + ${1:-$RECOVER_WITHIN} )) r
  wait_for "${1:-$RECOVER_WITHIN}" healthy || return 1
  r=$(etcd_rev) || return 1
  wait_for $(( end - $(date +%s) )) stored_ge "$r"
}
rss_sample() {
  local i p kb
  for i in 0 1 2; do
    p="${PID[a$i]}"
    # VmRSS; RssAnon (the heap, without the binary's mapped pages); VmHWM, the peak resident set
    # since the last sample (writing 5 to clear_refs resets it to the current RSS).
    kb=$(awk '/^VmRSS/ { r = $2 } /^RssAnon/ { a = $2 } /^VmHWM/ { h = $2 } END { if (r != "") print r, a, h }' "/proc/$p/status" 2>/dev/null) || continue
    echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true
    [ -n "$kb" ] && echo "$(date +%s) a$i $p $kb" >>"$rsslog"
  done
}

log "soak: ${DURATION}s, a fault every ${FAULT_EVERY}s, $RATE puts/s, full backups every ${FULL_EVERY} min; work dir $work"
"$LOAD" write --endpoints "$eps" --acks "$work/acks" --rate "$RATE" --streams 4 --duration-secs "$DURATION" --give-up-secs 900 \
  >"$work/write.out" 2>"$work/write.err" & PID[writer]=$!
t0=$(date +%s)
kinds=(member-kill member-freeze repo-cut agent-kill)
echo "n kind target start_s recovered_s outcome" >"$faults"
n=0
while :; do
  next=$(( t0 + (n + 1) * FAULT_EVERY ))
  while [ "$(date +%s)" -lt "$next" ]; do rss_sample; sleep 20; done
  [ $(( $(date +%s) + FAULT_EVERY / 2 )) -lt $(( t0 + DURATION )) ] || break
  kind="${kinds[$(( n % ${#kinds[@]} ))]}"
  n=$(( n + 1 ))
  fs=$(( $(date +%s) - t0 ))
  case "$kind" in
    member-kill)
      i=$(( RANDOM % 3 )); target="m$i"
      kill -9 "${PID[m$i]}"; wait "${PID[m$i]}" 2>/dev/null || true
      sleep 10; start_member "$i" ;;
    member-freeze)
      i=$(( RANDOM % 3 )); target="m$i"
      kill -STOP "${PID[m$i]}"; sleep 30; kill -CONT "${PID[m$i]}" ;;
    repo-cut)
      target=relay
      echo reset >"$work/relay.fault"; sleep 60; echo pass >"$work/relay.fault" ;;
    agent-kill)
      i=$(leader) || i=0; target="a$i"
      # The kept agent leads: a follower goes instead.
      [ "$i" != "$KEPT" ] || { i=$(( (KEPT + 1 + RANDOM % 2) % 3 )); target="a$i-follower"; }
      echo "$(date +%s) a$i ${PID[a$i]} killed" >>"$rsslog"
      kill -9 "${PID[a$i]}"; wait "${PID[a$i]}" 2>/dev/null || true
      sleep 5; start_agent "$i" ;;
  esac
  fe=$(date +%s)
  if caught_up; then outcome=recovered; else outcome=NOT-recovered; fi
  rec=$(( $(date +%s) - fe ))
  echo "$n $kind $target $fs $rec $outcome" >>"$faults"
  log "fault $n: $kind $target at ${fs}s, $outcome in ${rec}s after it ended"
done

# The end: the writer stops, the leader drains, the agents stop (SIGTERM).
wait_for 1200 sh -c "! kill -0 ${PID[writer]}" || { echo "soak: the writer does not stop" >&2; exit 1; }
wrc=0; wait "${PID[writer]}" || wrc=$?
unset 'PID[writer]'
[ "$wrc" = 0 ] || { cat "$work/write.err" >&2; exit 1; }
rss_sample
caught_up 300 || { echo "soak: the agents do not catch up at the end" >&2; exit 1; }
final_rev=$(etcd_rev)
sleep 3
for i in 0 1 2; do echo "$(date +%s) a$i ${PID[a$i]} end" >>"$rsslog"; kill -TERM "${PID[a$i]}" 2>/dev/null || true; done
for i in 0 1 2; do wait "${PID[a$i]}" 2>/dev/null || true; unset "PID[a$i]"; done
log "soak: writer done ($(cat "$work/write.out")), etcd at revision $final_rev"

say "soak: $(( $(date +%s) - t0 ))s of load, $n faults; writer: $(cat "$work/write.out")"
say ""
say "faults (kind: tried, recovered, median/max seconds to caught-up after the fault ended):"
for k in "${kinds[@]}"; do
  awk -v k="$k" '$2 == k { t++; if ($6 == "recovered") r++; print $5 }' "$faults" | sort -n >"$work/.rec"
  tried=$(awk -v k="$k" '$2 == k' "$faults" | wc -l); rec=$(awk -v k="$k" '$2 == k && $6 == "recovered"' "$faults" | wc -l)
  med=$(awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }' "$work/.rec"); max=$(tail -1 "$work/.rec")
  say "  $k: $tried tried, $rec recovered, median ${med}s, max ${max:--}s"
done

# The repository.
check_rc=0
"$Q" repo check --repo "$url" "${s3[@]}" --read-data >"$work/check.out" 2>&1 || check_rc=$?
say "repo check --read-data: exit $check_rc ($(tail -1 "$work/check.out"))"
# The chain from the oldest full backup to the end: every revision of the soak restorable.
"$Q" backups list --repo "$url" "${s3[@]}" --cluster soak -w json >"$work/backups.json"
read -r oldest nfull < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["backups"]; o=min(b, key=lambda x: x["snapshot"]["revision"]); print(o["id"], len(b))' "$work/backups.json")
"$Q" backups deltas --repo "$url" "${s3[@]}" --cluster soak --base "$oldest" -w json >"$work/deltas.json"
read -r from to gaps < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["chain"]; print(c["from"], c["contiguous_to"], len(c["gaps"]))' "$work/deltas.json")
say "backups deltas: chain from revision $from contiguous to $to, $gaps gap(s); etcd ended at $final_rev"
say "full backups: $nfull (and $(grep -c 'backup failed' "$work"/a?.log | awk -F: '{ s += $2 } END { print s + 0 }') failed tries logged by the agents)"

# Point-in-time restores at random revisions, each started as an etcd and compared by hashkv.
restore_at() {
  local rev="$1" dir="$2" rc rp
  rc="http://127.0.0.1:$(free_port)" rp="http://127.0.0.1:$(free_port)"
  "$Q" restore --repo "$url" "${s3[@]}" --cluster soak --at-revision "$rev" --name r --initial-cluster "r=$rp" \
    --initial-advertise-peer-urls "$rp" --initial-cluster-token "r$rev" --data-dir "$dir" >"$dir.log" 2>&1 || return 1
  "$E35/etcd" --name r --data-dir "$dir" --listen-client-urls "$rc" --advertise-client-urls "$rc" \
    --listen-peer-urls "$rp" --initial-advertise-peer-urls "$rp" --initial-cluster "r=$rp" --log-level error >>"$dir.log" 2>&1 &
  PID[restored]=$!
  RC="$rc"
  wait_for 60 "$E35/etcdctl" --endpoints "$rc" --command-timeout=2s endpoint health
}
stop_restored() { kill -9 "${PID[restored]}" 2>/dev/null || true; wait "${PID[restored]}" 2>/dev/null || true; unset 'PID[restored]'; }
hashkv() { "$E35/etcdctl" --endpoints "$1" --command-timeout=30s endpoint hashkv --rev "$2" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["HashKV"]["hash"])'; }
equal=0
for k in $(seq 1 "$RESTORES"); do
  rev=$(python3 -c "import random; print(random.randint($from, $to))")
  if restore_at "$rev" "$work/pitr$k"; then
    a=$(hashkv "${curls[0]}" "$rev" || echo "source-failed") b=$(hashkv "$RC" "$rev" || echo "restored-failed")
    [ "$a" = "$b" ] && equal=$(( equal + 1 ))
    echo "pitr $k: revision $rev hashkv source $a restored $b" >>"$results"
  else
    echo "pitr $k: revision $rev: restore failed ($(tail -1 "$work/pitr$k.log"))" >>"$results"
  fi
  stop_restored; rm -rf "$work/pitr$k"
done
say "point-in-time restores equal to the source (hashkv at the revision): $equal of $RESTORES"

# The last revision against every acknowledged put.
restore_at "$to" "$work/last" || { echo "soak: restoring revision $to failed" >&2; cat "$work/last.log" >&2; exit 1; }
line=$("$LOAD" check --endpoints "$RC" --acks "$work/acks" --revision "$to") || true
stop_restored
say "acknowledged puts against the restore of revision $to: $line"

leftovers=$(find "$work" -name '*.partial*' | wc -l)
say "leftovers (*.partial*) under the work directory: $leftovers"

# RSS per agent process: 5 minutes after its start, and at its end.
say ""
say "agent RSS (MiB): process, lifetime, at +5 min, at end, growth; the same for RssAnon (heap, no mapped files)"
python3 - "$rsslog" <<'PY' | tee -a "$results"
import sys
starts, samples, ends = {}, {}, {}
for line in open(sys.argv[1]):
    w = line.split()
    t, a, p = int(w[0]), w[1], w[2]
    if w[3] == "start": starts[p] = (t, a)
    elif w[3] in ("killed", "end"): ends[p] = t
    else: samples.setdefault(p, []).append((t, int(w[3]), int(w[4]), int(w[5])))
t_first = min(t for t, _ in starts.values()); t_last = max(ends.values())
for p, (t0, a) in starts.items():
    s = samples.get(p, [])
    early = [x for x in s if x[0] >= t0 + 300]
    if not early: continue
    end = ends.get(p, s[-1][0]); first, last = early[0], s[-1]
    g = lambda i: f"{first[i] / 1024:.1f}, {last[i] / 1024:.1f}, {100 * (last[i] - first[i]) / max(first[i], 1):+.1f}%"
    print(f"  {a} pid {p}: {(end - t0) / 60:.0f} min, {g(1)}; anon {g(2)}")
    # Peaks over the first and the last 20 minutes (each holds a full backup) of a process
    # that lived an hour or more.
    if end - t0 >= 3600:
        head = [x for x in s if x[0] <= t0 + 1200]; tail = [x for x in s if x[0] >= end - 1200]
        ph, pt = max(x[2] for x in head), max(x[2] for x in tail)
        rh, rt = max(x[3] for x in head), max(x[3] for x in tail)
        print(f"    peak in its first and last 20 min: RSS (VmHWM) {rh / 1024:.1f}, {rt / 1024:.1f} ({100 * (rt - rh) / rh:+.1f}%); anon (sampled) {ph / 1024:.1f}, {pt / 1024:.1f} ({100 * (pt - ph) / max(ph, 1):+.1f}%)")
# Over every agent process: the peak in the run's first and last 20 minutes.
allx = [x for s in samples.values() for x in s]
head = [x for x in allx if x[0] <= t_first + 1200]; tail = [x for x in allx if x[0] >= t_last - 1200]
if head and tail:
    rh, rt = max(x[3] for x in head), max(x[3] for x in tail)
    print(f"  every agent, peak in the run's first and last 20 min: RSS (VmHWM) {rh / 1024:.1f}, {rt / 1024:.1f} ({100 * (rt - rh) / rh:+.1f}%)")
PY
say "total $(( $(date +%s) - t_start ))s"
cp "$results" "$out/soak-results.txt"; cp "$faults" "$out/soak-faults.txt"; cp "$rsslog" "$out/soak-rss.txt"
