#!/bin/sh
# The cross-host-save scenario with vcpus = 4: besides everything it checks, every vCPU's
# data/vcpu/<n>/ticks advances after each suspend (smp_ok / ticks_advance in lib.sh).
# needs: ballast
# timeout: 200
VCPUS=4
. /lab/scenarios/cross-host-save.sh
