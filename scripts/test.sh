#!/usr/bin/env bash
# The whole test suite: set up (etcd 3.4.23 and 3.5.16, build tools), check formatting and
# lints (rustfmt; clippy and rustdoc with warnings as errors), build, and run every unit and
# integration test against real etcd processes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# A clean clone gains nothing from incremental caches, which are the largest part of target/.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# Style and lints first: they fail in seconds, the suite takes minutes.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast
