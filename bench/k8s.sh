#!/usr/bin/env bash
# Benchmark: `quorum k8s get` and `k8s ls` straight from a snapshot of >= 1 GiB, against `dd bs=1M`
# of the same file to /dev/null (warm cache, best of 3) and against the way without Quorum:
# restore the snapshot with etcdutl, start etcd on it and ask it (one run).
# Usage: bench/k8s.sh [SNAPSHOT_FILE]   (default: bench/out/snapshot-1g.db, made once)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
snap="${1:-$out/snapshot-1g.db}"
[ -n "${1:-}" ] || big_snapshot "$snap" 800
size=$(stat -c %s "$snap")
echo "snapshot: $snap ($size bytes)"
cat "$snap" >/dev/null   # warm the page cache

# An object and a namespace that exist: the first configmap the listing names.
first=$("$Q" k8s ls "$snap" --resource configmaps -w json | python3 -c 'import json,sys; o=json.load(sys.stdin)[0]; print(o["namespace"], o["name"])')
read -r ns name <<<"$first"
echo "object: configmaps/$name in namespace $ns"

measure dd 3 dd if="$snap" of=/dev/null bs=1M
measure get_one 3 "$Q" k8s get "$snap" configmaps "$name" -n "$ns" -o yaml
measure get_ns 3 "$Q" k8s get "$snap" configmaps -n "$ns" -o json
measure ls_ns 3 "$Q" k8s ls "$snap" -n "$ns"
measure ls_all_json 3 "$Q" k8s ls "$snap" -w json
measure ls_all_table 3 "$Q" k8s ls "$snap"

# Without Quorum: restore, start etcd, ask it.
d=$(mktemp -d -t quorum-bench-k8s-XXXXXX)
c="http://127.0.0.1:$(free_port)"; p="http://127.0.0.1:$(free_port)"
t0=$(date +%s.%N)
"$E35/etcdutl" snapshot restore "$snap" --data-dir "$d/m" --name m --initial-cluster "m=$p" --initial-advertise-peer-urls "$p" >/dev/null 2>&1
"$E35/etcd" --name m --data-dir "$d/m" --listen-client-urls "$c" --advertise-client-urls "$c" --listen-peer-urls "$p" \
  --initial-advertise-peer-urls "$p" --initial-cluster "m=$p" --quota-backend-bytes 8589934592 --log-level error >"$d/log" 2>&1 &
pid=$!
until "$E35/etcdctl" --endpoints "$c" get "/registry/configmaps/$ns/$name" --print-value-only >/dev/null 2>&1; do sleep 0.05; done
t1=$(date +%s.%N)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$d"
etcd_way=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")

print_results dd get_one get_ns ls_ns ls_all_json ls_all_table
echo "restore + start etcd + get (etcdutl/etcd 3.5): ${etcd_way} s"
echo "ratios against dd bs=1M (target <= 5):"
for n in get_one get_ns ls_ns ls_all_json ls_all_table; do echo "  $n $(ratio "${WALL[$n]}" "${WALL[dd]}")"; done
echo "  peak RSS (target <= 256 MiB): get_one ${RSS[get_one]}, get_ns ${RSS[get_ns]}, ls_ns ${RSS[ls_ns]}, ls_all_json ${RSS[ls_all_json]}, ls_all_table ${RSS[ls_all_table]} MiB"
