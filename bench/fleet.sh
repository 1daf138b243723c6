#!/usr/bin/env bash
# The repository at fleet scale, on a local S3 server (moto) started here: repositories of
# 20, 2,000 and 20,000 backups spread over 1, 100 and 1,000 clusters (20 per cluster), filled
# in-process (crates/repo/examples/fill_fleet.rs: one real backup per cluster of a small real
# etcd snapshot, the other 19 its manifest sealed again with older times). Then, for one
# cluster: `backups list --cluster`, `restore latest --cluster`, a new backup, and
# `forget --keep-last 3 --cluster --prune`: wall time and object-store requests (GET, LIST,
# PUT, DELETE, HEAD, counted from the server's own request log; a DeleteObjects POST counts as
# a DELETE). The same operations are then timed on a file:// repository of the same sizes:
# moto's prefix LIST scans its whole bucket (a LIST on the 20,000-backup bucket takes ~6x one on
# the 20-backup bucket), which real object stores do not. Target: each at 20,000
# backups within 1.5x of its figure at 20, with request counts independent of the other
# clusters. `repo check` over the whole repository is reported per backup. Best of RUNS=3.
#   bash bench/fleet.sh            (SIZES="20:1 2000:100 20000:1000" by default)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_build
(cd "$root" && cargo build --release --locked -q -p repo --example fill_fleet)
FILL="$root/target/release/examples/fill_fleet"
SIZES="${SIZES:-20:1 2000:100 20000:1000}"
work="$(mktemp -d -t quorum-fleet-XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Small real snapshots (etcd 3.5), four different ones.
c="http://127.0.0.1:$(free_port)"; p="http://127.0.0.1:$(free_port)"
"$E35/etcd" --name f --data-dir "$work/etcd" --listen-client-urls "$c" --advertise-client-urls "$c" \
  --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "f=$p" --unsafe-no-fsync --log-level error >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do "$E35/etcdctl" --endpoints "$c" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
snaps=()
for s in 1 2 3 4; do
  for i in $(seq 1 60); do "$E35/etcdctl" --endpoints "$c" put "/registry/configmaps/ns-$s/cm-$i" "snapshot $s value $i $(head -c 200 /dev/urandom | base64 -w0)" >/dev/null; done
  "$E35/etcdctl" --endpoints "$c" snapshot save "$work/s$s.db" >/dev/null 2>&1
  snaps+=("$work/s$s.db")
done
ls -l "${snaps[@]}" | awk '{print "snapshot", $NF, $5, "bytes"}'

# moto, logging every request.
port="$(free_port)"
"$root/.tools/pyenv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.2; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
head -c 32 /dev/urandom > "$work/key"

# count FROM_LINE: requests logged after line FROM_LINE, as "GET LIST PUT DELETE HEAD".
count() {
  tail -n +"$(($1 + 1))" "$work/moto.log" | awk '
    /"(GET|PUT|POST|DELETE|HEAD) / {
      m = $0; sub(/.*"/, "", m); split($0, q, "\""); split(q[2], r, " "); meth = r[1]; path = r[2]
      if (meth == "GET" && (path ~ /list-type=/ || path ~ /[?&]prefix=/ || path ~ /[?&]delimiter=/)) meth = "LIST"
      if (meth == "POST" && path ~ /[?&]delete/) meth = "DELETE"   # object_store deletes through DeleteObjects
      n[meth]++
    }
    END { printf "%d %d %d %d %d", n["GET"], n["LIST"], n["PUT"] + n["POST"], n["DELETE"], n["HEAD"] }'
}
lines() { wc -l < "$work/moto.log"; }

