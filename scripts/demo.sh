#!/usr/bin/env bash
# Quorum's main job, end to end, on a throwaway local cluster:
#   1. start a 3-member etcd cluster on 127.0.0.1 (free ports, a temp dir);
#   2. load a Kubernetes-like keyspace (/registry/<resource>/<ns>/<name>, with overwrites,
#      deletes and a compaction);
#   3. back it up into a local encrypted repository (`quorum repo init`, `quorum backup` from a
#      follower), list it, prove it restores (`quorum drill`: restore into a real etcd and
#      compare), fetch the exact snapshot back (`quorum backups get`) and show
#      `quorum snapshot status` next to etcdutl's, `quorum snapshot verify`, `quorum status`;
#   4. keep writing after the backup;
#   5. lose two of the three members (kill -9): the cluster has no quorum and refuses writes;
#   6. recover with Quorum's runbook: `quorum recover plan` picks the survivor's data dir over
#      the older backup; `quorum recover --from-data-dir --all-members` rebuilds all three
#      members natively from it, and they start together (one election, no member add);
#   7. show the data is intact: every member's hashkv and key count equal what the cluster
#      held before the loss (the writes after the backup included), and writes work again;
#   8. recover from the repository too: `quorum restore --repo ... latest --all-members` into a
#      new 3-member cluster, which starts with exactly the backup's keys;
#   9. stop the clusters and clean up.
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

repo="file://$work/repo"
export QUORUM_PASSWORD="demo passphrase: keep yours in a file, --password-file"
echo "== backing up into an encrypted repository: $repo"
"$Q" repo init --repo "$repo"
"$Q" backup --repo "$repo" --cluster demo --from follower --endpoints "$endpoints" --tag demo
echo "== more writes, and an incremental backup (only new chunks are stored)"
for i in $(seq 1 50); do "$BIN/etcdctl" --endpoints "$endpoints" put "/registry/configmaps/ns-001/cm-extra-$i" "second backup $i" >/dev/null; done
"$Q" backup --repo "$repo" --cluster demo --from follower --endpoints "$endpoints"
"$Q" backups list --repo "$repo"
echo "== quorum drill: restore the latest backup into a real etcd on loopback and compare"
"$Q" drill --repo "$repo" --latest --cluster demo --etcd-bin "$BIN/etcd"
"$Q" backups list --repo "$repo" | tail -n 1
backup_rev=$("$Q" backups show --repo "$repo" latest -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifest"]["snapshot"]["revision"])')
backup_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only --rev "$backup_rev" | grep -c . || true)
mkdir -p "$work/backups"
backup="$work/backups/latest.db"
"$Q" backups get --repo "$repo" latest -o "$backup"

echo "== quorum snapshot status"
"$Q" snapshot status "$backup" -w table
echo "== $SNAPTOOL snapshot status (reference)"
if [ "$SNAPTOOL" = etcdutl ]; then "$BIN/etcdutl" snapshot status "$backup" -w table
else "$BIN/etcdctl" snapshot status "$backup" -w table; fi

echo "== quorum snapshot verify"
"$Q" snapshot verify "$backup"

echo "== quorum status"
"$Q" status --endpoints "$endpoints"

echo "== more writes after the backup"
for i in $(seq 1 25); do "$BIN/etcdctl" --endpoints "$endpoints" put "/registry/configmaps/late/cm-$i" "written after the backup" >/dev/null; done
rev=$("$BIN/etcdctl" --endpoints "${client[etcd-0]}" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
before_hash=$("$BIN/etcdctl" --endpoints "${client[etcd-0]}" endpoint hashkv --rev "$rev" -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["HashKV"]["hash"])')
before_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only | grep -c . || true)
echo "the cluster holds $before_keys keys at revision $rev, hashkv $before_hash"

echo "== disaster: kill -9 two of the three members"
kill -9 "${pids[1]}" "${pids[2]}"; wait "${pids[1]}" "${pids[2]}" 2>/dev/null || true
if "$BIN/etcdctl" --endpoints "${client[etcd-0]}" --command-timeout=3s put /registry/probe x >/dev/null 2>&1; then
  echo "unexpected: the cluster still takes writes" >&2; exit 1
fi
echo "writes fail: the cluster lost quorum"

