#!/usr/bin/env bash
# Quorum's main job, end to end, on a throwaway local cluster:
#   1. start a 3-member etcd cluster on 127.0.0.1 (free ports, a temp dir);
#   2. load a Kubernetes-like keyspace (/registry/<resource>/<ns>/<name>, with overwrites,
#      deletes and a compaction);
#   3. back it up: a snapshot into a local backup directory;
#   4. `quorum snapshot status` (next to etcdutl's, for comparison) and `quorum snapshot verify`;
#   5. lose two of the three members (kill -9): the cluster has no quorum and refuses writes;
#   6. recover: `quorum snapshot restore --all-members` writes three new member data dirs from
#      the backup (no etcd tool involved), and the members start on them;
#   7. show the data is intact (hashkv and key count equal the backup's) and writes work;
#   8. stop the cluster and clean up.
# QUORUM_DEMO_ETCD=3.4 uses Debian bookworm's etcd 3.4.23 instead of 3.5.16 (etcd itself reads
# ETCD_* variables as flags, so the demo's own setting has another prefix). KEEP=1 keeps the temp dir.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
echo "== building quorum"
cargo build --release --locked -q -p quorum -p testkit
Q="$root/target/release/quorum"
LOADER="$root/target/release/quorum-testkit"

case "${QUORUM_DEMO_ETCD:-3.5}" in
  3.4) BIN=/usr/bin; SNAPTOOL="etcdctl" ;;
  3.5) BIN="$root/.tools/etcd-3.5/usr/bin"; SNAPTOOL="etcdutl" ;;
  *) echo "QUORUM_DEMO_ETCD must be 3.4 or 3.5" >&2; exit 2 ;;
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

wait_healthy() {
  for _ in $(seq 1 150); do
    "$BIN/etcdctl" --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "etcd did not become healthy; logs in $work (KEEP=1 keeps them):" >&2
  tail -n 5 "$work"/*.log >&2
  exit 1
}
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
wait_healthy
"$BIN/etcdctl" --endpoints "$endpoints" endpoint status -w table

echo "== loading a Kubernetes-like keyspace"
"$LOADER" load --endpoints "$endpoints" --objects 5000 --namespaces 20
"$BIN/etcdctl" --endpoints "$endpoints" get /registry/pods/ns-001 --prefix --keys-only --limit 3 | grep -v '^$'

echo "== backing up: snapshot into $work/backups"
mkdir -p "$work/backups"
backup="$work/backups/etcd-$(date -u +%Y%m%dT%H%M%SZ).db"
"$BIN/etcdctl" --endpoints "${client[etcd-0]}" snapshot save "$backup" 2>/dev/null
rev=$("$Q" snapshot status "$backup" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
before_hash=$("$BIN/etcdctl" --endpoints "${client[etcd-0]}" endpoint hashkv --rev "$rev" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["HashKV"]["hash"])')
before_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only --rev "$rev" | grep -c . || true)
echo "backup at revision $rev: $before_keys keys, hashkv $before_hash"

echo "== quorum snapshot status"
"$Q" snapshot status "$backup" -w table
echo "== $SNAPTOOL snapshot status (reference)"
if [ "$SNAPTOOL" = etcdutl ]; then "$BIN/etcdutl" snapshot status "$backup" -w table
else "$BIN/etcdctl" snapshot status "$backup" -w table; fi

echo "== quorum snapshot verify"
"$Q" snapshot verify "$backup"

echo "== disaster: kill -9 two of the three members"
kill -9 "${pids[1]}" "${pids[2]}"; wait "${pids[1]}" "${pids[2]}" 2>/dev/null || true
if "$BIN/etcdctl" --endpoints "${client[etcd-0]}" --command-timeout=3s put /registry/probe x >/dev/null 2>&1; then
  echo "unexpected: the cluster still takes writes" >&2; exit 1
fi
echo "writes fail: the cluster lost quorum"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pids=()

echo "== recovery: quorum snapshot restore --all-members from the backup"
"$Q" snapshot restore "$backup" --all-members --initial-cluster "$initial" \
  --initial-cluster-token quorum-demo-restored --data-dir "$work/restored/{name}"
for n in "${names[@]}"; do
  "$BIN/etcd" --name "$n" --data-dir "$work/restored/$n" \
    --listen-client-urls "${client[$n]}" --advertise-client-urls "${client[$n]}" \
    --listen-peer-urls "${peer[$n]}" --initial-advertise-peer-urls "${peer[$n]}" \
    --log-level warn >"$work/$n.restored.log" 2>&1 &
  pids+=("$!")
done
wait_healthy
"$BIN/etcdctl" --endpoints "$endpoints" endpoint status -w table

echo "== the data is intact"
"$BIN/etcdctl" --endpoints "$endpoints" endpoint hashkv --rev "$rev" -w table
after_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only --rev "$rev" | grep -c . || true)
hashes=$("$BIN/etcdctl" --endpoints "$endpoints" endpoint hashkv --rev "$rev" -w json | python3 -c 'import json,sys; print(" ".join(str(e["HashKV"]["hash"]) for e in json.load(sys.stdin)))')
for h in $hashes; do
  [ "$h" = "$before_hash" ] || { echo "hashkv $h differs from the backup's $before_hash" >&2; exit 1; }
done
[ "$after_keys" = "$before_keys" ] || { echo "key count $after_keys differs from $before_keys" >&2; exit 1; }
"$BIN/etcdctl" --endpoints "$endpoints" put /registry/after-recovery ok >/dev/null
echo "every member's hashkv equals the backup's ($before_hash), $after_keys keys, and writes work again"

echo "== stopping the cluster"
stop_all
echo "demo finished: backed up, lost quorum, recovered natively with Quorum, data intact"
