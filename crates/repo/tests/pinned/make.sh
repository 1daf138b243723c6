#!/usr/bin/env bash
# Make a small pinned repository with the given quorum binary, through its command line only:
#   bash crates/repo/tests/pinned/make.sh QUORUM_BIN OUT_DIR
# OUT_DIR/repo      the repository (file://): backups of two clusters (alpha: three backups,
#                   one with an --include bundle; beta: one), delta segments of alpha captured
#                   by the agent from a real etcd 3.5, a drill record, a migration record
# OUT_DIR/data.key, OUT_DIR/bundle.key   its key files (test keys, nothing secret)
# OUT_DIR/expected.json   what every later version must find: each backup's cluster, revision,
#                   sha256 of the snapshot file and of the bundle files, the delta chain ends
# The snapshots themselves are not kept: the repository must give them back byte-identical.
set -euo pipefail
Q="$(realpath "$1")"; OUT="$(realpath -m "$2")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
E35="$root/.tools/etcd-3.5/usr/bin"
export ETCDCTL_API=3
[ -e "$OUT" ] && { echo "make.sh: $OUT exists" >&2; exit 2; }
mkdir -p "$OUT"
work="$(mktemp -d -t quorum-pinned-XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_etcd() { # NAME -> sets URL
  local c="http://127.0.0.1:$(free_port)" p="http://127.0.0.1:$(free_port)"
  "$E35/etcd" --name "$1" --data-dir "$work/$1" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "$1=$p" \
    --unsafe-no-fsync --log-level error >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do "$E35/etcdctl" --endpoints "$c" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  URL="$c"
}
put() { "$E35/etcdctl" --endpoints "$1" put "$2" "$3" >/dev/null; }

start_etcd src; SRC="$URL"
start_etcd dst; DST="$URL"
head -c 32 /dev/urandom > "$OUT/data.key"
head -c 32 /dev/urandom > "$OUT/bundle.key"
R=(--repo "file://$OUT/repo" --key-file "$OUT/data.key")
B=(--bundle-key-file "$OUT/bundle.key")
"$Q" repo init "${R[@]}" "${B[@]}" >/dev/null

for i in $(seq 1 40); do put "$SRC" "/registry/configmaps/ns-a/cm-$i" "value-$i-$(printf 'x%.0s' $(seq 1 200))"; done
# Enough other keys (600 secrets of 300 bytes, ~60 pages) that a small change touches few of
# the snapshot's chunks: the later backups of alpha store their chunk list as a patch
# (version 3).
python3 - "$SRC" <<'PY'
import base64, json, sys, urllib.request
url = sys.argv[1]
b64 = lambda s: base64.b64encode(s.encode()).decode()
for start in range(0, 600, 100):
    ops = [{"requestPut": {"key": b64(f"/registry/secrets/ns-b/s-{i:04d}"), "value": b64(f"secret {i} " + "y" * 290)}}
           for i in range(start, start + 100)]
    req = urllib.request.Request(url + "/v3/kv/txn", data=json.dumps({"success": ops}).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
PY
mkdir -p "$work/include/pki"
printf 'pinned bundle file one\n' > "$work/include/pki/ca.crt"
printf 'encryption-config: pinned\n' > "$work/include/encryption.yaml"
"$Q" snapshot save "$work/s1.db" --endpoints "$SRC" >/dev/null
"$Q" backup "${R[@]}" "${B[@]}" --cluster alpha --snapshot "$work/s1.db" --include "$work/include" >/dev/null

for i in $(seq 1 10); do put "$SRC" "/registry/configmaps/ns-a/cm-$i" "changed-$i"; done
"$Q" snapshot save "$work/s2.db" --endpoints "$SRC" >/dev/null
"$Q" backup "${R[@]}" --cluster alpha --snapshot "$work/s2.db" >/dev/null

# Delta segments of alpha after its second backup: the agent's capture.
port="$(free_port)"
cat > "$work/agent.yaml" <<YAML
cluster: alpha
endpoints: [$SRC]
listen: 127.0.0.1:$port
election: {ttl_seconds: 2}
repo: {url: 'file://$OUT/repo', key_file: '$OUT/data.key'}
backup: {schedule: '0 0 1 1 *'}
delta: {interval_seconds: 0.3, spool_dir: '$work/spool'}
YAML
"$Q" agent --config "$work/agent.yaml" >"$work/agent.log" 2>&1 &
apid=$!; pids+=("$apid")
sleep 3
for round in 1 2 3; do
  for i in $(seq 1 5); do put "$SRC" "/registry/pods/ns-a/pod-$round-$i" "pod $round $i"; done
  "$E35/etcdctl" --endpoints "$SRC" del "/registry/configmaps/ns-a/cm-$((30 + round))" >/dev/null
  sleep 1
done
last_rev="$("$E35/etcdctl" --endpoints "$SRC" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')"
for _ in $(seq 1 60); do
  got="$("$Q" backups deltas "${R[@]}" --cluster alpha -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["chain"]["contiguous_to"])')"
  [ "$got" = "$last_rev" ] && break; sleep 0.5
done
[ "$got" = "$last_rev" ] || { echo "make.sh: the capture reached $got, not $last_rev" >&2; cat "$work/agent.log" >&2; exit 1; }
kill -9 "$apid"

"$Q" snapshot save "$work/s3.db" --endpoints "$SRC" >/dev/null
"$Q" backup "${R[@]}" --cluster alpha --snapshot "$work/s3.db" >/dev/null

for i in $(seq 1 20); do put "$DST" "/other/key-$i" "beta-$i"; done
"$Q" snapshot save "$work/b1.db" --endpoints "$DST" >/dev/null
"$Q" backup "${R[@]}" --cluster beta --snapshot "$work/b1.db" >/dev/null

"$Q" drill "${R[@]}" --latest --cluster alpha --etcd-bin "$E35/etcd" >/dev/null
# A partial migration of one prefix of alpha into the other etcd: its record and done marker.
"$Q" migrate "${R[@]}" --cluster alpha --from-endpoints "$SRC" --to-endpoints "$DST" --prefix /registry/pods/ >/dev/null

python3 - "$OUT" "$work" "$last_rev" <<'PY'
import hashlib, json, os, sys
out, work, last = sys.argv[1], sys.argv[2], int(sys.argv[3])
def sha(p): return hashlib.sha256(open(p, 'rb').read()).hexdigest()
exp = {"snapshots": {n: sha(f"{work}/{n}.db") for n in ["s1", "s2", "s3", "b1"]},
       "bundle": {"pki/ca.crt": sha(f"{work}/include/pki/ca.crt"), "encryption.yaml": sha(f"{work}/include/encryption.yaml")},
       "delta_last_revision": last}
json.dump(exp, open(f"{out}/expected.json", "w"), indent=1, sort_keys=True)
PY
echo "make.sh: pinned repository in $OUT"
