"""Training configuration: one typed dataclass, named TOML recipes, overrides.

Every hyper-parameter of the trainer is a field of :class:`TrainConfig` (defaults = the
paper's §5.1 values). A recipe is a TOML file of field overrides (``train/recipes/*.toml``,
loaded with :mod:`tomllib`); the CLI maps its options onto fields and ``--set field=value``
sets any field. The *resolved* config (defaults + recipe + overrides) is saved with every
run (``RUN_DIR/config.json`` and ``RUN_DIR/config.toml``), inside every checkpoint and inside
the finished model file.

Convention: lengths are in the dataset's unit (mm for the builders of this project);
"step" always means one generator iteration (with its ``critic_steps`` critic updates).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fitface.errors import InputError

#: Folder of the named recipes shipped with the package.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class TrainConfig:
    """All trainer settings (paper §5.1 defaults). See docs/training.md."""

    # ---- run -------------------------------------------------------------------------
    #: Recipe name this config came from (informational).
    recipe: str = "default"
    #: Master seed: initial weights, fixed codes T and every per-step draw derive from it.
    seed: int = 0
    #: Training length in epochs; one epoch = ceil(len(train split) / batch_size) generator steps.
    epochs: float = 200.0
    #: If set, the number of generator steps (overrides ``epochs``).
    max_steps: int | None = None
    #: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: CPU threads for torch (``torch.set_num_threads``); 0 keeps torch's default.
    num_threads: int = 0
    #: Mixed precision (bfloat16 autocast) where the device computes bfloat16 natively: a CUDA
    #: GPU with bfloat16 or a CPU with oneDNN bfloat16 kernels (AVX-512 BF16, AMX); elsewhere
    #: the run trains in float32 with a warning (``train/precision.py``).
    amp: bool = False
    #: Force bfloat16 autocast on a CPU without native bfloat16 (same numbers, about 10x slower).
    amp_emulated: bool = False
    #: The critic's convolutions in channels_last memory format (NHWC; faster with bfloat16
    #: on CPUs with AVX512-BF16). Changes only the memory layout, not the maths.
    channels_last: bool = False
    #: Dataset split used for training.
    split: str = "train"

    # ---- model -----------------------------------------------------------------------
    #: Latent block sizes per factor, e.g. {"identity": 65, "expression": 15}; factors of the
    #: dataset not listed get ``default_factor_dim``. Order follows the dataset's factors.
    latent_dims: dict[str, int] = field(default_factory=lambda: {"identity": 65, "expression": 15})
    #: Latent size of a dataset factor missing from ``latent_dims`` (e.g. "viseme").
    default_factor_dim: int = 50
    #: Size of the noise block (§5.1: 5).
    noise_dim: int = 5
    #: Generator hidden width (§5.1: 512).
    hidden: int = 512
    #: LeakyReLU slope of G and D (supplement Fig. 12: 0.2).
    negative_slope: float = 0.2
    #: Geometry-image side for the discriminator (§5.1: 64).
    image_size: int = 64

    # ---- optimisation ----------------------------------------------------------------
    #: Global batch size (all processes together) (§5.1: 64).
    batch_size: int = 64
    #: Critic (discriminator) updates per generator update (§5.1: 3).
    critic_steps: int = 3
    #: Adam learning rate of G (§5.1: 2e-4).
    lr_g: float = 2e-4
    #: Adam learning rate of D (§5.1: 2e-4).
    lr_d: float = 2e-4
    #: Adam betas of G (§5.1: (0.9, 0.999)).
    betas_g: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: Adam betas of D (§5.1: (0.9, 0.999)).
    betas_d: list[float] = field(default_factory=lambda: [0.9, 0.999])

    # ---- losses ----------------------------------------------------------------------
    #: lambda_C: weight of D's classification losses on real labeled samples (eq. 6; 0.1).
    lambda_c: float = 0.1
    #: lambda_1: weight of G's adversarial loss (eq. 8; 1).
    lambda_gan: float = 1.0
    #: lambda_2: weight of G's classification loss on fixed codes T (eq. 8-9; 1).
    lambda_cls: float = 1.0
    #: lambda_3: weight of G's feature loss (eq. 10-11; 0.5). 0 = the "no feature loss" ablation.
    lambda_feat: float = 0.5
    #: lambda_4: weight of the Laplacian regulariser (eq. 12; 100). 0 = "no mesh regularisation".
    lambda_reg: float = 100.0
    #: Gradient-penalty weight of WGAN-GP ([20]: 10).
    gp_weight: float = 10.0
    #: Lazy penalty: the gradient penalty on every N-th critic update only, weighted by N so its
    #: average pull is unchanged (the lazy regularisation of StyleGAN2, Karras et al. 2020 §3.1).
    #: 1 = on every update (the paper's). Saves the interpolates' forward and double backward
    #: on the other updates.
    gp_every: int = 1
    #: Instance-noise std added to every D input, in units of the normalised geometry image
    #: (i.e. of the dataset's displacement std ``s``) (§5.1: 0.1).
    instance_noise: float = 0.1
    #: Regulariser reduction per sample: "mean" over vertices and coordinates, or "sum".
    reg_reduction: str = "mean"
    #: Row-normalised cotangent Laplacian D^-1 L (True) or the raw cotangent L (False).
    reg_normalized: bool = True
    #: Factors whose classifiers are trained (D on real labels, G on T codes); None = all.
    #: ["identity"] / ["expression"] are the single-classifier ablations of Table 1.
    classify: list[str] | None = None
    #: D's class weights: "inverse_frequency" (over labeled training samples, mean 1) or "none".
    class_weighting: str = "inverse_frequency"
    #: How labels for the fixed-code (T) phases are drawn: "uniform" over classes or
    #: "empirical" (the labeled class frequencies of the training set).
    label_sampling: str = "uniform"
    #: Codes of the fakes shown to D: "phase" (same construction as the G step: T codes of the
    #: step's labeled factor + random codes) or "random" (z ~ N(0, I)).
    critic_codes: str = "phase"
    #: Compute critic-step fakes through the folded matrix W' = M W2 (exact, faster on CPU).
    fold_mapping: bool = True

    # ---- levers beyond the paper (issue #12; each 0 / "random" = the paper's recipe) ----
    #: Initial generator: "random" (the paper) or "linear_3dmm": G starts as the exact additive
    #: linear 3DMM of the training split (:func:`fitface.train.warm_start.linear_warm_start`).
    init: str = "random"
    #: Fixed codes T: "random" (N(0, I), the paper) or "model": each class's mean code under
    #: the initial linear model (needs ``init = "linear_3dmm"``).
    fixed_codes_init: str = "random"
    #: Steps at the start of the run in which only the critic trains (G frozen).
    critic_warmup: int = 0
    #: Weight of the interaction penalty (:func:`fitface.train.losses.interaction_penalty`):
    #: what an expression code does to a face must not depend on the identity code.
    lambda_interaction: float = 0.0
    #: Weight of the cross-projection penalty (:func:`fitface.train.losses.cross_projection_penalty`):
    #: an identity change may not move a face along the linear 3DMM's expression modes, nor an
    #: expression change along its identity modes. Builds the 3DMM of the training split.
    lambda_projection: float = 0.0
    #: Weight of the identity-subspace penalty (:func:`fitface.train.losses.subspace_penalty`):
    #: an identity change stays in the linear 3DMM's identity subspace (full decodes of the
    #: first ``subspace_pairs`` quadruples).
    lambda_subspace: float = 0.0
    #: Weight of the identity-anchor penalty (:func:`fitface.train.losses.identity_anchor_penalty`):
    #: identity changes move the linear 3DMM's identity coefficients as the identity code moved.
    lambda_anchor: float = 0.0
    #: Quadruples (of the interaction batch) decoded in full for the subspace penalty.
    subspace_pairs: int = 8
    #: Code quadruples per generator step for the interaction penalty.
    interaction_pairs: int = 32
    #: Vertices (random, per step) on which the interaction penalty is evaluated (0 = all).
    interaction_vertices: int = 1024
    #: Exponential moving average of G's weights (decay per step; 0 = off). The average is
    #: what metrics, sample grids and the saved model use.
    ema_decay: float = 0.0
    #: Also keep a model file of G (the EMA when enabled) every N steps in RUN_DIR/snapshots/
    #: (0 = none): for evaluating a run's history afterwards.
    snapshot_every: int = 0
    #: Proxy evaluation (:mod:`fitface.evaluation.proxy`) every N steps (0 = off).
    proxy_every: int = 0
    #: The ICT source (ict_face_light.npz) for the proxy's ground-truth test captures ("" = none).
    proxy_ict_source: str = ""

    # ---- logging, checkpoints, metrics -----------------------------------------------
    #: Write a CSV / TensorBoard row every N steps.
    log_every: int = 10
    #: Save a Fig.-3-like PNG grid every N steps (0 = only at the end).
    sample_every: int = 500
    #: Columns of the PNG grid (samples per block).
    grid_columns: int = 6
    #: Pixel size of each rendered face in the grid.
    grid_cell: int = 128
    #: Atomic checkpoint every N steps (0 = only at the end).
    checkpoint_every: int = 500
    #: Diversity / near-training metrics every N steps (0 = only at the end).
    metrics_every: int = 500
    #: Generated samples used for the near-training share and specificity.
    metrics_samples: int = 100
    #: Pairs used for each diversity value.
    metrics_pairs: int = 200
    #: Training samples (evenly spaced, at most) searched for nearest neighbours (0 = all).
    metrics_max_train: int = 2000
    #: A generated face counts as "near the training set" when its mean vertex distance to its
    #: nearest training face is below ``near_ratio`` x its distance to the template (the mean
    #: face): it looks more like some real face than like the average one. An untrained or
    #: collapsed generator scores 0
    #: (``fitface.evaluation.diversity_specificity.near_training_share``).
    near_ratio: float = 1.0
    #: Held-out (val split) real faces, at most, whose near-training share is logged as the
    #: reference value (0 = none).
    metrics_heldout: int = 200
    #: TensorBoard event files in RUN_DIR/tensorboard.
    tensorboard: bool = True
    #: tqdm progress bar.
    progress: bool = True

    # -----------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Check value ranges; raise ``InputError`` naming the field."""
        def bad(name, why):
            raise InputError(f"config: {name} {why} (got {getattr(self, name)!r})")

        if self.batch_size < 2 or self.batch_size % 2:
            bad("batch_size", "must be an even number >= 2 (feature-loss pairs)")
        if self.critic_steps < 0:
            bad("critic_steps", "must be >= 0")
        if self.gp_every < 1:
            bad("gp_every", "must be >= 1")
        if self.max_steps is not None and self.max_steps < 0:
            bad("max_steps", "must be >= 0")
        if not (self.epochs >= 0 and math.isfinite(self.epochs)):
            bad("epochs", "must be a finite number >= 0")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("betas_g", "betas_d"):
            b = getattr(self, name)
            if len(b) != 2 or not all(0 <= x < 1 for x in b):
                bad(name, "must be two numbers in [0, 1)")
        for name in ("lambda_c", "lambda_gan", "lambda_cls", "lambda_feat", "lambda_reg", "gp_weight",
                     "instance_noise"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        if not self.near_ratio > 0:
            bad("near_ratio", "must be > 0")
        if self.metrics_heldout < 0:
            bad("metrics_heldout", "must be >= 0")
        if self.reg_reduction not in ("mean", "sum"):
            bad("reg_reduction", "must be 'mean' or 'sum'")
        if self.class_weighting not in ("inverse_frequency", "none"):
            bad("class_weighting", "must be 'inverse_frequency' or 'none'")
        if self.label_sampling not in ("uniform", "empirical"):
            bad("label_sampling", "must be 'uniform' or 'empirical'")
        if self.critic_codes not in ("phase", "random"):
            bad("critic_codes", "must be 'phase' or 'random'")
        if self.init not in ("random", "linear_3dmm"):
            bad("init", "must be 'random' or 'linear_3dmm'")
        if self.fixed_codes_init not in ("random", "model"):
            bad("fixed_codes_init", "must be 'random' or 'model'")
        if self.fixed_codes_init == "model" and self.init != "linear_3dmm":
            bad("fixed_codes_init", "'model' needs init = 'linear_3dmm'")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", "must be in [0, 1)")
        for name in ("critic_warmup", "interaction_vertices", "proxy_every", "snapshot_every"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        for name in ("lambda_interaction", "lambda_projection", "lambda_subspace", "lambda_anchor"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        if self.interaction_pairs < 1:
            bad("interaction_pairs", "must be >= 1")
        if self.lambda_subspace > 0 and not 1 <= self.subspace_pairs <= self.interaction_pairs:
            bad("subspace_pairs", "must be in [1, interaction_pairs]")
        if self.image_size < 16 or self.image_size % 16:
            bad("image_size", "must be a positive multiple of 16")
        if self.noise_dim < 0 or self.hidden < 1 or self.default_factor_dim < 1:
            bad("noise_dim", "/ hidden / default_factor_dim must be positive")
        if any(int(v) < 1 for v in self.latent_dims.values()):
            bad("latent_dims", "sizes must be >= 1")
        for name in ("log_every", "grid_columns", "grid_cell", "metrics_samples", "metrics_pairs"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("sample_every", "checkpoint_every", "metrics_every", "metrics_max_train", "num_threads"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_toml(self) -> str:
        """The resolved config as TOML (loadable again with :func:`load_config`)."""
        lines = ["# fitface resolved training config (every field; see docs/training.md)"]
        tables = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                lines.append(f"# {f.name} = (unset)")
            elif isinstance(v, dict):
                tables.append((f.name, v))
            else:
                lines.append(f"{f.name} = {_toml_value(v)}")
        for name, d in tables:
            lines.append(f"\n[{name}]")
            lines.extend(f"{k} = {_toml_value(x)}" for k, x in d.items())
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> "TrainConfig":
        """A config from a dict of fields (e.g. a run's config.json); fields that earlier
        versions had and this one dropped (:data:`REMOVED_FIELDS`) are ignored with a warning,
        so older runs still resume."""
        data = dict(data)
        dropped = sorted(k for k in REMOVED_FIELDS if k in data)
        if dropped:
            import warnings

            warnings.warn(f"{where}: ignoring config fields of an earlier fitface: {', '.join(dropped)} "
                          f"({'; '.join(REMOVED_FIELDS[k] for k in dropped)})", stacklevel=2)
            for k in dropped:
                data.pop(k)
        cfg = cls()
        apply_overrides(cfg, data, where)
        return cfg

    def total_steps(self, num_train: int) -> int:
        """Generator steps of the run: ``max_steps`` or ``round(epochs * steps_per_epoch)``."""
        if self.max_steps is not None:
            return int(self.max_steps)
        return int(round(self.epochs * self.steps_per_epoch(num_train)))

    def steps_per_epoch(self, num_train: int) -> int:
        """``ceil(num_train / batch_size)`` generator steps (30,559 / 64 -> 478)."""
        return max(1, math.ceil(num_train / self.batch_size))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
#: Fields of earlier versions, ignored when read (name -> what replaced it).
REMOVED_FIELDS = {
    "near_threshold": "the near-training share now uses near_ratio",
    "near_fraction": "the near-training share now uses near_ratio",
}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Convert ``value`` to the type of field ``name`` (strings from --set are parsed)."""
    default = getattr(TrainConfig(), name)
    typ = _FIELDS[name].type
    if isinstance(value, str) and not (isinstance(default, str) and "None" not in str(typ) and name != "classify"):
        value = _parse_literal(value)
    try:
        if value is None:
            if "None" not in str(typ):
                raise ValueError("cannot be unset")
            return None
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError("expected true/false")
            return value
        if isinstance(default, int) or "int |" in str(typ):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if isinstance(default, str):
            return str(value)
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ValueError("expected a table")
            return {str(k): int(v) for k, v in value.items()}
        if isinstance(default, list) or "list" in str(typ):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ValueError("expected a list")
            return [float(x) for x in value] if name.startswith("betas") else [str(x) for x in value]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: field {name}: {exc} (got {value!r})") from None
    return value


def _parse_literal(text: str) -> Any:
    """Parse a --set value as a TOML value (``3``, ``1e-4``, ``true``, ``[0.5, 0.9]``, ``"x"``);
    bare words stay strings; ``none``/``null`` unset optional fields."""
    import tomllib

    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: TrainConfig, data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """Set fields of ``cfg`` from a mapping (unknown names raise ``InputError``)."""
    for key, value in data.items():
        if key not in _FIELDS:
            close = [n for n in _FIELDS if n.startswith(key[:4])]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"{where}: unknown config field {key!r}{hint}")
        setattr(cfg, key, _coerce(key, value, where))
    return cfg


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["lr_g=1e-4", "betas_g=[0.5,0.9]"]`` -> ``{"lr_g": 1e-4, "betas_g": [0.5, 0.9]}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--set: expected field=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def recipe_names() -> list[str]:
    """Names of the shipped recipes (file stems in ``train/recipes``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """Resolve a recipe name (``"paper"``) or a TOML path; ``InputError`` if neither exists."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise InputError("recipe file not found", p)
        return p
    cand = RECIPES_DIR / f"{name_or_path}.toml"
    if cand.is_file():
        return cand
    raise InputError(f"unknown recipe {str(name_or_path)!r}; known recipes: {', '.join(recipe_names())} "
                     "(or pass a .toml path)")


def load_config(recipe: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the recipe's fields, then ``overrides``; validated.

    Args:
        recipe: a recipe name (see :func:`recipe_names`), a TOML path, or None (defaults = paper).
        overrides: field -> value (values may be strings, parsed as TOML literals).
    """
    import tomllib

    cfg = TrainConfig()
    if recipe is not None:
        path = recipe_path(recipe)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"not valid TOML: {exc}", path) from None
        apply_overrides(cfg, data, where=str(path))
        if "recipe" not in data:
            cfg.recipe = path.stem
    if overrides:
        apply_overrides(cfg, overrides, where="override")
    return cfg.validate()
