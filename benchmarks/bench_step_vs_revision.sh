#!/usr/bin/env bash
# The training step of this checkout against an earlier revision's, on the same dataset, by
# alternating processes (old, new, old, new, ...) so that both see the same machine.
#
#   bash benchmarks/bench_step_vs_revision.sh REV DATA [ROUNDS] [THREADS]
#
# REV: a git revision, checked out in a worktree beside the repository (../step_rev_REV) with its
#      own .venv (`make install`, about a minute, once). Issue #12's "today" is 51f92e3^, the last
#      revision before bfloat16 on the CPU.
# DATA: a dataset folder both revisions read (e.g. the ICT builder's 20 identities x 600 faces:
#      `fitface data ict ../shared/data/ict_face_light.npz -o DATA --identities 20 --samples 600`).
# Each round runs REV's benchmarks/bench_train_step.py (its cpu recipe in float32, the only CPU
# path it had) and this checkout's `--compare fp32 bf16_cl`; the summary is the median over rounds
# of each one's median step, and the ratios to REV's. VARIANTS (environment, default "fp32 bf16_cl")
# names other --compare variants of this checkout, e.g. VARIANTS="fp32 fp32_gp4".
set -euo pipefail
REV=${1:?usage: bench_step_vs_revision.sh REV DATA [ROUNDS] [THREADS]}
DATA=${2:?usage: bench_step_vs_revision.sh REV DATA [ROUNDS] [THREADS]}
ROUNDS=${3:-2}
THREADS=${4:-2}
VARIANTS=${VARIANTS:-fp32 bf16_cl}
HERE="$(cd "$(dirname "$0")/.." && pwd)"
OLD="$HERE/../step_rev_$(git -C "$HERE" rev-parse --short "$REV")"
if [ ! -x "$OLD/.venv/bin/python" ]; then
  git -C "$HERE" worktree add -f "$OLD" "$REV" >/dev/null
  make -C "$OLD" install >/dev/null
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq "$ROUNDS"); do
  (cd "$OLD" && .venv/bin/python benchmarks/bench_train_step.py --data "$DATA" --steps 10 --threads "$THREADS") \
    2>/dev/null > "$OUT/old_$i.json"
  (cd "$HERE" && .venv/bin/python benchmarks/bench_train_step.py --data "$DATA" --steps 10 --threads "$THREADS" \
    --compare $VARIANTS) 2>/dev/null > "$OUT/new_$i.json"
done
"$HERE/.venv/bin/python" - "$OUT" "$ROUNDS" "$REV" "$THREADS" $VARIANTS <<'EOF'
import json, statistics, sys, time
out, rounds, rev, threads, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
old = [json.load(open(f"{out}/old_{i}.json"))["results"][0]["step_s_median"] for i in range(1, rounds + 1)]
new = [json.load(open(f"{out}/new_{i}.json"))["results"][0]["median_s"] for i in range(1, rounds + 1)]
base = statistics.median(old)
print(f"{time.strftime('%Y-%m-%d %H:%M')}, {threads} threads, {rounds} rounds (median of each run's median step)")
print(f"| variant | s/step | G steps/h | vs {rev} |\n|---|---:|---:|---:|")
print(f"| {rev} (float32) | {base:.3f} | {3600 / base:,.0f} | 1.00x |")
for name in names:
    s = statistics.median(r[name] for r in new)
    print(f"| this checkout, {name} | {s:.3f} | {3600 / s:,.0f} | {base / s:.2f}x |")
EOF
