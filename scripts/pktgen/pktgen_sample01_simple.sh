#!/usr/bin/env bash
# Simple example: one thread, one flow, as the kernel's
# samples/pktgen/pktgen_sample01_simple.sh. -h explains every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/parameters.sh"
source "$(dirname "${BASH_SOURCE[0]}")/functions.sh"
THREADS=1
if kernel_pktgen_available; then
    kernel_setup 1 1
    kernel_run
else
    fallback_run 1
fi