echo "== quorum recover plan"
"$Q" recover plan --endpoints "$endpoints" --dial-timeout 1s --data-dir "$work/etcd-0" --snapshot "$backup"

echo "== stop the survivor; rebuild all three members from its data dir at once (the plan's first path)"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pids=()
token=quorum-demo-recovered
initial="etcd-0=${peer[etcd-0]},etcd-1=${peer[etcd-1]},etcd-2=${peer[etcd-2]}"
"$Q" recover --from-data-dir "$work/etcd-0" --initial-cluster "$initial" --all-members --name etcd-0 \
  --data-dir "$work/recovered/{name}" --initial-cluster-token "$token"
echo "== start the three members together (one election, no member add)"
for n in etcd-0 etcd-1 etcd-2; do
  "$BIN/etcd" --name "$n" --data-dir "$work/recovered/$n" \
    --listen-client-urls "${client[$n]}" --advertise-client-urls "${client[$n]}" \
    --listen-peer-urls "${peer[$n]}" --initial-advertise-peer-urls "${peer[$n]}" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$token" \
    --log-level warn >"$work/$n.recovered.log" 2>&1 &
  pids+=("$!")
done
wait_healthy
"$Q" status --endpoints "$endpoints"

echo "== the data is intact"
"$BIN/etcdctl" --endpoints "$endpoints" endpoint hashkv --rev "$rev" -w table
after_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only --rev "$rev" | grep -c . || true)
hashes=$("$BIN/etcdctl" --endpoints "$endpoints" endpoint hashkv --rev "$rev" -w json | python3 -c 'import json,sys; print(" ".join(str(e["HashKV"]["hash"]) for e in json.load(sys.stdin)))')
for h in $hashes; do
  [ "$h" = "$before_hash" ] || { echo "hashkv $h differs from the cluster's before the loss ($before_hash)" >&2; exit 1; }
done
[ "$after_keys" = "$before_keys" ] || { echo "key count $after_keys differs from $before_keys" >&2; exit 1; }
"$BIN/etcdctl" --endpoints "$endpoints" put /registry/after-recovery ok >/dev/null
echo "every member's hashkv equals the cluster's before the loss ($before_hash), $after_keys keys (writes after the backup included), and writes work again"

echo "== stopping the cluster"
stop_all

echo "== recovering from the repository: quorum restore --repo $repo latest --all-members"
rinitial=""
declare -A rclient rpeer
for n in "${names[@]}"; do
  rclient[$n]="http://127.0.0.1:$(free_port)"; rpeer[$n]="http://127.0.0.1:$(free_port)"
  rinitial+="${rinitial:+,}$n=${rpeer[$n]}"
done
"$Q" restore --repo "$repo" latest --cluster demo --all-members --initial-cluster "$rinitial" \
  --initial-cluster-token quorum-demo-from-repo --data-dir "$work/from-repo/{name}" --bump-revision 1000 --mark-compacted
for n in "${names[@]}"; do
  "$BIN/etcd" --name "$n" --data-dir "$work/from-repo/$n" \
    --listen-client-urls "${rclient[$n]}" --advertise-client-urls "${rclient[$n]}" \
    --listen-peer-urls "${rpeer[$n]}" --initial-advertise-peer-urls "${rpeer[$n]}" \
    --initial-cluster "$rinitial" --initial-cluster-token quorum-demo-from-repo \
    --log-level warn >"$work/$n.from-repo.log" 2>&1 &
  pids+=("$!")
done
endpoints="${rclient[etcd-0]},${rclient[etcd-1]},${rclient[etcd-2]}"
wait_healthy
repo_keys=$("$BIN/etcdctl" --endpoints "$endpoints" get "" --prefix --keys-only | grep -c . || true)
[ "$repo_keys" = "$backup_keys" ] || { echo "restored $repo_keys keys, the backup had $backup_keys" >&2; exit 1; }
"$Q" status --endpoints "$endpoints"
echo "the cluster restored from the repository holds the backup's $repo_keys keys (revision $backup_rev, bumped by 1000)"
stop_all
echo "demo finished: backed up (encrypted, deduplicated), drilled, lost quorum, recovered with Quorum's runbook, data intact; restored from the repository as well"
