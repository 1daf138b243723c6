#!/usr/bin/env bash
# Benchmark: `quorum snapshot status` and `verify` against etcdctl 3.4 / etcdutl 3.5 status,
# `openssl dgst -sha256` and `dd` on the same snapshot of >= 1 GiB, warm cache, best of 3.
# Usage: bench/snapshot.sh [SNAPSHOT_FILE]   (default: bench/out/snapshot-1g.db, made once)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
snap="${1:-$out/snapshot-1g.db}"
[ -n "${1:-}" ] || big_snapshot "$snap" 800
size=$(stat -c %s "$snap")
echo "snapshot: $snap ($size bytes)"
cat "$snap" >/dev/null   # warm the page cache

# The measured command's output goes to /dev/null, but stdout redirection of GNU time's child
# needs a wrapper for the status commands that print.
measure dd 3 dd if="$snap" of=/dev/null bs=1M
measure openssl 3 openssl dgst -sha256 "$snap"
measure etcdctl34 3 "$E34/etcdctl" snapshot status "$snap"
measure etcdutl35 3 "$E35/etcdutl" snapshot status "$snap"
measure q_status 3 "$Q" snapshot status "$snap"
measure q_verify 3 "$Q" snapshot verify "$snap"

# Correctness alongside speed.
ours=$("$Q" snapshot status -w json "$snap"); theirs=$("$E35/etcdutl" snapshot status -w json "$snap")
[ "$ours" = "$theirs" ] || { echo "MISMATCH: quorum $ours vs etcdutl $theirs" >&2; exit 1; }

print_results dd openssl etcdctl34 etcdutl35 q_status q_verify
echo "ratios (target):"
echo "  quorum status / etcdctl 3.4 status   $(ratio "${WALL[q_status]}" "${WALL[etcdctl34]}")  (<= 0.5)"
echo "  quorum status / etcdutl 3.5 status   $(ratio "${WALL[q_status]}" "${WALL[etcdutl35]}")"
echo "  quorum verify / etcdctl 3.4 status   $(ratio "${WALL[q_verify]}" "${WALL[etcdctl34]}")  (<= 1.0)"
echo "  quorum verify / openssl dgst -sha256 $(ratio "${WALL[q_verify]}" "${WALL[openssl]}")  (<= 1.5)"
echo "  quorum status / dd bs=1M             $(ratio "${WALL[q_status]}" "${WALL[dd]}")"
echo "  peak RSS: status ${RSS[q_status]} MiB, verify ${RSS[q_verify]} MiB (<= 128); etcdctl ${RSS[etcdctl34]} MiB"
