#!/usr/bin/env bash
# GPU check of the trainer (issue 26, section 4): one script for a lent GPU machine (one H100,
# 16 cores, no network) that runs in at most 8 minutes and writes ONE JSON file.
#
# Usage:
#   scripts/gpu_check.sh [JSON_PATH]
#
# JSON_PATH (or GPU_CHECK_JSON): default $OUT/gpu_check.json when $OUT is set, else
# ./gpu_check.json. Stages, in order (each with its own timeout, all capped by one overall
# budget; a failed stage is recorded and the next one runs):
#
#   env        torch / CUDA / cuDNN versions, GPUs (torch and `nvidia-smi -L`), bfloat16 support
#   install    `pip install -e .` only when `import fitface` fails: offline first, then the index,
#              then --no-deps (torch is never installed: the machine's build stays)
#   data       `fitface data ict SRC -o DATA --workers W` when DATA is not a loadable dataset
#   train      `fitface train DATA -c RECIPE -o RUN --device DEV --max-steps N --no-amp`
#   train_amp  the same with --amp (bfloat16 autocast; the log says whether it was refused)
#   ddp        `torchrun --standalone --nproc_per_node 2 -m fitface train ...` when >= 2 CUDA
#              GPUs are visible, else skipped with the reason
#   paper      `-c paper` for PAPER_STEPS steps on DATA: it/s (the step count is cut, and said
#              so, when train's s/step predicts it would not fit the time left)
#   proxy      fitface.evaluation.proxy.ProxyEvaluator on the paper run's model.safetensors
#              (train's when the paper run wrote none), with the ICT source for Table 2
#
# Exit status: 0 when every required stage passed (skipped-by-design stages do not count),
# 1 when one failed, 2 on bad usage. The JSON is written in every case.
#
# Environment (defaults in brackets; paths given here are relative to the caller's folder):
#   GPU_CHECK_DEVICE       device of the train stages [cuda]; "cpu" runs them on the CPU (tests)
#   GPU_CHECK_JSON         output JSON path (the first argument wins)
#   GPU_CHECK_PYTHON       python interpreter [.venv/bin/python if it imports torch, else python3]
#   GPU_CHECK_DATA         dataset folder [data/ict in the repository]
#   GPU_CHECK_ICT_SOURCE   ICT source for the dataset build and the proxy [the first that exists of
#                          ../shared/data/, shared/data/, data/ (ict_face_light.npz)]
#   GPU_CHECK_ICT_IDENTITIES, GPU_CHECK_ICT_SAMPLES  size of a built dataset [the CLI's: 300, 30000]
#   GPU_CHECK_WORKERS      `fitface data ict --workers` [8]
#   GPU_CHECK_RECIPE       recipe of train / train_amp / ddp [paper]
#   GPU_CHECK_STEPS        steps of train and train_amp [60]
#   GPU_CHECK_DDP_STEPS    steps of the DDP run [40]
#   GPU_CHECK_DDP          auto (run when >= 2 CUDA GPUs) | off | force (run anyway: with
#                          GPU_CHECK_DEVICE=cpu, two gloo processes; tests) [auto]
#   GPU_CHECK_PAPER_STEPS  steps of the paper run [2000]
#   GPU_CHECK_PAPER_ADAPT  1: cut PAPER_STEPS to what train's s/step says fits [1]
#   GPU_CHECK_PAPER_AMP    1: the paper run with --amp [0: the recipe as it is, float32]
#   GPU_CHECK_TRAIN_SET    extra `--set FIELD=VALUE` for every train run, space separated [none]
#   GPU_CHECK_PROXY_CONFIG ProxyConfig fields as a JSON object, e.g. '{"captures": 3}' [defaults]
#   GPU_CHECK_STAGES       comma-separated stages to run [all]; the others are "not selected"
#   GPU_CHECK_BUDGET_S     the whole script's wall-clock budget [465 = 7 min 45 s]
#   GPU_CHECK_TIMEOUT_{ENV,INSTALL,DATA,TRAIN,DDP,PAPER,PROXY}  per-stage limits
#                          [60, 150, 180, 150, 150, 300, 180] (each also capped by the budget left)
#   GPU_CHECK_PROXY_RESERVE_S  seconds kept for the proxy when the paper run is sized [100]
#   GPU_CHECK_WORK         scratch folder for the runs [a new mktemp -d, removed at the end]
#   GPU_CHECK_KEEP_WORK    1: keep the scratch folder [0]
#   GPU_CHECK_WHEELS       a folder of wheels for the install (pip --find-links) [none]
#   GPU_CHECK_MEDIAPIPE    auto | off: off (or no importable mediapipe) trains through a wrapper that
#                          leaves the final model's mediapipe landmark set out [auto]

set -u -o pipefail

