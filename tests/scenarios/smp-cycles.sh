#!/bin/sh
# The cycles scenario with vcpus = 4: besides everything it checks, every vCPU's
# data/vcpu/<n>/ticks advances after each suspend (smp_ok / ticks_advance in lib.sh).
# needs: ballast
# timeout: 600
VCPUS=4
. /lab/scenarios/cycles.sh
