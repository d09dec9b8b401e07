#!/bin/sh
# The pv-cycles scenario with vcpus = 4 (12 mixed cycles): the disk and the network ride through
# save + restore, checkpoints and migrations with every vCPU quiesced at each suspend.
# needs: ballast
# timeout: 700
VCPUS=4
CYCLES=${CYCLES:-12}
. /lab/scenarios/pv-cycles.sh
