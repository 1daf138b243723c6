#!/usr/bin/env bash
# Benchmark: the quorum-loss drill, kill -9 of two of three members to three healthy members
# again, on the same keyspace, etcd 3.5.16, three ways per run:
#   quorum      the plan's fast path: `quorum recover --from-data-dir SURVIVOR --initial-cluster
#               ... --all-members` builds all three members from the survivor's db at once; the
#               three start together (one election, no member add);
#   quorum-1by1 the slower path: `quorum recover` of one member, then `quorum member add --wait`
#               of each other member as it starts;
#   etcd tools  the documented procedure with the etcd tools only (etcdutl snapshot restore
#               --skip-hash-check of the survivor's db into a one-member cluster, then etcdctl
#               member add and start, one member at a time).
# Each time runs from the moment the survivor has stopped to three healthy members (see
# lose_two). Prints the times per run and the ratios against the etcd tools. Knobs: OBJECTS
# (20000), MIB (load that many MiB of values instead, e.g. 1024), RUNS (3).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
OBJECTS="${OBJECTS:-20000}"
BIN="$E35"
declare -A client peer
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
# With MIB, the bulk loader's large transactions need etcd's limits raised (as bench/lib.sh does).
big="--max-request-bytes 16777216 --max-txn-ops 10000 --quota-backend-bytes 8589934592"
start_member() { # name data-dir initial-cluster state token
  "$BIN/etcd" --name "$1" --data-dir "$2" --listen-client-urls "${client[$1]}" --advertise-client-urls "${client[$1]}" \
    --listen-peer-urls "${peer[$1]}" --initial-advertise-peer-urls "${peer[$1]}" --initial-cluster "$3" \
    --initial-cluster-state "$4" --initial-cluster-token "$5" --log-level error ${MIB:+$big} >"$work/$1.log" 2>&1 &
  pids+=("$!")
}
# A member joining a running cluster exits at start when it could not read the cluster's
# version in time (etcd 3.5: "incompatible with current running cluster", "cannot fetch
# cluster info from peer urls"); as `member add --wait` tells an operator, it is started
# again on an empty data dir (at most 3 starts; both procedures alike). Returns once the
# member answers health checks.
join_member() { # name data-dir initial-cluster token
  local start pid why transient='incompatible with current running cluster|cannot fetch cluster info'
  for start in 1 2 3; do
    rm -rf "$2"; start_member "$1" "$2" "$3" existing "$4"; pid="${pids[-1]}"
    for _ in $(seq 1 300); do
      answers "${client[$1]}" && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && return 1
    why="$(grep -oE "$transient" "$work/$1.log" | head -1 || true)"
    [ -n "$why" ] || return 1
    echo "bench: $1 exited at start ($why); starting it again" >&2
  done
  return 1
}
# One poll a member not ready yet cannot hold for long: each is bounded at 1 s.
answers() { "$BIN/etcdctl" --endpoints "$1" --dial-timeout 1s --command-timeout 1s endpoint health >/dev/null 2>&1; }
healthy() { for _ in $(seq 1 300); do answers "$1" && return 0; sleep 0.1; done; return 1; }

# The loaded cluster is made once (OBJECTS Kubernetes-like objects, or with MIB that many MiB of
# values), stopped cleanly and kept in $base; each drill starts from a copy of its data dirs, on
# the same ports.
base="$(mktemp -d -t quorum-drill-base-XXXXXX)"
# On any exit: every etcd stopped and every copy removed (a drill's copies of a 1 GiB cluster
# take about 9 GB); a failed drill first shows the end of its logs (set -e stops the script at
# the failing step, with no summary otherwise).
on_exit() {
  local rc=$? f
  stop_all
  if [ "$rc" != 0 ] && [ -n "${work:-}" ] && [ -d "$work" ]; then
    echo "bench: stopped by a failed step (exit $rc); the end of its logs:" >&2
    for f in "$work"/*.log "$work"/*.out; do [ -f "$f" ] && { echo "== ${f##*/}" >&2; tail -n 5 "$f" >&2; }; done
  fi
  [ -z "${work:-}" ] || [ "$work" = "$base" ] || rm -rf "$work"
  rm -rf "$base"
}
trap on_exit EXIT
make_base() {
  work="$base"
  local initial=""
  for n in etcd-0 etcd-1 etcd-2; do client[$n]="http://127.0.0.1:$(free_port)"; peer[$n]="http://127.0.0.1:$(free_port)"; initial+="${initial:+,}$n=${peer[$n]}"; done
  for n in etcd-0 etcd-1 etcd-2; do start_member "$n" "$work/$n" "$initial" new drill; done
  endpoints="${client[etcd-0]},${client[etcd-1]},${client[etcd-2]}"
  healthy "$endpoints"
  if [ -n "${MIB:-}" ]; then
    "$root/target/release/quorum-testkit" bulk --endpoints "$endpoints" --mib "$MIB" --min-value 256 --max-value 4096 --concurrency 4 >&2
  else
    "$root/target/release/quorum-testkit" load --endpoints "$endpoints" --objects "$OBJECTS" >/dev/null
  fi
  for p in "${pids[@]}"; do kill "$p"; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=()
  echo "bench: base cluster: $(du -sh "$base/etcd-0" | cut -f1) per member" >&2
}

