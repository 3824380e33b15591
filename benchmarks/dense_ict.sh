#!/usr/bin/env bash
# Issue #26: the dense measures (dense retargeting / reconstruction on fresh ICT identities) and the
# noisy Table 2 (1.5 mm landmark noise, random rigid motion) for the 3DMMs, the shipped `ict`, MAE
# and CoMA, plus the identity-capacity lever (3DMMs with a 100-dimensional identity code, and the
# ict_id100 GAN run). Run from a folder that holds data/ict and the baselines of
# benchmarks/baselines_ict.sh (runs/ict_linear_65_20, runs/ict_mae, runs/ict_coma).
#
#   bash benchmarks/dense_ict.sh           # builds the 100-dim 3DMMs, then evaluates
set -euo pipefail
DATA=${DATA:-data/ict}
ICT=${ICT:-../shared/data/ict_face_light.npz}
RUNS=${RUNS:-runs}
REPORTS=${REPORTS:-reports}
common=(--data "$DATA" --ict-source "$ICT" --seed 0 --skip table1 --skip table2 --skip retarget)
for dims in "100 15 5" "100 20 0"; do
  set -- $dims
  [ -f "$RUNS/ict_linear_$1_$2/model.safetensors" ] || fitface baseline "$DATA" --kind linear --identity-dims "$1" \
      --expression-dims "$2" --noise-dims "$3" -o "$RUNS/ict_linear_$1_$2" --threads 1
done
M4=("$RUNS/ict_linear_65_20/model.safetensors" ict-linear ict "$RUNS/ict_mae/model.safetensors")
# one thread each, two at a time on a 2-core machine
OMP_NUM_THREADS=1 fitface evaluate "${M4[@]}" "${common[@]}" --skip dense -o "$REPORTS/noisy4" &
OMP_NUM_THREADS=1 fitface evaluate "${M4[@]}" "$RUNS/ict_coma/model.safetensors" "${common[@]}" --skip table2_noisy \
    -o "$REPORTS/dense5"
wait
OMP_NUM_THREADS=1 fitface evaluate "$RUNS/ict_coma/model.safetensors" "${common[@]}" --skip dense -o "$REPORTS/noisy_coma" &
OMP_NUM_THREADS=1 fitface evaluate "$RUNS/ict_linear_100_15/model.safetensors" "$RUNS/ict_linear_100_20/model.safetensors" \
    "${common[@]}" --skip table2_noisy -o "$REPORTS/dense_id100"
wait
# the GAN lever: fitface train "$DATA" -c ict_id100 -o "$RUNS/ict_id100" --set proxy_ict_source="$ICT"
# then: fitface evaluate "$RUNS/ict_id100/snapshots/model_NNNNNNN.safetensors" "${common[@]}" --skip table2_noisy -o ...
