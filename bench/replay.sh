#!/usr/bin/env bash
# Replay speed of a point-in-time restore: a full backup of a real etcd 3.5 snapshot, then a
# delta chain of one hour at 1,000 puts/s (REVISIONS=3600000 puts over KEYS=50000 keys of
# VALUE=100 bytes, segments of 20,000 revisions, built offline by
# crates/repo/examples/fill_chain.rs into a file:// repository). Measured, warm, best of RUNS:
# `restore latest` (the full backup alone) against `restore --at-revision END` (the backup +
# every segment replayed): wall time, peak RSS, and revisions replayed per second; then
# `backups consolidate` and the same point-in-time restore from the consolidated backup.
#   bash bench/replay.sh [SNAPSHOT]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
(cd "$root" && cargo build --release --locked -q -p repo --example fill_chain)
REVISIONS="${REVISIONS:-3600000}"; KEYS="${KEYS:-50000}"; VALUE="${VALUE:-100}"; RUNS="${RUNS:-3}"
snap="${1:-$out/replay-base.db}"
big_snapshot "$snap" "${BASE_MIB:-64}"
work="$(mktemp -d -t quorum-replay-XXXXXX)"
trap 'rm -rf "$work"' EXIT
head -c 32 /dev/urandom > "$work/key"
url="file://$work/repo"
"$Q" repo init --repo "$url" --key-file "$work/key" >/dev/null
read -r base_rev end_rev < <("$root/target/release/examples/fill_chain" "$url" "$work/key" prod "$snap" "$REVISIONS" "$KEYS" "$VALUE")
du -sh "$work/repo/clusters/prod/deltas" | awk '{print "delta segments:", $1}'
# best wall seconds and peak RSS of RUNS restores (a fresh data dir each time).
timed() {
  local name="$1"; shift
  local best="" rss=0 w m
  for _ in $(seq 1 "$RUNS"); do
    rm -rf "$work/dd"
    /usr/bin/time -f "%e %M" -o "$work/t" "$Q" restore --repo "$url" --key-file "$work/key" --cluster prod "$@" --data-dir "$work/dd" >/dev/null 2>"$work/err" \
      || { echo "bench: $name failed" >&2; cat "$work/err" >&2; exit 1; }
    read -r w m < "$work/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
    [ "$m" -gt "$rss" ] && rss="$m"
  done
  WALL[$name]="$best"; RSS[$name]=$((rss / 1024))
}
timed plain latest
timed pitr --at-revision "$end_rev"
# Consolidation: a full backup at the end of the chain, built offline; the same restore then
# replays nothing.
/usr/bin/time -f "%e %M" -o "$work/t" "$Q" backups consolidate --repo "$url" --key-file "$work/key" --cluster prod >"$work/cons" 2>"$work/err" \
  || { echo "bench: consolidate failed" >&2; cat "$work/err" >&2; exit 1; }
read -r w m < "$work/t"; WALL[consolidate]="$w"; RSS[consolidate]=$((m / 1024))
cat "$work/cons"
timed pitr_after_consolidation --at-revision "$end_rev"
print_results plain pitr consolidate pitr_after_consolidation
echo "chain: revisions $((base_rev + 1))..$end_rev ($REVISIONS puts over $KEYS keys, values of $VALUE bytes)"
echo "point-in-time restore / plain restore of the same backup: $(ratio "${WALL[pitr]}" "${WALL[plain]}")x"
awk -v r="$REVISIONS" -v p="${WALL[pitr]}" -v b="${WALL[plain]}" 'BEGIN{ printf "revisions replayed per second: %.0f (whole restore), %.0f (time beyond the plain restore)\n", r / p, r / (p - b) }'