declare -A T R F
ops=(list restore backup forget_prune)
printf '\n%-8s %-9s %-13s %9s %s\n' backups clusters operation "wall (s)" "requests GET/LIST/PUT/DELETE/HEAD"
for size in $SIZES; do
  n="${size%%:*}"; nc="${size##*:}"; per=$((n / nc))
  bucket="fleet$n"
  curl -fs -X PUT "http://127.0.0.1:$port/$bucket" >/dev/null
  url="s3://$bucket/repo"
  Rf=(--repo "$url" --key-file "$work/key" --endpoint "$AWS_ENDPOINT" --region us-east-1)
  "$Q" repo init "${Rf[@]}" >/dev/null
  t0=$(date +%s.%N)
  "$FILL" "$url" "$work/key" "$nc" "$per" "${snaps[@]}" 2>"$work/fill.log" || { cat "$work/fill.log" >&2; exit 1; }
  fill=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}")
  echo "filled $n backups of $nc clusters in ${fill}s" >&2
  # The last cluster holding snapshot 1 (fill_fleet hands them out in turn): the same data at
  # every size; its new backup is of snapshot 2 (an increment, as the next hourly backup).
  cl="c$(( (nc - 1) - (nc - 1) % ${#snaps[@]} ))"
  # Each operation RUNS times (best wall time); requests counted on the first run.
  run_op() { # NAME CMD... ({i} in an argument: the run's number)
    local name="$1"; shift
    local best="" before i s w
    for i in $(seq 1 "${RUNS:-3}"); do
      before=$(lines)
      s=$(date +%s.%N)
      "${@//\{i\}/$i}" >"$work/out" 2>&1 || { echo "bench: $name failed:" >&2; cat "$work/out" >&2; exit 1; }
      w=$(awk "BEGIN{printf \"%.3f\", $(date +%s.%N) - $s}")
      if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
      if [ "$i" = 1 ]; then sleep 0.3; R[$n:$name]=$(count "$before"); fi  # the server flushes its log
    done
    T[$n:$name]="$best"
    printf '%-8s %-9s %-13s %9s %s\n' "$n" "$nc" "$name" "${T[$n:$name]}" "${R[$n:$name]// //}"
  }
  run_op list "$Q" backups list "${Rf[@]}" --cluster "$cl"
  run_op restore "$Q" restore latest "${Rf[@]}" --cluster "$cl" --data-dir "$work/restore-$n-{i}"
  run_op backup "$Q" backup "${Rf[@]}" --cluster "$cl" --snapshot "${snaps[1]}"
  run_op forget_prune "$Q" forget "${Rf[@]}" --cluster "$cl" --keep-last 3 --prune
  # repo check of the whole repository, per backup (on moto it is slow: CHECK_S3=1).
  if [ "${CHECK_S3:-0}" = 1 ]; then
    s=$(date +%s.%N)
    "$Q" repo check "${Rf[@]}" >/dev/null
    ck=$(awk "BEGIN{print $(date +%s.%N) - $s}")
    printf '%-8s %-9s %-13s %9.2f (%.2f ms per backup)\n' "$n" "$nc" "check(all)" "$ck" "$(awk "BEGIN{print $ck * 1000 / $n}")"
  fi
done

# The same on local disk (wall time only).
unset AWS_ENDPOINT
for size in $SIZES; do
  n="${size%%:*}"; nc="${size##*:}"; per=$((n / nc))
  url="file://$work/file$n"
  Rf=(--repo "$url" --key-file "$work/key")
  "$Q" repo init "${Rf[@]}" >/dev/null
  "$FILL" "$url" "$work/key" "$nc" "$per" "${snaps[@]}" 2>"$work/fill.log" || { cat "$work/fill.log" >&2; exit 1; }
  cl="c$(( (nc - 1) - (nc - 1) % ${#snaps[@]} ))"
  for o in list restore backup forget_prune; do
    best=""
    for i in $(seq 1 "${RUNS:-3}"); do
      s=$(date +%s.%N)
      case "$o" in
        list) "$Q" backups list "${Rf[@]}" --cluster "$cl" ;;
        restore) "$Q" restore latest "${Rf[@]}" --cluster "$cl" --data-dir "$work/frestore-$n-$i" ;;
        backup) "$Q" backup "${Rf[@]}" --cluster "$cl" --snapshot "${snaps[1]}" ;;
        forget_prune) "$Q" forget "${Rf[@]}" --cluster "$cl" --keep-last 3 --prune ;;
      esac >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
      w=$(awk "BEGIN{printf \"%.3f\", $(date +%s.%N) - $s}")
      if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best="$w"; fi
    done
    F[$n:$o]="$best"
    printf '%-8s %-9s %-13s %9s (file://)\n' "$n" "$nc" "$o" "${F[$n:$o]}"
  done
  s=$(date +%s.%N)
  "$Q" repo check "${Rf[@]}" >/dev/null
  ck=$(awk "BEGIN{print $(date +%s.%N) - $s}")
  printf '%-8s %-9s %-13s %9.2f (file://, %.2f ms per backup)\n' "$n" "$nc" "check(all)" "$ck" "$(awk "BEGIN{print $ck * 1000 / $n}")"
done

first="${SIZES%% *}"; first="${first%%:*}"; last="${SIZES##* }"; last="${last%%:*}"
echo
echo "at $last backups against $first (target: wall <= 1.5x, same request counts):"
for o in "${ops[@]}"; do
  printf '  %-13s requests %s -> %s; S3 wall %s -> %s s = %sx; file:// wall %s -> %s s = %sx\n' "$o" "${R[$first:$o]// //}" "${R[$last:$o]// //}" \
    "${T[$first:$o]}" "${T[$last:$o]}" "$(ratio "${T[$last:$o]}" "${T[$first:$o]}")" "${F[$first:$o]}" "${F[$last:$o]}" "$(ratio "${F[$last:$o]}" "${F[$first:$o]}")"
done
