#!/usr/bin/env bash
# Runs the whole test suite: installs the test dependencies, then every test of
# the workspace (unit, property, storage conformance, black-box clusters,
# etcdctl/etcd-client compatibility, differential against etcd).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found; running cargo test instead"
  exec cargo test --workspace --no-fail-fast "$@"
fi
