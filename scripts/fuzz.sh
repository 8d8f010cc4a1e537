#!/usr/bin/env bash
# Runs every fuzz target of the dpi crate (dpi/fuzz) for a bounded time each,
# starting from the committed seed corpus. Fails on the first crash, leaving
# the input under dpi/fuzz/artifacts/.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
# cargo fuzz passes -Z flags (sanitizer, coverage); stable rustc takes them
# with RUSTC_BOOTSTRAP=1, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
cd dpi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list); do
    echo "fuzz.sh: $target for ${secs}s"
    set +e
    cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    # libFuzzer's progress lines are noise here; its summary and any crash report are not.
    grep -aE "^(Done|INFO: seed corpus|==[0-9]+==|SUMMARY|stat::number_of_executed_units|thread '.*' panicked|Test unit written)" "$log" || true
    if [ "$status" -ne 0 ]; then
        grep -aA20 "panicked" "$log" | head -40 >&2 || true
        echo "fuzz.sh: $target failed (exit $status); the crashing input is in dpi/fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done
echo "fuzz.sh: all targets ran ${secs}s without a crash"
