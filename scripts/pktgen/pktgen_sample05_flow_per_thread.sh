#!/usr/bin/env bash
# Flows per thread: each thread sends -l flows of its own, as the kernel's
# pktgen_sample05_flow_per_thread.sh (for testing RSS spreading and per-flow
# state). -h explains every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/parameters.sh"
source "$(dirname "${BASH_SOURCE[0]}")/functions.sh"
if [ "$FLOWS" -lt 2 ]; then FLOWS=64; fi
if kernel_pktgen_available; then
    kernel_setup 1 "$FLOWS"
    kernel_run
else
    # The bundled generator's xdp-live engine gives each core its own flows;
    # the socket engines start each thread at a different flow.
    fallback_run "$FLOWS"
fi
