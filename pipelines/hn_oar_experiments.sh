#!/usr/bin/env bash
# Reproduce the hn_oar cross-validation and ablation (docs/models/hn_oar.md, docs/ablation.md).
#
#   bash pipelines/hn_oar_experiments.sh [ARM ...]      # default: unet unet_srm fcn fcn_srm
#
# For each arm and each of the 3 folds: `medseg train pipelines/train_hn_oar_<arm>.yaml --fold N`
# (runs/hn_oar_<arm>_fold<N>/; the SRM arms train runs/srm_fold<N>/srm.pt first, on that fold's
# training cases only, and share it), then score every run on its held-out fold and print the
# per-arm and pooled cross-validated tables. Runs that already have a best.pt are skipped, so
# the script can be re-run after an interruption (resume a half-finished run by hand with
# `medseg train CONFIG --fold N --resume runs/.../last.pt`). CPU: ~13-20 min per run on one
# AVX512-BF16 core (see docs/models/hn_oar.md); pin with e.g. `taskset -c 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
arms=("$@")
[ ${#arms[@]} -eq 0 ] && arms=(unet unet_srm fcn fcn_srm)
runs=()
for fold in 0 1 2; do
  for arm in "${arms[@]}"; do
    out=runs/hn_oar_${arm}_fold${fold}
    runs+=("$out")
    [ -f "$out/best.pt" ] && [ -f "$out/last.pt" ] && continue
    "$PY" -m medseg.cli train "pipelines/train_hn_oar_${arm}.yaml" --fold "$fold" --no-progress
  done
done
"$PY" pipelines/evaluate_hn_oar.py runs/hn_oar_eval.json "${runs[@]}"
"$PY" pipelines/report_hn_oar.py runs/hn_oar_eval.json docs/models "${runs[@]}"
