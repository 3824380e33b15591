"""Benchmark one training step (G iteration with its critic steps) on CPU or GPU.

Measures, for each dataset: generator iterations per second, samples per second, the step's
time split between generator, mapping layer, regulariser and discriminator (the remainder:
D forward/backward, gradient penalty, optimisers), the step's FLOPs (counted with
``torch.utils.flop_counter``'s per-op FLOP formulas on a real step: matmuls and convolutions,
forward, backward and the penalty's double backward; the sparse mapping / Laplacian products,
which the counter would count as dense, are subtracted) and the floor those FLOPs imply at this
machine's measured float32 matmul rate.

Usage::

    .venv/bin/python benchmarks/bench_train_step.py                 # synthetic + ICT (if present)
    .venv/bin/python benchmarks/bench_train_step.py --data DIR ...  # any dataset folders
    .venv/bin/python benchmarks/bench_train_step.py --steps 20 --batch-size 64 --threads 2
    .venv/bin/python benchmarks/bench_train_step.py --compare fp32 bf16 ict --steps 20  # side by side

``--compare`` times named variants of the cpu recipe in one process, one step of each in
turn (so a busy machine slows all of them alike), and reports each median step and its
speed-up over the first variant: ``fp32`` (the cpu recipe as it was), ``bf16`` (bfloat16
autocast, ``amp = true``), ``bf16_cl`` (and the critic in channels_last), ``fp32_cl`` (channels_last in float32),
``fp32_gp4`` / ``bf16_cl_gp4`` (the lazy gradient penalty, on every 4th critic update), ``ict``
(train/recipes/ict.toml, with its interaction penalty and weight average), ``ict_x100`` (the
recipe of the shipped ICT model, train/recipes/ict_x100.toml) and ``ict_x100_gp4`` (it with the
lazy penalty), ``ict_fast`` (train/recipes/ict_fast.toml: it with bfloat16 and channels_last too); the ict variants run without their warm start, which costs nothing per step.

Datasets are built in a temporary folder when not given: the synthetic set (6,000 faces,
V = 4,285) and a small ICT set (``--ict-npz``, default ../shared/data/ict_face_light.npz;
600 faces on the full 9,409-vertex ICT face; only the template size matters for speed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul rate (GFLOP/s) of an n x n product on this machine/threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def _time(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def component_times(tr, repeats: int = 5) -> dict:
    """Seconds per step spent in the generator, the mapping layer and the regulariser, timed in
    isolation with the step's shapes and call counts."""
    cfg = tr.cfg
    b = cfg.batch_size
    z = torch.randn(b, tr.layout.dim)
    k = cfg.critic_steps

    def gen():
        disp = tr.G(z)  # G step: full forward + backward
        disp.backward(torch.ones_like(disp))
        tr.G.zero_grad(set_to_none=True)
        for _ in range(k):  # critic steps: folded fakes under no_grad
            tr._fake_images_nograd(z)
        if tr.folded is not None:
            tr.folded.refresh(tr.G)

    disp = tr.G(z).detach()

    def mapping():
        for _ in range(k):  # real images
            tr._images(disp)
        d = disp.clone().requires_grad_(True)  # G step: forward + backward
        img = tr._images(d)
        img.backward(torch.ones_like(img))
        if tr.folded is None:
            for _ in range(k):
                tr._images(disp)

    def reg():
        d = disp.clone().requires_grad_(True)
        tr.regularizer(d).mean().backward()

    return {"generator": _time(gen, repeats), "mapping": _time(mapping, repeats), "regularizer": _time(reg, repeats)}


class FlopCount:
    """Total FLOPs of the ops run inside ``with FlopCount() as fc:`` (``fc.total``), with
    torch's own per-op formulas (``torch.utils.flop_counter.flop_registry``).

    ``FlopCounterMode`` itself cannot be used: its per-module tracker raises on the gradient
    penalty's ``autograd.grad`` with respect to a leaf input of the critic (torch 2.13)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += formula(*args, **kwargs, out_val=out)
                return out

        self.total = 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def sparse_flops_as_counted(tr) -> float:
    """FLOPs that the counter attributes to the step's *sparse* products (mapping matrix,
    fold refresh, Laplacian), which it counts as if the sparse matrices were dense. They are
    subtracted from the step's count (their true cost, ~nnz x columns, is negligible)."""
    cfg, b = tr.cfg, tr.cfg.batch_size
    disp = torch.zeros(b, tr.data.dataset.num_vertices, 3)

    def pieces():
        for _ in range(cfg.critic_steps):
            tr._images(disp)
        d = disp.clone().requires_grad_(True)
        img = tr._images(d)
        img.backward(torch.ones_like(img))
        d2 = disp.clone().requires_grad_(True)
        tr.regularizer(d2).mean().backward()
        if tr.folded is not None:
            tr.folded.refresh(tr.G)

    with FlopCount() as fc:
        pieces()
    return float(fc.total)


