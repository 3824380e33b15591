#!/usr/bin/env bash
# The paper's four-model comparison (Tables 1-2 and retargeting) on the ICT set (issue #13).
#
# Run from a folder that holds data/ict (`fitface data ict ...`, with its decoupling embedders),
# with fitface installed; ../shared/data/ict_face_light.npz regenerates the test captures.
# Each trained baseline gets at most 30 minutes of training (--max-minutes; set-up and the
# codes' Gaussian are not counted), one thread. Each model is evaluated in its own process (two at
# a time) and benchmarks/collect_reports.py merges the reports (same dataset, counts and seed).
#
#   bash benchmarks/baselines_ict.sh            # builds, then evaluates
#   SKIP_BUILD=1 bash benchmarks/baselines_ict.sh
set -euo pipefail
DATA=${DATA:-data/ict}
ICT=${ICT:-../shared/data/ict_face_light.npz}
RUNS=${RUNS:-runs}
REPORTS=${REPORTS:-reports}
GAN=${GAN:-ict}   # the shipped GAN of the real-face issue's chosen recipe

if [ -z "${SKIP_BUILD:-}" ]; then
  fitface baseline "$DATA" --kind linear --expression-dims 20 --noise-dims 0 -o "$RUNS/ict_linear_65_20" --threads 1
  fitface baseline "$DATA" --kind mae -o "$RUNS/ict_mae" --max-minutes 30 --threads 1
  fitface baseline "$DATA" --kind coma -o "$RUNS/ict_coma" --max-minutes 30 --threads 1
fi
common=(--data "$DATA" --ict-source "$ICT" --seed 0)
evaluate() {  # MODEL REPORT_NAME: one model per report, one thread each
  OMP_NUM_THREADS=1 fitface evaluate "$1" "${common[@]}" -o "$REPORTS/$2"
}
# two at a time on a 2-core machine
evaluate "$RUNS/ict_coma/model.safetensors" ict_coma & evaluate "$RUNS/ict_mae/model.safetensors" ict_mae; wait
evaluate "$RUNS/ict_linear_65_20/model.safetensors" ict_linear_65_20 & evaluate "$GAN" ict_gan; wait
python "$(dirname "$0")/collect_reports.py" "$REPORTS/ict_gan" "$REPORTS/ict_linear_65_20" "$REPORTS/ict_mae" \
    "$REPORTS/ict_coma" --labels "GAN (ict),3DMM,MAE,CoMA"
