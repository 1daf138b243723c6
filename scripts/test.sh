#!/usr/bin/env bash
# The whole test suite: set up (etcd 3.4.23 and 3.5.16, build tools), build, and run every
# unit and integration test against real etcd processes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast
