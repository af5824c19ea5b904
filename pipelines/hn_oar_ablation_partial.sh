#!/usr/bin/env bash
# SRM ablation on the larger (partially contoured) training set, docs/ablation.md (issue 19).
#
#   bash pipelines/hn_oar_ablation_partial.sh [ARM ...]   # default: unet_srm unet fcn_srm fcn
#
# Trains each arm (`medseg train pipelines/train_hn_oar_partial_<arm>.yaml`, 1,600 steps; the
# SRM arms first train runs/ablation_partial/srm.pt on the 20 complete training patients and
# share it), skipping arms that already have a last.pt at the full budget, then scores every
# finished arm on the 10 validation patients through the shipped Predictor path and writes the
# tables (runs/ablation_partial/eval.json, docs/models/*). ~15-30 min per arm on one CPU core;
# pin with e.g. `taskset -c 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
arms=("$@")
[ ${#arms[@]} -eq 0 ] && arms=(unet_srm unet fcn_srm fcn)
runs=()
for arm in "${arms[@]}"; do
  out=runs/ablation_partial/$arm
  if [ ! -f "$out/done" ]; then
    resume=()
    [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
    "$PY" -m medseg.cli train "pipelines/train_hn_oar_partial_${arm}.yaml" "${resume[@]}" --no-progress
    touch "$out/done"
  fi
  runs+=("$out")
done
"$PY" pipelines/evaluate_hn_oar.py runs/ablation_partial/eval.json "${runs[@]}" --checkpoint last.pt