# A copy of the loaded 3-member cluster, started and healthy; sets work.
setup() {
  work="$(mktemp -d -t quorum-drill-XXXXXX)"
  local initial="etcd-0=${peer[etcd-0]},etcd-1=${peer[etcd-1]},etcd-2=${peer[etcd-2]}"
  for n in etcd-0 etcd-1 etcd-2; do cp -a "$base/$n" "$work/$n"; done
  for n in etcd-0 etcd-1 etcd-2; do start_member "$n" "$work/$n" "$initial" new drill; done
  healthy "$endpoints"
}

# The disaster: two members killed, the survivor stopped (SIGTERM, as `systemctl stop` does).
# The clock starts once the survivor has stopped: a survivor that led takes about 7 s to stop
# (etcd tries to hand leadership to a peer that is gone, until its request timeout), and which
# member leads is chance; timed in, it made every path bimodal. T_STOP keeps that time.
lose_two() {
  local t; t=$(date +%s.%N)
  kill -9 "${pids[1]}" "${pids[2]}"; kill "${pids[0]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()
  T_STOP=$(awk "BEGIN{print $(date +%s.%N) - $t}")
}

drill_quorum() {
  setup
  lose_two
  local t0; t0=$(date +%s.%N)
  "$Q" recover --from-data-dir "$work/etcd-0" --name etcd-0 --initial-advertise-peer-urls "${peer[etcd-0]}" --data-dir "$work/r0" --initial-cluster-token rec >/dev/null 2>&1
  start_member etcd-0 "$work/r0" "etcd-0=${peer[etcd-0]}" new rec
  healthy "${client[etcd-0]}"
  for n in etcd-1 etcd-2; do
    "$Q" member add "$n" --peer-urls "${peer[$n]}" --wait --endpoints "${client[etcd-0]}" >"$work/add-$n.out" 2>&1 &
    local adder=$!
    # etcd refuses a member add until the cluster has been connected for 5 s; under load the
    # add can take longer than that to print its flags, so wait for them (or for its end). One
    # file per member: the previous member's flags must never be read for this one.
    until grep -q '^ETCD_INITIAL_CLUSTER=' "$work/add-$n.out" || ! kill -0 "$adder" 2>/dev/null; do sleep 0.05; done
    join_member "$n" "$work/new-$n" "$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' "$work/add-$n.out")" rec
    wait "$adder"
  done
  healthy "$endpoints"
  T_QUORUM=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  stop_all; rm -rf "$work"
}

drill_quorum_fast() {
  setup
  lose_two
  local t0; t0=$(date +%s.%N)
  local initial="etcd-0=${peer[etcd-0]},etcd-1=${peer[etcd-1]},etcd-2=${peer[etcd-2]}"
  "$Q" recover --from-data-dir "$work/etcd-0" --initial-cluster "$initial" --all-members --name etcd-0 \
    --data-dir "$work/new-{name}" --initial-cluster-token rec >/dev/null 2>&1
  for n in etcd-0 etcd-1 etcd-2; do start_member "$n" "$work/new-$n" "$initial" new rec; done
  healthy "$endpoints"
  T_FAST=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  stop_all; rm -rf "$work"
}

drill_etcdctl() {
  setup
  lose_two
  local t0; t0=$(date +%s.%N)
  "$BIN/etcdutl" snapshot restore "$work/etcd-0/member/snap/db" --skip-hash-check --name etcd-0 \
    --initial-cluster "etcd-0=${peer[etcd-0]}" --initial-advertise-peer-urls "${peer[etcd-0]}" \
    --initial-cluster-token rec --data-dir "$work/r0" >/dev/null 2>&1
  start_member etcd-0 "$work/r0" "etcd-0=${peer[etcd-0]}" new rec
  healthy "${client[etcd-0]}"
  local initial="etcd-0=${peer[etcd-0]}"
  for n in etcd-1 etcd-2; do
    until "$BIN/etcdctl" --endpoints "${client[etcd-0]}" member add "$n" --peer-urls "${peer[$n]}" >/dev/null 2>&1; do sleep 0.5; done
    initial+=",$n=${peer[$n]}"
    join_member "$n" "$work/new-$n" "$initial" rec
  done
  healthy "$endpoints"
  T_ETCDCTL=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  stop_all; rm -rf "$work"
}

make_base
what="$OBJECTS objects"; [ -z "${MIB:-}" ] || what="$MIB MiB of values"
for i in $(seq 1 "${RUNS:-3}"); do
  drill_quorum_fast; s1=$T_STOP; drill_quorum; s2=$T_STOP; drill_etcdctl; s3=$T_STOP
  printf 'run %d (%s): quorum %.2fs, quorum-1by1 %.2fs, etcd tools %.2fs; ratios %.2f and %.2f (stopping the survivor took %.2f, %.2f, %.2fs, not counted)\n' \
    "$i" "$what" "$T_FAST" "$T_QUORUM" "$T_ETCDCTL" "$(ratio "$T_FAST" "$T_ETCDCTL")" "$(ratio "$T_QUORUM" "$T_ETCDCTL")" "$s1" "$s2" "$s3"
done
