#!/usr/bin/env bash
# Multiqueue: one thread per core (-t), each on its own TX queue, flows
# spread over source ports (-l), as the kernel's pktgen_sample02_multiqueue.sh.
# -h explains every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/parameters.sh"
source "$(dirname "${BASH_SOURCE[0]}")/functions.sh"
if kernel_pktgen_available; then
    kernel_setup 1 "$FLOWS"
    kernel_run
else
    fallback_run "$FLOWS"
fi
