#!/usr/bin/env bash
# Runs the fuzz targets one after another (one libFuzzer process at a time) and prints, per
# target, the executions, wall seconds, crashes and executions per second.
#
#   fuzz/run.sh [TARGET...]          every target of fuzz/Cargo.toml when none is named
#
# Environment: RUNS (default 10000000) and SECONDS_EACH (default 3600): a target stops at
# whichever comes first. RESUME=1 starts from the corpus the target's last run left (the
# seeds added), so runs in turn add up to one long run; two series may run at once (each removes
# only the scratch files of fuzzers that are gone). BUILD=0 runs the binaries already built (see below). RSS_MB (2048) and TIMEOUT (10 s per input) are libFuzzer's limits:
# a larger resident set or a slower input is a finding. Each run starts from a fresh copy of
# the committed seeds (fuzz/seeds/<target>/) in fuzz/out/corpus/<target>/; findings go to
# fuzz/out/artifacts/<target>/, libFuzzer's output to fuzz/out/logs/<target>.log, and the
# table lines are appended to fuzz/out/results.txt (fuzz/out is not committed).
#
# Needs cargo-fuzz and a nightly toolchain (`cargo +nightly fuzz`). The seeds are written by
# fuzz/seeds/make_seeds.py; its WAL and bbolt seeds were cut from an etcd 3.5.16 data dir
# (`etcd --snapshot-count 5`, eight puts, a lease and a delete, then `etcdctl snapshot save`).
set -euo pipefail

FUZZ="$(cd "$(dirname "$0")" && pwd)"
RUNS="${RUNS:-10000000}"
SECONDS_EACH="${SECONDS_EACH:-3600}"
RSS_MB="${RSS_MB:-2048}"
TIMEOUT="${TIMEOUT:-10}"
OUT="$FUZZ/out"
# BUILD=0 runs the binaries `cargo +nightly fuzz build` left in fuzz/target as they are (a
# long series is then not rebuilt midway by edits to the crates).
BUILD="${BUILD:-1}"
BIN="$FUZZ/target/x86_64-unknown-linux-gnu/release"
cd "$FUZZ"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$FUZZ")
fi

mkdir -p "$OUT/logs"
printf '%-20s %14s %9s %8s %10s\n' target executions seconds crashes exec/s
for t in "${targets[@]}"; do
    corpus="$OUT/corpus/$t"
    artifacts="$OUT/artifacts/$t"
    log="$OUT/logs/$t.log"
    [ "${RESUME:-0}" = 1 ] || rm -rf "$corpus"
    rm -rf "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$FUZZ/seeds/$t" ]; then
        cp -n "$FUZZ/seeds/$t"/* "$corpus"/
    fi
    flags=(-runs="$RUNS" -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" -print_final_stats=1 -artifact_prefix="$artifacts/")
    if [ "$BUILD" = 1 ]; then
        # Built before the clock starts (a no-op when up to date).
        cargo +nightly fuzz build --fuzz-dir "$FUZZ" "$t" >"$log" 2>&1 || { echo "$t: build failed, see $log"; exit 1; }
    fi
    start=$(date +%s.%N)
    set +e
    if [ "$BUILD" = 1 ]; then
        cargo +nightly fuzz run --fuzz-dir "$FUZZ" "$t" "$corpus" -- "${flags[@]}" >"$log" 2>&1
    else
        "$BIN/$t" "${flags[@]}" "$corpus" >"$log" 2>&1
    fi
    rc=$?
    set -e
    end=$(date +%s.%N)
    # Scratch files the targets keep on tmpfs, named after the fuzzer's process
    # (quorum-fuzz-[NAME-]PID[.db]): those whose process is gone, so that a series running
    # beside this one keeps its own.
    for f in /dev/shm/quorum-fuzz-* /tmp/quorum-fuzz-*; do
        [ -e "$f" ] || continue
        p="${f%.db}"; p="${p##*-}"
        case "$p" in '' | *[!0-9]*) continue ;; esac
        kill -0 "$p" 2>/dev/null || rm -rf "$f"
    done
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    execs=${execs:-0}
    # libFuzzer's own count of fuzzing seconds ("Done N runs in S second(s)"); the wall time
    # (which includes any rebuild cargo fuzz run does) when it stopped on a finding.
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [ -z "$secs" ] || [ "$secs" = 0 ]; then
        secs=$(echo "$end - $start" | bc)
    fi
    crashes=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    rate=$(echo "$execs / $secs" | bc)
    line=$(printf '%-20s %14s %9.0f %8s %10s' "$t" "$execs" "$secs" "$crashes" "$rate")
    echo "$line"
    echo "$(date -u +%FT%TZ) $(git -C "$FUZZ" rev-parse --short HEAD 2>/dev/null) rc=$rc $line" >>"$OUT/results.txt"
done
