#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/fuzz_targets for FUZZ_SECONDS each (default 20),
# starting from the corpus kept in fuzz/corpus. The CI run is this, bounded; a
# longer one is the same with more time, or one target alone:
#
#   FUZZ_SECONDS=3600 scripts/fuzz.sh request_decoding
#
# cargo-fuzz runs on the stable toolchain with --sanitizer none: synod has no
# unsafe code for a sanitizer to watch; the targets look for panics and for the
# properties they assert. New inputs go to a scratch directory, so the kept
# corpus changes only on purpose (cargo fuzz cmin, then commit). A failing input
# is saved under fuzz/artifacts/<target>/ and the command that replays it printed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build --sanitizer none
for target in "${targets[@]}"; do
  scratch=$(mktemp -d)
  echo "fuzzing $target for ${seconds}s"
  if ! cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>"$scratch.log"; then
    tail -n 40 "$scratch.log" >&2
    echo "fuzz target $target failed; replay with:" >&2
    for artifact in artifacts/"$target"/*; do
      [ -e "$artifact" ] && echo "  (cd fuzz && cargo fuzz run --sanitizer none $target $artifact)" >&2
    done
    rm -rf "$scratch"
    exit 1
  fi
  grep -E "^stat::number_of_executed_units|^Done" "$scratch.log" | tail -n 1
  rm -rf "$scratch" "$scratch.log"
done
