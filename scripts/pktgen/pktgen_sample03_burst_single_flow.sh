#!/usr/bin/env bash
# Burst, single flow: packets of one flow sent in bursts of -b, as the
# kernel's pktgen_sample03_burst_single_flow.sh (line-rate tests of a single
# queue). -h explains every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/parameters.sh"
source "$(dirname "${BASH_SOURCE[0]}")/functions.sh"
if [ "$BURST" -lt 2 ]; then BURST=32; fi
if kernel_pktgen_available; then
    kernel_setup "$BURST" 1
    kernel_run
else
    fallback_run 1
fi
