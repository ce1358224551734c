#!/usr/bin/env bash
# repedge-polarity 3.0.0 from scratch, one command (issue 18): fine-tune, then the 8.4 MB int4
# point (vocabulary pruned to the training tweets, GPTQ int4 dense layers, least-error int4
# token table), scored in RepLab's protocol against its fp32 parent, copied to OUT.
#
#   bash scripts/train_model.sh [OUT]     # OUT defaults to runs/3.0.0 (models/default ships it)
#
# The run folder resumes exactly where it stopped if interrupted (rerun the same command).
# Needs ../shared/data (or DATA=...). About 70 min on an idle 2-core x86_64 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/3.0.0}"
DATA="${DATA:-../shared/data}"
RUN="${RUN:-runs/r10}"
WORK="${WORK:-runs/frontier}"
POINT="${POINT:-vocab-8-gptq}"
SEMEVAL="$DATA/semeval2017/train_2013-2016.tsv"
REPLAB_TRAIN="$DATA/replab2013/training_en.tsv"
REPLAB_TEST="$DATA/replab2013/automotive_en.tsv"
. .venv/bin/activate

if [ ! -f "$RUN/bundle/manifest.json" ]; then
    trainer train --out "$RUN" --semeval "$SEMEVAL" --replab-train "$REPLAB_TRAIN" \
        --replab-test "$REPLAB_TEST" --task-heads --filter-head --replab-repeat 2 \
        --unweighted-source replab --epochs 1.5 --eval-every 400 --patience 6 \
        --variants fp32,int8 --version 3.0.0
fi
python benchmarks/size_frontier_protocol.py --run "$RUN" --semeval "$SEMEVAL" \
    --replab-train "$REPLAB_TRAIN" --replab-test "$REPLAB_TEST" --points "$POINT" --work "$WORK" \
    --out "$WORK/protocol"
trainer copy-bundle "$WORK/$POINT" "$OUT" --variants int4 --version 3.0.0
