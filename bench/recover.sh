#!/usr/bin/env bash
# Benchmark: the quorum-loss drill, kill -9 of two of three members to three healthy members
# again, done with Quorum (recover --from-data-dir, member add --wait) against the same drill
# done with the etcd tools only (etcdutl snapshot restore --skip-hash-check of the survivor's
# db, etcdctl member add), on the same keyspace, etcd 3.5.16. Prints both times and the ratio.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
OBJECTS="${OBJECTS:-20000}"
BIN="$E35"
declare -A client peer
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap stop_all EXIT
start_member() { # name data-dir initial-cluster state token
  "$BIN/etcd" --name "$1" --data-dir "$2" --listen-client-urls "${client[$1]}" --advertise-client-urls "${client[$1]}" \
    --listen-peer-urls "${peer[$1]}" --initial-advertise-peer-urls "${peer[$1]}" --initial-cluster "$3" \
    --initial-cluster-state "$4" --initial-cluster-token "$5" --log-level error >"$work/$1.log" 2>&1 &
  pids+=("$!")
}
healthy() { for _ in $(seq 1 300); do "$BIN/etcdctl" --endpoints "$1" endpoint health >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# Start a loaded 3-member cluster and kill two members; prints nothing, sets work/endpoints.
setup() {
  work="$(mktemp -d -t quorum-drill-XXXXXX)"
  local initial=""
  for n in etcd-0 etcd-1 etcd-2; do client[$n]="http://127.0.0.1:$(free_port)"; peer[$n]="http://127.0.0.1:$(free_port)"; initial+="${initial:+,}$n=${peer[$n]}"; done
  for n in etcd-0 etcd-1 etcd-2; do start_member "$n" "$work/$n" "$initial" new drill; done
  endpoints="${client[etcd-0]},${client[etcd-1]},${client[etcd-2]}"
  healthy "$endpoints"
  "$root/target/release/quorum-testkit" load --endpoints "$endpoints" --objects "$OBJECTS" >/dev/null
}

drill_quorum() {
  setup
  local t0; t0=$(date +%s.%N)
  kill -9 "${pids[1]}" "${pids[2]}"; kill "${pids[0]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()
  "$Q" recover --from-data-dir "$work/etcd-0" --name etcd-0 --initial-advertise-peer-urls "${peer[etcd-0]}" --data-dir "$work/r0" --initial-cluster-token rec >/dev/null 2>&1
  start_member etcd-0 "$work/r0" "etcd-0=${peer[etcd-0]}" new rec
  healthy "${client[etcd-0]}"
  for n in etcd-1 etcd-2; do
    "$Q" member add "$n" --peer-urls "${peer[$n]}" --wait --endpoints "${client[etcd-0]}" >"$work/add.out" 2>&1 &
    local adder=$!
    for _ in $(seq 1 200); do grep -q '^ETCD_INITIAL_CLUSTER=' "$work/add.out" && break; sleep 0.05; done
    start_member "$n" "$work/new-$n" "$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' "$work/add.out")" existing rec
    wait "$adder"
  done
  healthy "$endpoints"
  T_QUORUM=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  stop_all; rm -rf "$work"
}

drill_etcdctl() {
  setup
  local t0; t0=$(date +%s.%N)
  kill -9 "${pids[1]}" "${pids[2]}"; kill "${pids[0]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()
  "$BIN/etcdutl" snapshot restore "$work/etcd-0/member/snap/db" --skip-hash-check --name etcd-0 \
    --initial-cluster "etcd-0=${peer[etcd-0]}" --initial-advertise-peer-urls "${peer[etcd-0]}" \
    --initial-cluster-token rec --data-dir "$work/r0" >/dev/null 2>&1
  start_member etcd-0 "$work/r0" "etcd-0=${peer[etcd-0]}" new rec
  healthy "${client[etcd-0]}"
  local initial="etcd-0=${peer[etcd-0]}"
  for n in etcd-1 etcd-2; do
    until "$BIN/etcdctl" --endpoints "${client[etcd-0]}" member add "$n" --peer-urls "${peer[$n]}" >/dev/null 2>&1; do sleep 0.5; done
    initial+=",$n=${peer[$n]}"
    start_member "$n" "$work/new-$n" "$initial" existing rec
    healthy "${client[$n]}"
  done
  healthy "$endpoints"
  T_ETCDCTL=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  stop_all; rm -rf "$work"
}

for i in 1 2 3; do
  drill_quorum; drill_etcdctl
  printf 'run %d: quorum %.2fs, etcd tools %.2fs, ratio %.2f\n' "$i" "$T_QUORUM" "$T_ETCDCTL" "$(ratio "$T_QUORUM" "$T_ETCDCTL")"
done
