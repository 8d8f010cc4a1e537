#!/usr/bin/env bash
# Runs every test: unit and property tests, BPF_PROG_TEST_RUN tables and the
# end-to-end tests on veth in network namespaces. The last two need root; run
# as a normal user they fail with a message saying so, they do not pass.
#   scripts/test.sh            all tests
#   scripts/test.sh ARGS...    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: not root: the BPF and namespace tests will fail; run 'sudo -E scripts/test.sh'" >&2
fi
cargo build -j2 --workspace --all-targets
cargo test -j2 --workspace "$@"
