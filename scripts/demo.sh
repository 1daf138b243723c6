#!/usr/bin/env bash
# Quorum's main job, end to end, on a throwaway local cluster:
#   1. start a 3-member etcd cluster on 127.0.0.1 (free ports, a temp dir);
#   2. load a Kubernetes-like keyspace (/registry/<resource>/<ns>/<name>, with overwrites,
#      deletes and a compaction);
#   3. take a snapshot;
#   4. `quorum snapshot status` (next to etcdutl's, for comparison) and `quorum snapshot verify`;
#   5. stop the cluster and clean up.
# ETCD_VERSION=3.4 uses Debian bookworm's etcd 3.4.23 instead of 3.5.16. KEEP=1 keeps the temp dir.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
echo "== building quorum"
cargo build --release --locked -q -p quorum -p testkit
Q="$root/target/release/quorum"
LOADER="$root/target/release/quorum-testkit"

case "${ETCD_VERSION:-3.5}" in
  3.4) BIN=/usr/bin; SNAPTOOL="etcdctl" ;;
  3.5) BIN="$root/.tools/etcd-3.5/usr/bin"; SNAPTOOL="etcdutl" ;;
  *) echo "ETCD_VERSION must be 3.4 or 3.5" >&2; exit 2 ;;
esac
export ETCDCTL_API=3

work="$(mktemp -d -t quorum-demo-XXXXXX)"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
names=(etcd-0 etcd-1 etcd-2)
declare -A client peer
initial=""
for n in "${names[@]}"; do
  client[$n]="http://127.0.0.1:$(free_port)"; peer[$n]="http://127.0.0.1:$(free_port)"
  initial+="${initial:+,}$n=${peer[$n]}"
done
echo "== starting a 3-member etcd $("$BIN/etcd" --version | head -1 | awk '{print $3}') cluster in $work"
for n in "${names[@]}"; do
  "$BIN/etcd" --name "$n" --data-dir "$work/$n" \
    --listen-client-urls "${client[$n]}" --advertise-client-urls "${client[$n]}" \
    --listen-peer-urls "${peer[$n]}" --initial-advertise-peer-urls "${peer[$n]}" \
    --initial-cluster "$initial" --initial-cluster-token quorum-demo --initial-cluster-state new \
    --log-level warn >"$work/$n.log" 2>&1 &
  pids+=("$!")
done
endpoints="${client[etcd-0]},${client[etcd-1]},${client[etcd-2]}"
for _ in $(seq 1 100); do
  "$BIN/etcdctl" --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN/etcdctl" --endpoints "$endpoints" endpoint status -w table

echo "== loading a Kubernetes-like keyspace"
"$LOADER" load --endpoints "$endpoints" --objects 5000 --namespaces 20
"$BIN/etcdctl" --endpoints "$endpoints" get /registry/pods/ns-001 --prefix --keys-only --limit 3 | grep -v '^$'

echo "== taking a snapshot"
"$BIN/etcdctl" --endpoints "${client[etcd-0]}" snapshot save "$work/snapshot.db" 2>/dev/null

echo "== quorum snapshot status"
"$Q" snapshot status "$work/snapshot.db" -w table
echo "== $SNAPTOOL snapshot status (reference)"
if [ "$SNAPTOOL" = etcdutl ]; then "$BIN/etcdutl" snapshot status "$work/snapshot.db" -w table
else "$BIN/etcdctl" snapshot status "$work/snapshot.db" -w table; fi

echo "== quorum snapshot verify"
"$Q" snapshot verify "$work/snapshot.db"

echo "== stopping the cluster"
stop_all
echo "demo finished: the snapshot is readable and verified without any etcd tool"
