#!/usr/bin/env bash
# On request, after ./run.sh: the rest of the fusion sweep (conf/decode_fusion_schedules.yaml: delayed
# v1 and v2 every 1, 10 and 20 frames, without the prior, the unigram-256 LMs), tuned on dev and
# decoded on dev and test like stage 13's methods; ~7 min on 2 CPU cores.
set -euo pipefail
./run.sh --stage 12 --stop-stage 13 --fusion-config conf/decode_fusion_schedules.yaml "$@"