def bench(data_dir: Path, steps: int, batch: int, threads: int, fold: bool) -> dict:
    from fitface.train.config import load_config
    from fitface.train.trainer import Trainer

    cfg = load_config("cpu", {"batch_size": batch, "num_threads": threads, "progress": False, "fold_mapping": fold,
                              "device": "cpu"})
    with tempfile.TemporaryDirectory() as run:
        tr = Trainer(data_dir, cfg, run)
        for s in range(2):  # warm-up
            tr.step(s)
        times = []
        for s in range(2, 2 + steps):
            t = time.perf_counter()
            tr.step(s)
            times.append(time.perf_counter() - t)
        with FlopCount() as fc:
            tr.step(2 + steps)
        counted = fc.total
        flops = counted - sparse_flops_as_counted(tr)
        comp = component_times(tr)
    step_s = statistics.median(times)
    comp["discriminator (remainder)"] = step_s - sum(comp.values())
    return {"dataset": str(data_dir), "vertices": tr.data.dataset.num_vertices, "batch": batch,
            "fold_mapping": fold, "step_s_median": step_s, "it_per_s": 1 / step_s,
            "samples_per_s": batch / step_s, "gflop_per_step": flops / 1e9,
            "split_s": comp, "split_share": {k: v / step_s for k, v in comp.items()}}


#: The ict recipes' warm start only sets G's first weights (and costs a 3DMM fit at set-up); the
#: step it times is the same, so the benchmark starts them from random weights with G moving at once.
_NO_WARM_START = {"init": "random", "fixed_codes_init": "random", "critic_warmup": 0}

#: ``--compare`` variants: overrides of the cpu recipe (or a recipe name).
VARIANTS = {"fp32": ("cpu", {}), "bf16": ("cpu", {"amp": True}),
            "bf16_cl": ("cpu", {"amp": True, "channels_last": True}),
            "fp32_cl": ("cpu", {"channels_last": True}), "fp32_gp4": ("cpu", {"gp_every": 4}),
            "bf16_cl_gp4": ("cpu", {"amp": True, "channels_last": True, "gp_every": 4}),
            "ict": ("ict", _NO_WARM_START),
            "ict_x100": ("ict_x100", _NO_WARM_START),
            "ict_x100_gp4": ("ict_x100", {**_NO_WARM_START, "gp_every": 4}),
            "ict_fast": ("ict_fast", _NO_WARM_START)}


def compare(data_dir: Path, names: list[str], steps: int, batch: int, threads: int) -> dict:
    """Median seconds per step of each variant, timed in turn within one process."""
    from fitface.train.config import load_config
    from fitface.train.trainer import Trainer

    tmp = tempfile.TemporaryDirectory()
    trainers = {}
    for n in names:
        recipe, over = VARIANTS[n]
        cfg = load_config(recipe, {**over, "batch_size": batch, "num_threads": threads, "progress": False,
                                   "device": "cpu", "proxy_every": 0, "metrics_every": 0, "tensorboard": False})
        trainers[n] = Trainer(data_dir, cfg, Path(tmp.name) / n)
    times = {n: [] for n in names}
    for s in range(3):  # warm-up (bfloat16 kernels are prepared on first use)
        for tr in trainers.values():
            tr.step(s)
    for s in range(3, 3 + steps):
        for n, tr in trainers.items():
            t = time.perf_counter()
            tr.step(s)
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    tmp.cleanup()
    return {"dataset": str(data_dir), "steps": steps, "median_s": med,
            "speedup_over_" + names[0]: {n: med[names[0]] / med[n] for n in names},
            "autocast": {n: tr.use_amp for n, tr in trainers.items()}}  # False: amp refused (no native bf16)


def machine_facts() -> dict:
    """The CPU facts a step time depends on (bfloat16 runs natively only with oneDNN's kernels)."""
    from fitface.train.precision import native_bfloat16

    return {"machine": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bfloat16": native_bfloat16(torch.device("cpu"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="*", type=Path, help="dataset folders (default: build synthetic + ICT)")
    ap.add_argument("--ict-npz", type=Path, default=REPO.parent / "shared" / "data" / "ict_face_light.npz")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-fold", action="store_true", help="also measure without the folded critic")
    ap.add_argument("--compare", nargs="+", choices=sorted(VARIANTS), help="time these variants side by side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rate = matmul_gflops()
    tmp = tempfile.TemporaryDirectory()
    datasets = list(args.data or [])
    if not datasets:
        from fitface.data.synthetic import build_synthetic

        datasets.append(build_synthetic(Path(tmp.name) / "synthetic", seed=0))
        if args.ict_npz.is_file():
            from fitface.data.ict import build_ict_dataset

            build_ict_dataset(args.ict_npz, Path(tmp.name) / "ict", identities=20, samples=600, seed=0)
            datasets.append(Path(tmp.name) / "ict")
    results = []
    if args.compare:
        for d in datasets:
            results.append(compare(Path(d), args.compare, args.steps, args.batch_size, args.threads))
        print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **machine_facts(), "torch": torch.__version__,
                          "threads": args.threads, "results": results}, indent=2))
        tmp.cleanup()
        return
    for d in datasets:
        for fold in ([True, False] if args.no_fold else [True]):
            r = bench(Path(d), args.steps, args.batch_size, args.threads, fold)
            r["floor_s"] = r["gflop_per_step"] / rate
            r["step_over_floor"] = r["step_s_median"] / r["floor_s"]
            results.append(r)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), **machine_facts(), "torch": torch.__version__,
              "threads": args.threads, "matmul_gflops": rate, "results": results}
    print(json.dumps(report, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
