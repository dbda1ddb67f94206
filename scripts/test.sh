#!/usr/bin/env bash
# Runs the whole test suite: installs the test dependencies, then every test of
# the workspace (unit, property, storage conformance, black-box clusters,
# hostile clients, etcdctl/etcd-client compatibility, differential against etcd),
# then every fuzz target for a bounded time (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  echo "cargo-nextest not found; running cargo test instead"
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi
scripts/fuzz.sh || status=$?
exit "$status"
