#!/usr/bin/env bash
# Benchmark: the backup repository (`quorum backup`, `backups get`, `restore --repo`) on a
# file:// repository, on the same snapshot of >= 1 GiB as bench/snapshot.sh and restore.sh.
#  1. speed, warm cache, best of 3, with peak RSS: backup into a fresh repository vs
#     `zstd -1 -T1` (to /dev/null, and to a file as a backup must), `cp` and `cp && sync`; a
#     second backup of the same file (all chunks reused); `backups get` (exact file, fsynced,
#     sha256 checked) and `restore --repo` vs
#     `quorum snapshot restore` of the file (these two in turn, PAIR_RUNS (5) runs each, best
#     and median).
#  2. deduplication: a live etcd 3.5 member made from the snapshot, then 10 rounds of
#     "overwrite a random 1% of the keys, compact (physically) at the current revision as
#     kube-apiserver does, save a snapshot, back it up"; the bytes each backup adds, against the
#     first full backup and against a plain snapshot upload, and what the repository grew by
#     (du). Then the same without compaction.
#  3. live backup (only with PARTS including "live"): a member made from the snapshot;
#     `etcdctl snapshot save` and `quorum backup --endpoints` into a fresh repository in turn
#     (PAIR_RUNS each, best and median), `quorum snapshot save`, and the backup again into the
#     same repository (chunks reused).
# Results: printed at the end and written to bench/out/repo-results.txt.
# Usage: bench/repo.sh [SNAPSHOT_FILE]   (default: bench/out/snapshot-1g.db, made once)
# Knobs (environment): RUNS (3), ROUNDS (10), FRACTION (0.01), NOCOMPACT (1: also run the
# variant without compaction), PARTS ("speed dedup"; "speed dedup live" for all), CHUNK_KIB (default chunker average;
# e.g. "4 8 16" also backs every round up into one repository per average chunk size and
# reports what each adds; "p1 p2" = fixed chunks of 1 or 2 bbolt pages), LEVEL (the
# repositories' zstd level, `repo init --compression`; default: the repository default, -1).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${RUNS:-3}" ROUNDS="${ROUNDS:-10}" FRACTION="${FRACTION:-0.01}" NOCOMPACT="${NOCOMPACT:-1}"
PARTS="${PARTS:-speed dedup}"
init_level=(); [ -z "${LEVEL:-}" ] || init_level=("--compression=$LEVEL")
t_start=$(date +%s)
bench_build
snap="${1:-$out/snapshot-1g.db}"
[ -n "${1:-}" ] || big_snapshot "$snap" 800
size=$(stat -c %s "$snap")

work="$out/repo-work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work" "$out/.time"
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
export QUORUM_PASSWORD=quorum-bench-password
unset QUORUM_REPO QUORUM_PASSWORD_FILE QUORUM_KEY_FILE
results="$work/results"; : > "$results"
say() { printf '%s\n' "$*" | tee -a "$results"; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for p in sys.argv[2:]:
    v=d
    for k in p.split("."): v=v[k]
    print(v)' "$@"; }
pct() { awk "BEGIN{ if ($2 == 0) print \"inf\"; else printf \"%.2f\", 100 * $1 / $2 }"; }
mib() { awk "BEGIN{ printf \"%.1f\", $1 / 1048576 }"; }
ic="m1=http://127.0.0.1:2380"
one=(--name m1 --initial-cluster "$ic" --initial-advertise-peer-urls http://127.0.0.1:2380)

none() { :; }

# best_of NAME SETUP CMD...: like measure, but runs SETUP (untimed, then sync) before each of
# RUNS runs.
best_of() {
  local name="$1" setup="$2"; shift 2
  local best="" rss=0 w
  for _ in $(seq 1 "$RUNS"); do
    $setup; sync
    measure "$name" 1 "$@"; w="${WALL[$name]}"
    if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
    [ "${RSS[$name]}" -gt "$rss" ] && rss="${RSS[$name]}"
  done
  WALL[$name]="$best"; RSS[$name]="$rss"
}

# ---------------------------------------------------------------------------------------------
# 1. Speed
speed() {
  echo "bench: speed (best of $RUNS, warm cache)" >&2
  cat "$snap" >/dev/null
  local r="$work/r" url="file://$work/r" dst="$work/dst"
  fresh_repo() { rm -rf "$r" "$work/b.json"; "$Q" repo init --repo "$url" "${init_level[@]}" >/dev/null 2>&1; }
  rm_dst() { rm -rf "$dst"; mkdir -p "$dst"; }

  best_of zstd none zstd -1 -T1 -q -c "$snap"
  # A backup stores what it compressed: zstd writing its output beside the repository too.
  rm_z() { rm -f "$work/z.zst"; }
  best_of zstd_file rm_z sh -c "zstd -1 -T1 -q -c '$snap' > '$work/z.zst'"
  rm_z
  local zsize; zsize=$(zstd -1 -T2 -q -c "$snap" | wc -c)
  best_of cp rm_dst cp "$snap" "$dst/db"
  best_of cp_sync rm_dst sh -c "cp '$snap' '$dst/db' && sync"
  best_of backup fresh_repo sh -c "'$Q' backup --quiet --repo '$url' --cluster bench --snapshot '$snap' -w json > '$work/b.json'"
  local id added new; id=$(json "$work/b.json" id); added=$(json "$work/b.json" manifest.added_bytes)
  new=$(json "$work/b.json" new_chunks)
  best_of backup2 none sh -c "'$Q' backup --quiet --repo '$url' --cluster bench --snapshot '$snap' -w json > '$work/b2.json'"
  local added2 reused2 new2; added2=$(json "$work/b2.json" manifest.added_bytes)
  reused2=$(json "$work/b2.json" reused_chunks); new2=$(json "$work/b2.json" new_chunks)
  best_of get rm_dst "$Q" backups get --quiet --repo "$url" "$id" -o "$dst/snap.db"
  cmp -s "$snap" "$dst/snap.db" || { echo "bench: backups get: file differs from the snapshot" >&2; exit 1; }
  # In turn, PAIR_RUNS times each: on the bench machine (a VM) the same restore varied from
  # 1.8 to 4.8 s from one run to the next, so only runs side by side compare.
  alternate rm_dst "${PAIR_RUNS:-5}" \
    restore_native "'$Q' snapshot restore --quiet '$snap' ${one[*]} --data-dir '$dst/d' && sync" \
    restore_repo "'$Q' restore --quiet --repo '$url' '$id' ${one[*]} --data-dir '$dst/d' && sync"
  rm -rf "$r" "$dst"

  say "== 1. speed: snapshot $snap ($size bytes = $(mib "$size") MiB), file:// repository, warm cache, best of $RUNS"
  say "$(printf '%-44s %9s %13s' command 'wall (s)' 'peak RSS MiB')"
  row() { say "$(printf '%-44s %9s %13s' "$1" "${WALL[$2]}" "${RSS[$2]}")"; }
  row "zstd -1 -T1 -c FILE > /dev/null" zstd
  row "zstd -1 -T1 -c FILE > FILE.zst" zstd_file
  row "cp FILE DEST" cp
  row "cp FILE DEST && sync" cp_sync
  row "quorum backup (fresh repo)" backup
  row "quorum backup again (same repo)" backup2
  row "quorum backups get -o FILE" get
  row "quorum snapshot restore FILE (+ sync)" restore_native
  row "quorum restore --repo (+ sync)" restore_repo
  say "restores in turn, ${PAIR_RUNS:-5} runs each: median wall snapshot restore ${MED[restore_native]} s," \
    "restore --repo ${MED[restore_repo]} s; median CPU (user + sys) ${CPU[restore_native]} s and ${CPU[restore_repo]} s"
  say "ratios:"
  say "  backup / zstd -1 -T1                  $(ratio "${WALL[backup]}" "${WALL[zstd]}") (to /dev/null), $(ratio "${WALL[backup]}" "${WALL[zstd_file]}") (to a file)"
  say "  backup / cp                           $(ratio "${WALL[backup]}" "${WALL[cp]}")"
  say "  backup / cp && sync                   $(ratio "${WALL[backup]}" "${WALL[cp_sync]}")"
  say "  second backup / first backup          $(ratio "${WALL[backup2]}" "${WALL[backup]}")"
  say "  backups get / cp && sync              $(ratio "${WALL[get]}" "${WALL[cp_sync]}")"
  say "  restore --repo / snapshot restore     $(ratio "${WALL[restore_repo]}" "${WALL[restore_native]}") (best), $(ratio "${MED[restore_repo]}" "${MED[restore_native]}") (medians)"
  say "sizes: first backup added $added bytes ($(pct "$added" "$size")% of the file, $new chunks);" \
    "zstd -1 output $zsize bytes ($(pct "$zsize" "$size")%)"
  say "       second backup added $added2 bytes ($reused2 chunks reused, $new2 new)"
  say "peak RSS: backup ${RSS[backup]} MiB, second backup ${RSS[backup2]} MiB, get ${RSS[get]} MiB," \
    "restore --repo ${RSS[restore_repo]} MiB (snapshot restore ${RSS[restore_native]} MiB)"
  say ""
}

# ---------------------------------------------------------------------------------------------
# 2. Deduplication
cat > "$work/mutate.py" <<'EOF'
# mutate.py URL KEYS_FILE ROUND FRACTION: overwrite a random FRACTION of the keys with new
# kube-like values of 256..4096 bytes (as the snapshot's loader), in transactions of <= 1000 puts
# through etcd's JSON gateway; prints the last revision.
import base64, json, random, sys, urllib.request
url, keys_file, rnd, frac = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
keys = [k for k in open(keys_file, "rb").read().split(b"\n") if k]
rng = random.Random(7919 * rnd + 1)
pick = rng.sample(keys, max(1, round(len(keys) * frac)))
b64 = lambda b: base64.b64encode(b).decode()
def value(k, size):
    head = b'{"apiVersion":"v1","metadata":{"name":"' + k + b'","generation":' + str(rnd + 2).encode() + b'},"data":"'
    n = max(0, size - len(head) - 2)
    return head + base64.b64encode(rng.randbytes(n * 3 // 4 + 3))[:n] + b'"}'
rev, ops, nbytes = 0, [], 0
def flush():
    global rev, ops, nbytes
    req = urllib.request.Request(url + "/v3/kv/txn", data=json.dumps({"success": ops}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        rev = int(json.load(r)["header"]["revision"])
    ops, nbytes = [], 0
for k in pick:
    v = value(k, rng.randint(256, 4096))
    ops.append({"requestPut": {"key": b64(k), "value": b64(v)}})
    nbytes += len(k) + len(v)
    if len(ops) >= 1000 or nbytes >= 4 << 20:
        flush()
if ops:
    flush()
print(rev, len(pick))
EOF

# start_member DIR: restore the snapshot into DIR/data and start etcd 3.5 on it; sets C (client URL).
start_member() {
  local d="$1"
  local cp; cp=$(free_port); C="http://127.0.0.1:$(free_port)"
  local p="http://127.0.0.1:$cp"
  "$Q" snapshot restore --quiet "$snap" --name m1 --initial-cluster "m1=$p" --initial-advertise-peer-urls "$p" \
    --data-dir "$d/data" >/dev/null 2>&1
  "$E35/etcd" --name m1 --data-dir "$d/data" --listen-client-urls "$C" --advertise-client-urls "$C" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "m1=$p" \
    --unsafe-no-fsync --quota-backend-bytes 8589934592 --max-request-bytes 16777216 --max-txn-ops 10000 \
    --log-level error >"$d/etcd.log" 2>&1 &
  ETCD_PID=$!; pids+=("$ETCD_PID")
  for _ in $(seq 1 150); do "$E35/etcdctl" --endpoints "$C" endpoint health >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "bench: etcd did not start; log:" >&2; cat "$d/etcd.log" >&2; exit 1
}

# dedup_run LABEL COMPACT(1/0): a member from the snapshot, a full backup, ROUNDS increments.
dedup_run() {
  local label="$1" compact="$2"
  local d="$work/dedup-$label"; mkdir -p "$d"
  local url="file://$d/repo"
  echo "bench: dedup ($label): starting etcd 3.5 from the snapshot" >&2
  start_member "$d"
  "$Q" repo init --repo "$url" "${init_level[@]}" >/dev/null 2>&1
  local k; declare -A kfull=()
  for k in ${CHUNK_KIB:-}; do
    case "$k" in
      p*) "$Q" repo init --repo "file://$d/repo-c$k" --chunk-pages "${k#p}" >/dev/null 2>&1 ;;
      *) "$Q" repo init --repo "file://$d/repo-c$k" --chunk-avg-kib "$k" --chunk-pages 0 >/dev/null 2>&1 ;;
    esac
  done
  "$E35/etcdctl" --endpoints "$C" get "" --from-key --keys-only | grep -v '^$' > "$d/keys"
  local nkeys; nkeys=$(wc -l < "$d/keys")
  local tab="$d/table" full=0 fullgrew=0 i rev n t0 t1 t2 t3 t4 ssize added new reused
  : > "$tab"
  for i in $(seq 0 "$ROUNDS"); do
    t0=$(date +%s.%N); n=0
    if [ "$i" -gt 0 ]; then
      local m; m=$(python3 "$work/mutate.py" "$C" "$d/keys" "$i" "$FRACTION")
      read -r rev n <<< "$m"
    fi
    t1=$(date +%s.%N)
    if [ "$i" -gt 0 ] && [ "$compact" = 1 ]; then
      "$E35/etcdctl" --endpoints "$C" compact "$rev" --physical >/dev/null
    fi
    t2=$(date +%s.%N)
    rm -f "$d/snap.db"
    "$Q" snapshot save --quiet "$d/snap.db" --endpoints "$C" >/dev/null 2>&1
    t3=$(date +%s.%N)
    local du0; du0=$(du -sb "$d/repo" | cut -f1)
    "$Q" backup --quiet --repo "$url" --cluster "dedup-$label" --snapshot "$d/snap.db" -w json > "$d/b.json"
    t4=$(date +%s.%N)
    # What the repository grew by: the new blobs plus pack headers, the index object, the
    # manifest (added_bytes counts sealed blobs only).
    local grew; grew=$(( $(du -sb "$d/repo" | cut -f1) - du0 ))
    ssize=$(stat -c %s "$d/snap.db"); added=$(json "$d/b.json" manifest.added_bytes)
    new=$(json "$d/b.json" new_chunks); reused=$(json "$d/b.json" reused_chunks)
    [ "$i" -eq 0 ] && full="$added"
    [ "$i" -eq 0 ] && fullgrew="$grew"
    printf '%-5s %8s %14s %14s %8s %8s %8s %8s %7s %7s %7s %7s %14s %8s\n' "$i" "$n" "$ssize" "$added" \
      "$(pct "$added" "$full")" "$(pct "$added" "$ssize")" "$new" "$reused" \
      "$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")" "$(awk "BEGIN{printf \"%.1f\", $t2-$t1}")" \
      "$(awk "BEGIN{printf \"%.1f\", $t3-$t2}")" "$(awk "BEGIN{printf \"%.1f\", $t4-$t3}")" \
      "$grew" "$(pct "$grew" "$fullgrew")" >> "$tab"
    echo "bench: dedup ($label) round $i: added $added bytes" >&2
    for k in ${CHUNK_KIB:-}; do
      local kt0 kt1 kadded; kt0=$(date +%s.%N)
      "$Q" backup --quiet --repo "file://$d/repo-c$k" --cluster "dedup-$label" --snapshot "$d/snap.db" -w json > "$d/bk.json"
      kt1=$(date +%s.%N); kadded=$(json "$d/bk.json" manifest.added_bytes)
      [ "$i" -eq 0 ] && kfull[$k]="$kadded"
      say "   round $i, chunker $k: added $kadded bytes = $(pct "$kadded" "${kfull[$k]}")% of its full backup," \
        "$(json "$d/bk.json" new_chunks) new chunks, backup $(awk "BEGIN{printf \"%.1f\", $kt1-$kt0}") s"
    done
  done
  local total; total=$(du -sb "$d/repo" | cut -f1)
  kill -9 "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null || true
  local incs; incs=$(awk 'NR>1{s+=$4; c++} END{ if (c) printf "%.0f", s/c; else print 0 }' "$tab")
  local maxinc; maxinc=$(awk 'NR>1 && $4>m{m=$4} END{print m+0}' "$tab")
  local grews; grews=$(awk 'NR>1{s+=$13; c++} END{ if (c) printf "%.0f", s/c; else print 0 }' "$tab")
  if [ "$compact" = 1 ]; then
    say "== 2. dedup, WITH compaction: $nkeys keys; each round overwrites $(pct "$FRACTION" 1)% of them," \
      "then 'etcdctl compact <rev> --physical', 'quorum snapshot save', 'quorum backup --snapshot'"
  else
    say "== 2. dedup, WITHOUT compaction: $nkeys keys; each round overwrites $(pct "$FRACTION" 1)% of them," \
      "then 'quorum snapshot save', 'quorum backup --snapshot' (history grows)"
  fi
  say "   (round 0 = first full backup; plain snapshot upload adds the snapshot size = 100%)"
  say "$(printf '%-5s %8s %14s %14s %8s %8s %8s %8s %7s %7s %7s %7s %14s %8s' round changed 'snapshot B' 'added B' '%full' '%snap' \
    'new ch' 'reused' 'put s' 'cmp s' 'save s' 'bkp s' 'repo grew B' '%grew')"
  while IFS= read -r line; do say "$line"; done < "$tab"
  say "   increments: mean added $incs bytes = $(pct "$incs" "$full")% of the full backup" \
    "(max $(pct "$maxinc" "$full")%, target <= 3%); a plain snapshot upload adds 100% of the snapshot each time"
  say "   the repository grew by $grews bytes a round = $(pct "$grews" "$fullgrew")% of what the full backup grew it by"    "(with pack headers, the index object and the manifest)"
  say "   repository after $((ROUNDS + 1)) backups: $total bytes; $((ROUNDS + 1)) plain snapshots:" \
    "$(awk '{s+=$3} END{printf "%.0f", s}' "$tab") bytes"
  say ""
  rm -rf "$d"
}

# ---------------------------------------------------------------------------------------------
# 3. Live backup: from a running etcd 3.5 member made from the snapshot, best of RUNS each.
live() {
  local d="$work/live"; mkdir -p "$d"
  echo "bench: live: starting etcd 3.5 from the snapshot" >&2
  start_member "$d"
  local url="file://$d/repo"
  rm_snap() { rm -f "$d/s.db" "$d/s.db.part"; }
  fresh_live_repo() { rm -rf "$d/repo"; "$Q" repo init --repo "$url" "${init_level[@]}" >/dev/null 2>&1; }
  # etcdctl and the backup into a fresh repository in turn, PAIR_RUNS times each: on two cores
  # both share them with the sending member, and runs apart differed by more than the target.
  both_fresh() { rm_snap; fresh_live_repo; }
  alternate both_fresh "${PAIR_RUNS:-5}" \
    save_etcdctl "'$E35/etcdctl' --endpoints '$C' snapshot save '$d/s.db'" \
    live_fresh "'$Q' backup --quiet --repo '$url' --cluster live --endpoints '$C' --tmp-dir '$d'"
  best_of save_quorum rm_snap "$Q" snapshot save --quiet "$d/s.db" --endpoints "$C"
  best_of live_again none "$Q" backup --quiet --repo "$url" --cluster live --endpoints "$C" --tmp-dir "$d"
  kill -9 "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null || true
  say "== 3. live backup from a running etcd 3.5.16 member holding the snapshot (file:// repository), best of $RUNS;" \
    "etcdctl and the fresh backup in turn, ${PAIR_RUNS:-5} runs each (best)"
  say "$(printf '%-52s %9s %13s' command 'wall (s)' 'peak RSS MiB')"
  lrow() { say "$(printf '%-52s %9s %13s' "$1" "${WALL[$2]}" "${RSS[$2]}")"; }
  lrow "etcdctl snapshot save FILE (3.5.16)" save_etcdctl
  lrow "quorum snapshot save FILE" save_quorum
  lrow "quorum backup --endpoints (fresh repository)" live_fresh
  lrow "quorum backup --endpoints (again, chunks reused)" live_again
  say "ratios:"
  say "  live backup (fresh) / etcdctl snapshot save   $(ratio "${WALL[live_fresh]}" "${WALL[save_etcdctl]}") (best)," \
    "$(ratio "${MED[live_fresh]}" "${MED[save_etcdctl]}") (medians: ${MED[live_fresh]} and ${MED[save_etcdctl]} s;" \
    "median CPU ${CPU[live_fresh]} and ${CPU[save_etcdctl]} s, the member's not counted)"
  say "  live backup (again) / etcdctl snapshot save   $(ratio "${WALL[live_again]}" "${WALL[save_etcdctl]}")"
  say "  quorum snapshot save / etcdctl snapshot save  $(ratio "${WALL[save_quorum]}" "${WALL[save_etcdctl]}")"
  say ""
  rm -rf "$d"
}

case " $PARTS " in *" speed "*) speed ;; esac
case " $PARTS " in *" live "*) live ;; esac
case " $PARTS " in *" dedup "*)
  dedup_run compact 1
  [ "$NOCOMPACT" = 1 ] && dedup_run nocompact 0
  ;; esac

say "script run time: $(( $(date +%s) - t_start )) s (machine shared with other work: timings may be noisy)"
echo
echo "================ results (also in bench/out/repo-results.txt) ================"
cat "$results"
cp "$results" "$out/repo-results.txt"
