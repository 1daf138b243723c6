#!/usr/bin/env bash
# Benchmark: `quorum snapshot restore` (one member, and three with --all-members) against
# `etcdctl snapshot restore` (3.4.23), `etcdutl snapshot restore` (3.5.16) and `cp` + `sync`
# of the file, on the same snapshot of >= 1 GiB, warm cache, best of 5, with peak RSS; then
# Quorum's 1- and 3-member restores again on a loop-mounted XFS with reflinks (as root).
# Usage: bench/restore.sh [SNAPSHOT_FILE]   (default: bench/out/snapshot-1g.db, made once)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
snap="${1:-$out/snapshot-1g.db}"
[ -n "${1:-}" ] || big_snapshot "$snap" 800
echo "snapshot: $snap ($(stat -c %s "$snap") bytes)"
cat "$snap" >/dev/null
dst="$out/restore-target"
clean() { rm -rf "$dst"; mkdir -p "$dst"; sync; }
ic="m1=http://127.0.0.1:2380"
ic3="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381,m3=http://127.0.0.1:2382"
one=(--name m1 --initial-cluster "$ic" --initial-advertise-peer-urls http://127.0.0.1:2380)

runs=5
measure_clean() { local name="$1"; shift; local best="" rss=0 w
  for _ in $(seq 1 "$runs"); do clean; measure "$name" 1 "$@"; w="${WALL[$name]}"
    if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
    [ "${RSS[$name]}" -gt "$rss" ] && rss="${RSS[$name]}"
  done; WALL[$name]="$best"; RSS[$name]="$rss"; }

measure_clean cp_sync sh -c "cp '$snap' '$dst/db' && sync"
# The floor for three members on one filesystem: three copies of the bytes to write and sync.
measure_clean cp3_sync sh -c "cp '$snap' '$dst/db1' && cp '$snap' '$dst/db2' && cp '$snap' '$dst/db3' && sync"
measure_clean etcdctl34 "$E34/etcdctl" snapshot restore "$snap" "${one[@]}" --data-dir "$dst/d"
measure_clean etcdutl35 "$E35/etcdutl" snapshot restore "$snap" "${one[@]}" --data-dir "$dst/d"
measure_clean quorum_1 sh -c "'$Q' snapshot restore --quiet '$snap' --name m1 --initial-cluster '$ic' --initial-advertise-peer-urls http://127.0.0.1:2380 --data-dir '$dst/d' 2>/dev/null && sync"
measure_clean quorum_3 sh -c "'$Q' snapshot restore --quiet '$snap' --all-members --initial-cluster '$ic3' --data-dir '$dst/{name}' 2>/dev/null && sync"
rm -rf "$dst"

# The same two restores on a filesystem with reflinks (a loop-mounted XFS, as root with
# xfsprogs; XFS=0 skips it): the other members' dbs share the first's blocks.
xfs_rows=()
if [ "${XFS:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null; then
  img="$out/xfs.img" mnt="$out/xfs-mnt"
  umount "$mnt" 2>/dev/null || true
  rm -f "$img"; mkdir -p "$mnt"
  trap 'umount "$mnt" 2>/dev/null; rm -f "$img"' EXIT
  truncate -s $(( $(stat -c %s "$snap") * 2 + (1 << 30) )) "$img"
  if mkfs.xfs -q -f -m reflink=1 "$img" && mount -o loop "$img" "$mnt"; then
    dst="$mnt/t"
    measure_clean quorum_1_xfs sh -c "'$Q' snapshot restore --quiet '$snap' --name m1 --initial-cluster '$ic' --initial-advertise-peer-urls http://127.0.0.1:2380 --data-dir '$dst/d' 2>/dev/null && sync"
    measure_clean quorum_3_xfs sh -c "'$Q' snapshot restore --quiet '$snap' --all-members --initial-cluster '$ic3' --data-dir '$dst/{name}' 2>/dev/null && sync"
    rm -rf "$dst"
    xfs_rows=(quorum_1_xfs quorum_3_xfs)
  fi
  umount "$mnt"; rm -f "$img"; trap - EXIT
fi

print_results cp_sync cp3_sync etcdctl34 etcdutl35 quorum_1 quorum_3 "${xfs_rows[@]}"
echo "ratios (target):"
echo "  quorum restore / etcdutl 3.5 restore  $(ratio "${WALL[quorum_1]}" "${WALL[etcdutl35]}")  (<= 1.0)"
echo "  quorum restore / etcdctl 3.4 restore  $(ratio "${WALL[quorum_1]}" "${WALL[etcdctl34]}")"
echo "  quorum restore / cp + sync            $(ratio "${WALL[quorum_1]}" "${WALL[cp_sync]}")  (<= 1.5)"
echo "  3 members / 1 member                  $(ratio "${WALL[quorum_3]}" "${WALL[quorum_1]}")  (<= 1.3)"
[ "${#xfs_rows[@]}" = 0 ] || echo "  3 members / 1 member, XFS reflinks    $(ratio "${WALL[quorum_3_xfs]}" "${WALL[quorum_1_xfs]}")  (<= 1.3)"
echo "  3 copies / 1 copy (cp + sync)         $(ratio "${WALL[cp3_sync]}" "${WALL[cp_sync]}")  (what writing the bytes three times costs)"
echo "  3 members / 3 copies (cp + sync)      $(ratio "${WALL[quorum_3]}" "${WALL[cp3_sync]}")  (against that floor)"
echo "  peak RSS: quorum 1 member ${RSS[quorum_1]} MiB, 3 members ${RSS[quorum_3]} MiB (<= 128); etcdutl ${RSS[etcdutl35]} MiB"
echo "note: the etcd tools' times do not include a final sync (they fsync their own files); quorum's and cp's do."
