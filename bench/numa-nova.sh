#!/usr/bin/env bash
# `quorum numa fit` against the real nova 34.0.0, at scale: crates/numa/tests/nova/differential.py
# generates SEEDS × COUNT random scenarios (compute host as sysfs/procfs and libvirt capabilities,
# nova.conf, guests nova placed itself, one request), asks nova (.tools/nova-venv) for each answer,
# runs target/release/quorum on the same files and prints what the generator covered and one
# agreement table (outcome, host cells, page size, pinning, emulator pCPUs, rejection reason).
# Exits non-zero on any disagreement; the disagreeing scenarios are kept and named.
# Also written to bench/out/numa-nova.txt.
#   bash bench/numa-nova.sh     Knobs (environment): SEEDS, a count (20: seeds 1..20) or a list
#   (3,7,11); COUNT scenarios per seed (1000); JOBS quorum runs and generator processes at once
#   (2); SHOW disagreements printed (10); KEEP=1 keeps every scenario directory.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SEEDS="${SEEDS:-20}" COUNT="${COUNT:-1000}" JOBS="${JOBS:-2}" SHOW="${SHOW:-10}"
bash "$root/scripts/setup.sh" >/dev/null
(cd "$root" && cargo build --release --locked -q -p quorum)
Q="$root/target/release/quorum"
PY="$root/.tools/nova-venv/bin/python"
[ -x "$PY" ] || { echo "bench: $PY missing (scripts/setup.sh)" >&2; exit 1; }
case "$SEEDS" in
  *,*) seeds="$SEEDS" ;;
  *) seeds="$(seq -s, 1 "$SEEDS")" ;;
esac
keep=()
[ "${KEEP:-0}" = 1 ] && keep=(--out "$out/numa-nova-scenarios")
[ "${KEEP:-0}" = 1 ] && rm -rf "$out/numa-nova-scenarios"
echo "bench: seeds $seeds, $COUNT scenarios each, $JOBS at once, against $Q"
status=0
"$PY" "$root/crates/numa/tests/nova/differential.py" run --seeds "$seeds" --count "$COUNT" --quorum "$Q" \
  --jobs "$JOBS" --show "$SHOW" "${keep[@]}" | tee "$out/numa-nova.txt" || status=$?
exit "$status"