SCRIPT_START=$(date +%s)
CALLER_PWD=$PWD
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
# a path given by the caller is relative to the caller's folder; the defaults to the repository
abspath() { case "$1" in /*|'') printf '%s' "$1" ;; *) printf '%s' "$CALLER_PWD/$1" ;; esac; }

if [ "$#" -gt 1 ]; then
    echo "usage: $0 [JSON_PATH]" >&2
    exit 2
fi
if [ "$#" -eq 1 ]; then
    JSON_PATH=$1
elif [ -n "${GPU_CHECK_JSON:-}" ]; then
    JSON_PATH=$GPU_CHECK_JSON
elif [ -n "${OUT:-}" ]; then
    JSON_PATH=$OUT/gpu_check.json
else
    JSON_PATH=gpu_check.json
fi
JSON_PATH=$(abspath "$JSON_PATH")

DEVICE=${GPU_CHECK_DEVICE:-cuda}
DATA=$(abspath "${GPU_CHECK_DATA:-}")
DATA=${DATA:-$REPO/data/ict}
ICT_SOURCE=$(abspath "${GPU_CHECK_ICT_SOURCE:-}")
if [ -z "$ICT_SOURCE" ]; then
    # ../shared beside the checkout does not travel to a lent machine: there the file is carried
    # into the repository (data/ict_face_light.npz is git-ignored; a shared/ folder travels)
    for cand in "$REPO/../shared/data/ict_face_light.npz" "$REPO/shared/data/ict_face_light.npz" \
                "$REPO/data/ict_face_light.npz"; do
        if [ -f "$cand" ]; then ICT_SOURCE=$cand; break; fi
    done
    ICT_SOURCE=${ICT_SOURCE:-$REPO/../shared/data/ict_face_light.npz}
fi
ICT_IDENTITIES=${GPU_CHECK_ICT_IDENTITIES:-}
ICT_SAMPLES=${GPU_CHECK_ICT_SAMPLES:-}
WORKERS=${GPU_CHECK_WORKERS:-8}
RECIPE=${GPU_CHECK_RECIPE:-paper}
STEPS=${GPU_CHECK_STEPS:-60}
DDP_STEPS=${GPU_CHECK_DDP_STEPS:-40}
DDP_MODE=${GPU_CHECK_DDP:-auto}
PAPER_STEPS=${GPU_CHECK_PAPER_STEPS:-2000}
PAPER_ADAPT=${GPU_CHECK_PAPER_ADAPT:-1}
PAPER_AMP=${GPU_CHECK_PAPER_AMP:-0}
TRAIN_SET=${GPU_CHECK_TRAIN_SET:-}
PROXY_CONFIG=${GPU_CHECK_PROXY_CONFIG:-}
STAGES=${GPU_CHECK_STAGES:-all}
BUDGET=${GPU_CHECK_BUDGET_S:-465}
T_ENV=${GPU_CHECK_TIMEOUT_ENV:-60}
T_INSTALL=${GPU_CHECK_TIMEOUT_INSTALL:-150}
T_DATA=${GPU_CHECK_TIMEOUT_DATA:-180}
T_TRAIN=${GPU_CHECK_TIMEOUT_TRAIN:-150}
T_DDP=${GPU_CHECK_TIMEOUT_DDP:-150}
T_PAPER=${GPU_CHECK_TIMEOUT_PAPER:-300}
T_PROXY=${GPU_CHECK_TIMEOUT_PROXY:-180}
PROXY_RESERVE=${GPU_CHECK_PROXY_RESERVE_S:-100}
WHEELS=$(abspath "${GPU_CHECK_WHEELS:-}")
MEDIAPIPE=${GPU_CHECK_MEDIAPIPE:-auto}
#: seconds `timeout` waits after SIGTERM before SIGKILL, and the margin kept for writing the JSON
KILL_AFTER=10
MARGIN=5

case "$MEDIAPIPE" in auto|off) ;; *) echo "gpu_check: GPU_CHECK_MEDIAPIPE must be auto or off" >&2; exit 2 ;; esac
case "$DDP_MODE" in auto|off|force) ;; *) echo "gpu_check: GPU_CHECK_DDP must be auto, off or force" >&2; exit 2 ;; esac
for pair in STEPS:STEPS DDP_STEPS:DDP_STEPS PAPER_STEPS:PAPER_STEPS BUDGET:BUDGET_S T_ENV:TIMEOUT_ENV \
            T_INSTALL:TIMEOUT_INSTALL T_DATA:TIMEOUT_DATA T_TRAIN:TIMEOUT_TRAIN T_DDP:TIMEOUT_DDP \
            T_PAPER:TIMEOUT_PAPER T_PROXY:TIMEOUT_PROXY PROXY_RESERVE:PROXY_RESERVE_S WORKERS:WORKERS; do
    v=${pair%%:*}
    case "${!v}" in
        ''|*[!0-9]*) echo "gpu_check: GPU_CHECK_${pair#*:} must be a non-negative integer, got '${!v}'" >&2; exit 2 ;;
    esac
done

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    PY=$REPO/.venv/bin/python
elif command -v python3 >/dev/null 2>&1; then
    PY=python3
else
    PY=python
fi

if [ -n "${GPU_CHECK_WORK:-}" ]; then
    WORK=$(abspath "$GPU_CHECK_WORK")
    mkdir -p "$WORK" || exit 2
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
fi
cleanup() {
    if [ -z "${GPU_CHECK_WORK:-}" ] && [ "${GPU_CHECK_KEEP_WORK:-0}" != 1 ]; then
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT
# a reused GPU_CHECK_WORK keeps its runs (GPU_CHECK_STAGES=proxy evaluates the last paper model),
# not the records of the last invocation
rm -rf -- "$WORK/stages" "$WORK/logs" "$WORK/proxy_result.json"
mkdir -p "$WORK/stages" "$WORK/logs" "$WORK/runs"
HELPER=$WORK/gpu_check_helper.py
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# ----------------------------------------------------------------------------- python helper
# stdlib only: it records stages even where numpy / torch / fitface are missing.
cat > "$HELPER" <<'PYEOF'
"""Helper of scripts/gpu_check.sh: stage records, the env probe, the proxy run, the final JSON."""
import csv
import json
import math
import os
import statistics
import sys
import time


def clean(x):
    """JSON-safe: non-finite floats become null, tuples lists, unknown objects strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if x is None or isinstance(x, (bool, int, str)):
        return x
    try:
        return clean(float(x))
    except (TypeError, ValueError):
        return str(x)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(clean(obj), fh, indent=1, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def tail(path, n=40, width=400):
    try:
        with open(path, errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    return [ln[-width:] for ln in lines[-n:]]


def num(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def run_summary(run_dir, log):
    """What a training run folder holds: steps, speed, losses, model file, config."""
    out = {"run_dir": run_dir}
    model = os.path.join(run_dir, "model.safetensors")
    out["model_written"] = os.path.isfile(model)
    out["model_bytes"] = os.path.getsize(model) if out["model_written"] else None
    cfg = read_json(os.path.join(run_dir, "config.json")) or {}
    out["config"] = {k: cfg.get(k) for k in ("recipe", "device", "amp", "batch_size", "critic_steps", "max_steps",
                                             "num_threads", "log_every", "channels_last") if k in cfg}
    rows = []
    path = os.path.join(run_dir, "losses.csv")
    if os.path.isfile(path):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    out["losses_rows"] = len(rows)
    if rows:
        last = rows[-1]
        steps_done = int(last["step"]) + 1
        rates = [num(r.get("it_per_s")) for r in rows]
        rates = [r for r in rates if r and r > 0]
        steady = rates[1:] if len(rates) > 1 else rates  # the first window holds the warm-up
        elapsed = num(last.get("elapsed_s"))
        out["steps_done"] = steps_done
        out["elapsed_train_s"] = elapsed
        out["it_per_s_median"] = statistics.median(steady) if steady else None
        out["s_per_step"] = 1.0 / out["it_per_s_median"] if steady else None
        out["it_per_s_overall"] = steps_done / elapsed if elapsed else None
        out["s_per_step_overall"] = elapsed / steps_done if elapsed else None
        out["it_per_s_first_window"] = rates[0] if rates else None
        sps = [num(r.get("samples_per_s")) for r in rows[1:] or rows]
        sps = [s for s in sps if s]
        out["samples_per_s_median"] = statistics.median(sps) if sps else None
        out["last_losses"] = {k: num(last.get(k)) for k in ("d_loss", "d_gp", "g_loss", "g_reg")}
        out["losses_finite"] = all(num(last.get(k)) is not None for k in ("d_loss", "g_loss") if last.get(k))
        keep = rows if len(rows) <= 400 else rows[:: math.ceil(len(rows) / 400)]
        out["series"] = {"columns": ["step", "it_per_s", "d_loss", "g_loss"],
                         "rows": [[int(r["step"]), num(r.get("it_per_s")), num(r.get("d_loss")),
                                   num(r.get("g_loss"))] for r in keep]}
    mpath = os.path.join(run_dir, "metrics.csv")
    if os.path.isfile(mpath):
        with open(mpath, newline="") as fh:
            mrows = list(csv.DictReader(fh))
        if mrows:
            out["last_metrics"] = {k: (int(v) if k == "step" else num(v)) for k, v in mrows[-1].items() if v != ""}
    lines = tail(log, 100000, 2000)
    refused = [ln for ln in lines if "--amp:" in ln]
    out["amp_refused"] = refused[-1].strip() if refused else None
    if cfg.get("amp"):
        out["precision"] = "float32 (bfloat16 refused)" if refused else "bfloat16 autocast"
    else:
        out["precision"] = "float32"
    ddp = [ln for ln in lines if ln.startswith("data parallel:")]
    if ddp:
        out["data_parallel"] = ddp[-1].strip()
    return out


def parse_value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def cmd_record(args):
    """record STAGES_DIR NAME key=value ...: one stage's JSON. Special keys: run_dir (adds the
    run's summary), log (adds the log's tail), merge (adds a JSON file's object)."""
    stages, name = args[0], args[1]
    rec = {"name": name}
    path = os.path.join(stages, name + ".json")
    old = read_json(path)
    if old:
        rec.update(old)
    for kv in args[2:]:
        k, _, v = kv.partition("=")
        if k == "run_dir":
            rec.update(run_summary(v, rec.get("log_file", "")))
        elif k == "log":
            rec["log_file"] = v
            rec["log_tail"] = tail(v)
        elif k == "merge":
            extra = read_json(v)
            if isinstance(extra, dict):
                rec.update(extra)
        elif k in ("command", "reason", "status", "device", "note", "missing_dependencies", "attempts", "mode"):
            rec[k] = v
        else:
            rec[k] = parse_value(v)
    write_json(path, rec)


def cmd_plan_paper(args):
    """plan-paper STAGES_DIR SOURCE_STAGE REQUESTED AVAILABLE_S ADAPT: the paper run's step count."""
    stages, src, requested, avail, adapt = args[0], args[1], int(args[2]), float(args[3]), args[4] == "1"
    rec = read_json(os.path.join(stages, src + ".json")) or {}
    s_step, wall, steps = rec.get("s_per_step"), rec.get("seconds"), rec.get("steps_done")
    plan = {"steps_requested": requested, "plan_available_s": avail, "plan_from_stage": src}
    steps_out = requested
    if adapt and s_step and wall and steps and rec.get("rc") == 0:
        overhead = max(float(wall) - float(steps) * float(s_step), 0.0)  # start-up and finish of a run
        periodic = 4.0 * (requested // 500)  # metrics, grids and checkpoints every 500 steps (a guess)
        fits = int((0.8 * avail - overhead - periodic) / float(s_step))
        plan.update(plan_s_per_step=s_step, plan_overhead_s=round(overhead, 1),
                    plan_predicted_s=round(overhead + periodic + requested * float(s_step), 1))
        if fits < requested:
            steps_out = max(fits, min(requested, 50))
            plan["steps_reduced"] = (f"cut from {requested} to {steps_out}: at {float(s_step):.4g} s/step "
                                     f"({src}) and {overhead:.0f} s of start-up/finish, {requested} steps "
                                     f"would not fit the {avail:.0f} s left for this stage")
    elif adapt:
        plan["plan_note"] = f"no s/step from stage {src!r}: steps not adapted"
    plan["steps_planned"] = steps_out
    write_json(os.path.join(stages, "paper.json"), {**(read_json(os.path.join(stages, "paper.json")) or {}),
                                                    "name": "paper", **plan})
    print(steps_out)


def cmd_env(args):
    """env OUT_JSON DEVICE NVIDIA_SMI_TXT: versions and devices (what it cannot get is said)."""
    out = {"python": sys.version.split()[0], "executable": sys.executable, "cpu_count": os.cpu_count()}
    try:
        with open(args[2], errors="replace") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
    except (IndexError, OSError):
        lines = []
    out["nvidia_smi"] = lines
    out["nvidia_smi_gpus"] = sum(1 for ln in lines if ln.startswith("GPU "))
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda_version"] = torch.version.cuda
        out["cudnn_version"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cuda_available"] = torch.cuda.is_available()
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        out["cuda_device_count"] = n
        gpus = []
        for i in range(n):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(p.total_memory / 2**30, 2)})
        out["gpus"] = gpus
        out["bf16_supported"] = bool(n and torch.cuda.is_bf16_supported())
        out["cpu_capability"] = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
        dev = args[1]
        if dev.startswith("cuda") and n:
            idx = torch.device(dev).index or 0
            out["device_name"] = torch.cuda.get_device_name(idx)
        else:
            import platform

            out["device_name"] = f"cpu ({platform.processor() or platform.machine()})"
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import fitface

        out["fitface"] = fitface.__version__
        out["fitface_path"] = os.path.dirname(fitface.__file__)
        from fitface.train.precision import native_bfloat16

        out["amp_native_bfloat16"] = native_bfloat16(args[1])  # what decides whether --amp autocasts
    except Exception as exc:  # noqa: BLE001
        out["fitface_error"] = f"{type(exc).__name__}: {exc}"
    out["missing_dependencies"] = missing_deps()
    write_json(args[0], out)


def missing_deps():
    """The project's runtime dependencies (pyproject.toml) that do not import."""
    import importlib

    mods = ["torch", "numpy", "scipy", "trimesh", "click", "safetensors", "tqdm", "threadpoolctl", "tensorboard",
            "mediapipe", "cv2", "fast_simplification"]
    bad = []
    for m in mods:
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001
            bad.append(m)
    return bad


def cmd_missing_deps(args):
    """missing-deps: the missing dependencies, space separated."""
    print(" ".join(missing_deps()))


def cmd_proxy(args):
    """proxy OUT_JSON DATA MODEL ICT_SOURCE CONFIG_JSON: ProxyEvaluator on a model file."""
    out_path, data, model_path, ict, cfg_json = args
    from dataclasses import asdict

    import torch

    from fitface import load_model
    from fitface.evaluation.proxy import ProxyConfig, ProxyEvaluator

    t0 = time.perf_counter()
    cfg = ProxyConfig()
    if cfg_json:
        fields = json.loads(cfg_json)
        for k in ("lambdas", "parts"):
            if k in fields:
                fields[k] = tuple(fields[k])
        cfg = ProxyConfig(**fields)
    model = load_model(model_path)
    ev = ProxyEvaluator(data, ict if ict and os.path.isfile(ict) else None, config=cfg, log=print)
    t1 = time.perf_counter()
    res = ev(model)
    row = res.as_row()
    meta = getattr(model, "metadata", {}) or {}
    out = {"model": model_path, "model_trained_steps": meta.get("trained_steps"), "dataset": data,
           "ict_source": ict if ict and os.path.isfile(ict) else None, "proxy_config": asdict(cfg),
           "row": row, "finite_values": sum(1 for v in row.values() if math.isfinite(v)),
           "skipped": {**ev.skipped, **res.skipped}, "setup_seconds": ev.setup_seconds,
           "call_seconds": res.seconds, "details": res.details, "load_and_setup_s": t1 - t0,
           "torch_threads": torch.get_num_threads()}
    write_json(out_path, out)
    print("proxy row:", json.dumps(clean(row)))


def cmd_assemble(args):
    """assemble STAGES_DIR OUT_JSON CONFIG_JSON ENV_JSON START_EPOCH ORDER...: the one JSON; exit 1
    when a required stage failed."""
    stages, out_path, config, env_path, start = args[0], args[1], json.loads(args[2]), args[3], float(args[4])
    order = args[5:]
    recs = {}
    failed = []
    for name in order:
        rec = read_json(os.path.join(stages, name + ".json")) or {"name": name, "status": "failed",
                                                                   "reason": "no record (the stage died?)"}
        rec.pop("name", None)
        recs[name] = rec
        if rec.get("required") and rec.get("status") != "ok":
            failed.append(name)
    env = read_json(env_path) or {}
    doc = {"schema": "fitface-gpu-check/1", "ok": not failed, "failed_required": failed,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "total_seconds": round(time.time() - start, 1),
           "device": config.get("device"), "device_name": env.get("device_name"), "torch": env.get("torch"),
           "cuda_version": env.get("cuda_version"), "config": config, "environment": env, "stages": recs}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_json(out_path, doc)
    w = max(len(n) for n in order)
    for name in order:
        r = recs[name]
        extra = ""
        if r.get("s_per_step"):
            extra = f"  {r['s_per_step']:.4g} s/step ({r.get('it_per_s_median', 0):.3g} it/s)"
        if r.get("reason") and r.get("status") != "ok":
            extra += f"  ({r['reason']})"
        print(f"gpu_check: {name:<{w}}  {r.get('status', '?'):<8} rc={r.get('rc')}  {r.get('seconds')} s{extra}")
    print(f"gpu_check: {'ok' if not failed else 'FAILED: ' + ', '.join(failed)}; wrote {out_path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    {"record": cmd_record, "plan-paper": cmd_plan_paper, "env": cmd_env,
     "missing-deps": cmd_missing_deps, "proxy": cmd_proxy, "assemble": cmd_assemble}[sys.argv[1]](sys.argv[2:])
PYEOF

# ----------------------------------------------------------------------------- helpers (bash)
ORDER=(env install data train train_amp ddp paper proxy)
STAGES_DIR=$WORK/stages

# the system python runs the helper when $PY cannot start at all
HPY=$PY
if ! "$PY" -c "import sys" >/dev/null 2>&1; then
    HPY=python3
fi

record() { "$HPY" "$HELPER" record "$STAGES_DIR" "$@"; }

remaining() { echo $(( BUDGET - ($(date +%s) - SCRIPT_START) )); }

selected() {
    [ "$STAGES" = all ] && return 0
    case ",$STAGES," in *",$1,"*) return 0 ;; esac
    return 1
}

# stage_limit NAME LIMIT [RESERVE]: the stage's timeout (its own limit capped by the budget left
# minus RESERVE and the kill/JSON margins); prints 0 when nothing is left.
stage_limit() {
    local left=$(( $(remaining) - ${3:-0} - KILL_AFTER - MARGIN ))
    if [ "$left" -lt "$2" ]; then echo $(( left > 0 ? left : 0 )); else echo "$2"; fi
}

# run_stage NAME LIMIT CMD...: run CMD under `timeout`, its output in logs/NAME.log; sets RC and
# SECS and records rc, seconds, timeout_s, command, log and status (ok / failed / timeout).
run_stage() {
    local name=$1 limit=$2 t0 status
    shift 2
    local log=$WORK/logs/$name.log
    if [ "$limit" -lt 5 ]; then
        RC=124
        SECS=0
        record "$name" status=failed rc=124 seconds=0 timeout_s="$limit" "command=$*" \
            "reason=budget exhausted (GPU_CHECK_BUDGET_S=$BUDGET) before the stage could start"
        return
    fi
    echo "gpu_check: [$name] (timeout ${limit} s) $*" >&2
    t0=$(date +%s.%N)
    timeout -k "$KILL_AFTER" "$limit" "$@" >"$log" 2>&1
    RC=$?
    SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$RC" -eq 0 ]; then
        status=ok
    elif [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        status=timeout
    else
        status=failed
    fi
    echo "gpu_check: [$name] rc=$RC in ${SECS} s" >&2
    record "$name" status="$status" rc="$RC" seconds="$SECS" timeout_s="$limit" "command=$*" log="$log"
}

not_selected() { record "$1" status=skipped required=false reason="not selected (GPU_CHECK_STAGES=$STAGES)"; }

# the train command line, in the array TRAIN_CMD: train_cmd RUN_DIR STEPS AMP_FLAG [RECIPE]
train_cmd() {
    TRAIN_CMD=("$PY" "${TRAIN_ENTRY[@]}" train "$DATA" -c "${4:-$RECIPE}" -o "$1" --device "$DEVICE" --max-steps "$2"
               "$3" --no-progress)
    local kv sets=()
    read -r -a sets <<<"$TRAIN_SET"  # split on blanks, no globbing ('betas_g=[0.5,0.9]')
    for kv in ${sets[@]+"${sets[@]}"}; do
        TRAIN_CMD+=(--set "$kv")
    done
}

CONFIG_JSON=$("$HPY" -c 'import json, sys; a = sys.argv[1:]; print(json.dumps(dict(zip(a[::2], a[1::2]))))' \
    device "$DEVICE" data "$DATA" ict_source "$ICT_SOURCE" recipe "$RECIPE" steps "$STEPS" ddp_steps "$DDP_STEPS" \
    ddp "$DDP_MODE" paper_steps "$PAPER_STEPS" paper_adapt "$PAPER_ADAPT" paper_amp "$PAPER_AMP" \
    train_set "$TRAIN_SET" proxy_config "$PROXY_CONFIG" stages "$STAGES" budget_s "$BUDGET" python "$PY" \
    work "$WORK" repo "$REPO" git_commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    hostname "$(hostname 2>/dev/null || echo unknown)")

# ----------------------------------------------------------------------------- env
ENV_JSON=$WORK/env.json
SMI=$WORK/logs/nvidia_smi.txt
if command -v nvidia-smi >/dev/null 2>&1; then
    { timeout 30 nvidia-smi -L; timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader; } >"$SMI" 2>&1 || true
else
    echo "nvidia-smi: not found" >"$SMI"
fi
run_stage env "$(stage_limit env "$T_ENV")" "$PY" "$HELPER" env "$ENV_JSON" "$DEVICE" "$SMI"
record env required=true

# ----------------------------------------------------------------------------- install
# Attempts, each only when the one before failed (torch is never installed: the machine's own
# CUDA build satisfies torch>=2.2): (1) offline with the dependencies already on the machine,
# (2) from the package index (a machine with network; pip gives up at once without one),
# (3) offline without dependencies (the missing ones are recorded).
fitface_imports() { "$PY" -c "import fitface.cli, fitface.train.trainer" >/dev/null 2>&1; }
if selected install; then
    if fitface_imports; then
        record install status=skipped required=false rc=0 seconds=0 reason="fitface already imports"
    else
        export PIP_BREAK_SYSTEM_PACKAGES=1  # a system python on a lent machine (PEP 668)
        FIND=()
        [ -n "$WHEELS" ] && FIND=(--find-links "$WHEELS")
        TOTAL=0
        ATTEMPTS=""
        for attempt in offline index nodeps; do
            case $attempt in
                offline) PIP_ARGS=(install --no-index --no-build-isolation ${FIND[@]+"${FIND[@]}"} -e .) ;;
                index) PIP_ARGS=(install --retries 0 --timeout 10 ${FIND[@]+"${FIND[@]}"} -e .) ;;
                nodeps) PIP_ARGS=(install --no-index --no-build-isolation --no-deps ${FIND[@]+"${FIND[@]}"} -e .) ;;
            esac
            # the attempts share the stage's limit
            run_stage install "$(stage_limit install $(( T_INSTALL - ${TOTAL%.*} )))" "$PY" -m pip "${PIP_ARGS[@]}"
            TOTAL=$(awk -v a="$TOTAL" -v b="$SECS" 'BEGIN { printf "%.1f", a + b }')
            ATTEMPTS="$ATTEMPTS $attempt:rc=$RC:${SECS}s"
            if [ "$RC" -eq 0 ] && fitface_imports; then break; fi
        done
        record install required=true seconds="$TOTAL" "attempts=${ATTEMPTS# }" \
            "missing_dependencies=$("$PY" "$HELPER" missing-deps 2>/dev/null || true)"
        if fitface_imports; then
            record install status=ok
        else
            record install status=failed reason="fitface does not import after the install attempts"
        fi
        # the env record again, now with fitface's version and the dependencies
        "$PY" "$HELPER" env "$ENV_JSON" "$DEVICE" "$SMI" >/dev/null 2>&1 || true
    fi
else
    not_selected install
fi

# Without mediapipe, `fitface train` fails at its very end (it adds the template's mediapipe
# landmark set to the model). Where mediapipe does not import (or GPU_CHECK_MEDIAPIPE=off), the
# train stages run the same CLI through a wrapper that leaves that set out, and say so.
TRAIN_ENTRY=(-m fitface)
MEDIAPIPE_NOTE=""
if [ "$MEDIAPIPE" = off ] || ! "$PY" -c "import mediapipe" >/dev/null 2>&1; then
    WRAPPER=$WORK/fitface_without_mediapipe.py
    cat > "$WRAPPER" <<'PYEOF'
"""`fitface` with the final model's mediapipe landmark set left out (no mediapipe here)."""
import sys

import fitface.cli.train as cli_train

cli_train.add_mediapipe_set = lambda model: None
from fitface.cli import main  # noqa: E402

sys.argv[0] = "fitface"
main()
PYEOF
    TRAIN_ENTRY=("$WRAPPER")
    MEDIAPIPE_NOTE="mediapipe unavailable (GPU_CHECK_MEDIAPIPE=$MEDIAPIPE): trained through $WRAPPER, the model has no mediapipe landmark set"
fi

# ----------------------------------------------------------------------------- data
dataset_ok() {
    "$PY" -c "import sys; from fitface.data.format import load_dataset; \
ds = load_dataset(sys.argv[1], check_values=False); print(ds.vertices.shape[0], ds.num_vertices)" "$DATA" 2>/dev/null
}
if selected data; then
    if INFO=$(dataset_ok) && [ -n "$INFO" ]; then
        record data status=ok required=true rc=0 seconds=0 reason="present: $DATA" \
            num_samples="${INFO% *}" num_vertices="${INFO#* }"
    elif [ ! -f "$ICT_SOURCE" ]; then
        record data status=failed required=true rc=1 seconds=0 \
            reason="$DATA is not a loadable dataset and the ICT source $ICT_SOURCE is absent"
    else
        DATA_CMD=("$PY" -m fitface data ict "$ICT_SOURCE" -o "$DATA" --workers "$WORKERS" --quiet)
        [ -n "$ICT_IDENTITIES" ] && DATA_CMD+=(--identities "$ICT_IDENTITIES")
        [ -n "$ICT_SAMPLES" ] && DATA_CMD+=(--samples "$ICT_SAMPLES")
        # an incomplete folder (e.g. its .npy files were not copied) is rebuilt
        [ -e "$DATA" ] && DATA_CMD+=(--overwrite)
        run_stage data "$(stage_limit data "$T_DATA")" "${DATA_CMD[@]}"
        if INFO=$(dataset_ok) && [ -n "$INFO" ]; then
            record data required=true num_samples="${INFO% *}" num_vertices="${INFO#* }"
        else
            record data required=true status=failed reason="no loadable dataset at $DATA after the build"
        fi
    fi
else
    not_selected data
fi

# ----------------------------------------------------------------------------- train / train_amp
train_stage() {  # train_stage NAME AMP_FLAG
    local name=$1 run=$WORK/runs/$1
    if ! selected "$name"; then not_selected "$name"; return; fi
    rm -rf -- "$run"
    train_cmd "$run" "$STEPS" "$2"
    run_stage "$name" "$(stage_limit "$name" "$T_TRAIN")" "${TRAIN_CMD[@]}"
    record "$name" required=true device="$DEVICE" steps_requested="$STEPS" run_dir="$run" \
        ${MEDIAPIPE_NOTE:+"note=$MEDIAPIPE_NOTE"}
    if [ "$RC" -eq 0 ] && [ ! -f "$run/model.safetensors" ]; then
        record "$name" status=failed reason="exit 0 but no model.safetensors"
    fi
}
train_stage train --no-amp
train_stage train_amp --amp

# ----------------------------------------------------------------------------- ddp
if ! selected ddp; then
    not_selected ddp
else
    NGPU=$("$HPY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("cuda_device_count") or 0)' \
        "$ENV_JSON" 2>/dev/null || echo 0)
    case "$NGPU" in ''|*[!0-9]*) NGPU=0 ;; esac
    RUN_DDP=0
    if [ "$DDP_MODE" = off ]; then
        record ddp status=skipped required=false reason="GPU_CHECK_DDP=off"
    elif [ "$DDP_MODE" = force ]; then
        RUN_DDP=1  # on whatever device (a CPU: gloo)
    elif [ "${DEVICE%%:*}" != cuda ]; then
        record ddp status=skipped required=false gpus="$NGPU" \
            reason="GPU_CHECK_DEVICE=$DEVICE: the DDP check needs >= 2 CUDA GPUs"
    elif [ "$NGPU" -lt 2 ]; then
        record ddp status=skipped required=false gpus="$NGPU" \
            reason="$NGPU CUDA GPU(s) visible (torch.cuda.device_count()); the DDP check needs >= 2"
    else
        RUN_DDP=1
    fi
    if [ "$RUN_DDP" = 1 ]; then
        RUN=$WORK/runs/ddp
        rm -rf -- "$RUN"
        train_cmd "$RUN" "$DDP_STEPS" --no-amp
        # torchrun, as `python -m torch.distributed.run` (the same program; no PATH lookup)
        DDP_CMD=("$PY" -m torch.distributed.run --standalone --nproc_per_node 2 "${TRAIN_CMD[@]:1}")
        run_stage ddp "$(stage_limit ddp "$T_DDP")" "${DDP_CMD[@]}"
        record ddp required=true device="$DEVICE" gpus="$NGPU" world_size=2 steps_requested="$DDP_STEPS" mode="$DDP_MODE" \
            run_dir="$RUN" ${MEDIAPIPE_NOTE:+"note=$MEDIAPIPE_NOTE"}
        if [ "$RC" -eq 0 ] && [ ! -f "$RUN/model.safetensors" ]; then
            record ddp status=failed reason="exit 0 but no model.safetensors"
        fi
    fi
fi

# ----------------------------------------------------------------------------- paper
if selected paper; then
    RUN=$WORK/runs/paper
    rm -rf -- "$RUN"
    LIMIT=$(stage_limit paper "$T_PAPER" "$PROXY_RESERVE")
    SRC=train
    AMP_FLAG=--no-amp
    if [ "$PAPER_AMP" = 1 ]; then SRC=train_amp; AMP_FLAG=--amp; fi
    PSTEPS=$("$HPY" "$HELPER" plan-paper "$STAGES_DIR" "$SRC" "$PAPER_STEPS" "$LIMIT" "$PAPER_ADAPT")
    case "$PSTEPS" in ''|*[!0-9]*) PSTEPS=$PAPER_STEPS ;; esac
    train_cmd "$RUN" "$PSTEPS" "$AMP_FLAG" paper
    run_stage paper "$LIMIT" "${TRAIN_CMD[@]}"
    record paper required=true device="$DEVICE" run_dir="$RUN" ${MEDIAPIPE_NOTE:+"note=$MEDIAPIPE_NOTE"}
    if [ "$RC" -eq 0 ] && [ ! -f "$RUN/model.safetensors" ]; then
        record paper status=failed reason="exit 0 but no model.safetensors"
    elif [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        record paper reason="killed at its ${LIMIT} s limit; it/s is from the losses.csv rows written before"
    fi
else
    not_selected paper
fi

# ----------------------------------------------------------------------------- proxy
if selected proxy; then
    MODEL=""
    for cand in paper train train_amp; do
        if [ -f "$WORK/runs/$cand/model.safetensors" ]; then MODEL=$WORK/runs/$cand/model.safetensors; break; fi
    done
    if [ -z "$MODEL" ]; then
        record proxy status=failed required=true rc=1 seconds=0 reason="no trained model.safetensors to evaluate"
    else
        PROXY_JSON=$WORK/proxy_result.json
        run_stage proxy "$(stage_limit proxy "$T_PROXY")" \
            "$PY" "$HELPER" proxy "$PROXY_JSON" "$DATA" "$MODEL" "$ICT_SOURCE" "$PROXY_CONFIG"
        record proxy required=true merge="$PROXY_JSON"
    fi
else
    not_selected proxy
fi

# ----------------------------------------------------------------------------- the JSON
"$HPY" "$HELPER" assemble "$STAGES_DIR" "$JSON_PATH" "$CONFIG_JSON" "$ENV_JSON" "$SCRIPT_START" "${ORDER[@]}"
