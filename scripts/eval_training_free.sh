#!/usr/bin/env bash
# Training-free comparison of the RoPE scaling methods: perplexity and passkey at 1, 2, 4, 8, 16 × L0, then the
# report (report.md holds the README table: perplexity, bits per byte and passkey accuracy per method and length).
#
#   scripts/eval_training_free.sh                              # the embedded model -> results/training_free/
#   MODEL=out/my-model FACTOR=8 OUT=results/mine scripts/eval_training_free.sh
#
# Knobs (environment variables):
#   MODEL        model to evaluate: embedded, a checkpoint directory or a Hub id (default: embedded)
#   OUT          folder for results.jsonl, the PNGs and report.md (default: results/training_free)
#   METHODS      methods to compare; "default" is the model as saved (default: default linear ntk dynamic yarn
#                dynamic-yarn)
#   FACTOR       scale factor s for every method but default (default: 16, i.e. up to 16 × L0)
#   LENGTHS      comma-separated lengths (default: 1,2,4,8,16 × the model's L0)
#   MAX_WINDOWS  perplexity windows per length (default: 16)
#   TRIALS       passkey trials per (length, depth) cell (default: 5)
#   DEPTHS       passkey depths (default: 0,0.5,1)
#   PYTHON       interpreter that has ropescale (default: python)
# Rerunning skips every finished cell (results.jsonl is appended cell by cell), so an interrupted run resumes.
set -euo pipefail

MODEL=${MODEL:-embedded}
OUT=${OUT:-results/training_free}
METHODS=${METHODS:-default linear ntk dynamic yarn dynamic-yarn}
FACTOR=${FACTOR:-16}
LENGTHS=${LENGTHS:-}
MAX_WINDOWS=${MAX_WINDOWS:-16}
TRIALS=${TRIALS:-5}
DEPTHS=${DEPTHS:-0,0.5,1}
PYTHON=${PYTHON:-python}

RESULTS="$OUT/results.jsonl"
mkdir -p "$OUT"
lengths=()
if [ -n "$LENGTHS" ]; then lengths=(--lengths "$LENGTHS"); fi

for method in $METHODS; do
    spec=()
    if [ "$method" != default ]; then spec=(--method "$method" --factor "$FACTOR"); fi
    echo "== $method"
    "$PYTHON" -m ropescale eval perplexity --model "$MODEL" ${spec[@]+"${spec[@]}"} ${lengths[@]+"${lengths[@]}"} \
        --max-windows "$MAX_WINDOWS" --output "$RESULTS"
    "$PYTHON" -m ropescale eval passkey --model "$MODEL" ${spec[@]+"${spec[@]}"} ${lengths[@]+"${lengths[@]}"} \
        --trials "$TRIALS" --depths "$DEPTHS" --output "$RESULTS"
done
"$PYTHON" -m ropescale report "$RESULTS" --output "$OUT"
echo "report: $OUT/report.md"
