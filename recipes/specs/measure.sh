#!/bin/bash
# bash recipes/specs/measure.sh [OUT]   (about 4 min on 2 cores)
# The shipped searched specs against yarn at the same factor, training-free on the embedded model: passkey past L0
# with two evaluation-only fillers (the Landmark sentence, the default; the bundled essays), 20 keys per length,
# and bits/byte on the held-out plays; then `ropescale report` writes the tables of OUT/report.md.
set -e
OUT=${1:-runs/specs-eval}
R=${ROPESCALE:-ropescale}
ESS=src/ropescale/assets/corpus/essays.txt
mkdir -p "$OUT"
PK="--depths 0,0.25,0.5,0.75,1 --trials 4 --output $OUT/results.jsonl"
for filler in landmark essays; do
  FL=""; [ "$filler" = essays ] && FL="--filler $ESS"
  $R eval passkey --spec recipes/specs/embedded-longrope-x16.json --label "searched-x16 $filler" --lengths 512,1024,2048,4096 $PK $FL
  $R eval passkey --method yarn --factor 16 --label "yarn-x16 $filler" --lengths 512,1024,2048,4096 $PK $FL
  $R eval passkey --spec recipes/specs/embedded-longrope-x8.json --label "searched-x8 $filler" --lengths 512,1024,2048 $PK $FL
  $R eval passkey --method yarn --factor 8 --label "yarn-x8 $filler" --lengths 512,1024,2048 $PK $FL
done
PPL="--max-tokens 16384 --output $OUT/results.jsonl"
$R eval perplexity --spec recipes/specs/embedded-longrope-x16.json --label searched-x16 --lengths 4096 $PPL
$R eval perplexity --method yarn --factor 16 --label yarn-x16 --lengths 4096 $PPL
$R eval perplexity --spec recipes/specs/embedded-longrope-x8.json --label searched-x8 --lengths 512,1024,2048 $PPL
$R eval perplexity --method yarn --factor 8 --label yarn-x8 --lengths 512,1024,2048 $PPL
$R report "$OUT/results.jsonl" --output "$OUT"
