"""Latent manipulation: retargeting an expression onto another identity (supplement Fig. 7),
sampling (Fig. 3) and interpolation (Fig. 6).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import (
    PathLike,
    codes_of,
    factor_code,
    load_fit_model,
    mesh_suffix,
    model_for_codes,
    model_reference,
    parse_assignments,
)
from fitface.errors import InputError


# ------------------------------------------------------------------------------ retarget
@dataclass
class CodesResult:
    """Meshes decoded from manipulated codes.

    Attributes:
        vertices: (K, V, 3) float64 meshes (frame and unit stated by ``unit`` / ``codes``).
        faces: (F, 3) int64.
        codes: K :class:`fitface.io.codes.Codes`.
        files: name -> path of the files written.
    """

    vertices: np.ndarray
    faces: np.ndarray
    codes: list
    files: dict[str, Path] = field(default_factory=dict)


def retarget(
    expression: Any,
    identity: Any,
    *,
    model: Any = None,
    mode: str = "replace",
    out: PathLike | None = None,
    model_frame: bool = False,
) -> CodesResult:
    """Move the expression of capture A onto the face of capture B (supplement Fig. 7).

    ``mode="replace"``: ``G(z_id(B), z_exp(A), z_noise(B))``; ``mode="add"``:
    ``G(z_id(B), z_exp(A) + z_exp(B), z_noise(B))``. Any other factor comes from B.

    A tracked sequence (``codes.npz`` of :func:`fitface.api.track`) as ``expression`` is
    :func:`fitface.api.retarget_sequence` (``out`` is then its output folder).

    Args:
        expression: A's codes.json (path or Codes), or a tracked sequence's codes.npz.
        identity: B's codes.json.
        model: the model both codes come from (built-in name, file, or a decoder); None = the
            model the codes record (``codes.json`` ``"model"``), checked by ``model_id``.
        mode: "replace" or "add".
        out: if given, the mesh file to write (format by suffix) and ``<stem>.codes.json`` beside it.
        model_frame: write the mesh in the model's frame and unit instead of B's capture frame.

    Returns:
        :class:`CodesResult` with one mesh (B's frame and unit unless ``model_frame``); for a
        sequence, :class:`fitface.api.SequenceRetargetResult`.

    Raises:
        InputError: codes from different models, or from another model than ``model``; without
            ``model``, codes whose model cannot be found (the message says which to pass).
    """
    from fitface.api.sequence_retarget import is_sequence_codes, retarget_sequence
    from fitface.fitting.similarity import Similarity
    from fitface.io.codes import Codes

    if is_sequence_codes(expression):
        return retarget_sequence(expression, identity, out, model=model, mode=mode, model_frame=model_frame)
    if mode not in ("replace", "add"):
        raise InputError(f"--mode: expected replace or add, got {mode!r}")
    a, b = codes_of(expression, "--expression"), codes_of(identity, "--identity")
    wa = expression if isinstance(expression, (str, os.PathLike)) else None
    wb = identity if isinstance(identity, (str, os.PathLike)) else None
    dec = model_for_codes([(a, wa or "--expression"), (b, wb or "--identity")], model)
    layout = dec.layout
    expr = "expression" if "expression" in layout.factors else layout.factors[-1]
    parts = {}
    for blk in layout.names:
        src = a if blk == expr else b
        if blk not in src.codes:
            raise InputError(f"no {blk!r} code in the codes file",
                             expression if src is a else identity if isinstance(identity, (str, os.PathLike)) else None)
        parts[blk] = src.code(blk)
        if parts[blk].shape != (layout.size(blk),):
            raise InputError(f"{blk} code has {parts[blk].shape[0]} numbers, the model expects {layout.size(blk)}")
    if mode == "add":
        parts[expr] = a.code(expr) + b.code(expr)
    z = np.concatenate([parts[n] for n in layout.names])[None]  # (1, D)
    verts = dec.vertices(z)  # (1, V, 3) model unit
    transform, unit = None, dec.unit
    if not model_frame and b.transform is not None:
        t = Similarity.from_json(b.transform)
        verts = t.apply(verts)
        transform, unit = b.transform, (b.unit or dec.unit)
    extra = {"retarget": {"mode": mode, "expression_from": str(expression) if wa else None,
                          "identity_from": str(identity) if isinstance(identity, (str, os.PathLike)) else None}}
    codes = Codes(dec.model_id, {k: v.tolist() for k, v in parts.items()}, transform, unit, extra,
                  model_reference(dec))
    res = CodesResult(np.asarray(verts, dtype=np.float64), np.asarray(dec.faces), [codes])
    if out is not None:
        res.files = _write_meshes([Path(out)], res.vertices, res.faces, [codes])
    return res


def _write_meshes(paths: list[Path], vertices, faces, codes: list) -> dict[str, Path]:
    from fitface.io.codes import write_codes
    from fitface.io.mesh import MESH_SUFFIXES, save_mesh

    for p in paths:
        if p.suffix.lower() not in MESH_SUFFIXES:
            raise InputError(f"unknown mesh format {p.suffix or '(no suffix)'!r}; use one of "
                             f"{', '.join(MESH_SUFFIXES)}", p)
    files = {}
    for k, (p, v, c) in enumerate(zip(paths, vertices, codes)):
        cp = p.with_name(p.stem + ".codes.json")
        write_codes(cp, c)
        save_mesh(p, v, faces)
        files[f"mesh{k}" if len(paths) > 1 else "mesh"] = p
        files[f"codes{k}" if len(paths) > 1 else "codes"] = cp
    return files


# ------------------------------------------------------------------------------ sample / interpolate
def sample(
    n: int,
    *,
    model: Any = None,
    seed: int = 0,
    fix: Mapping[str, Any] | Sequence[str] | None = None,
    shared: Sequence[str] = (),
    out_dir: PathLike | None = None,
    format: str = "ply",
    picture: bool = True,
) -> CodesResult:
    """Draw ``n`` random faces ``G(z)``, ``z ~ N(0, I)`` (paper Fig. 3), in the model frame and unit.

    Args:
        n: number of samples (>= 1).
        fix: ``{factor: codes.json | Codes | (d,) array}``: that block is the given code in
            every sample (e.g. a fitted identity with random expressions).
        shared: factor names drawn once and shared by all samples.
        out_dir: if given, write ``sample_000.<ext>`` + ``sample_000.codes.json`` per sample and
            ``samples.png`` (a grid).

    Returns:
        :class:`CodesResult` with (n, V, 3) meshes.
    """
    from fitface.io.codes import Codes

    if int(n) < 1:
        raise InputError(f"-n: expected at least 1 sample, got {n}")
    n = int(n)
    dec = load_fit_model(model)
    layout = dec.layout
    fixed = {k: factor_code(dec, k, v, f"--fix {k}") for k, v in parse_assignments(fix, "--fix").items()}
    for s in shared:
        if s not in layout.names:
            raise InputError(f"--shared: the model has no latent block {s!r}; blocks: {', '.join(layout.names)}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, layout.dim))  # (n, D)
    for s in shared:
        z[:, layout.slice(s)] = z[:1, layout.slice(s)]
    for k, code in fixed.items():
        z[:, layout.slice(k)] = code
    verts = np.asarray(dec.vertices(z), dtype=np.float64)  # (n, V, 3) model unit
    codes = [Codes(dec.model_id, {k: v.tolist() for k, v in layout.split(z[i]).items()}, None, dec.unit,
                   {"sample": {"seed": int(seed), "index": i, "shared": list(shared), "fixed": sorted(fixed)}},
                   model_reference(dec))
             for i in range(n)]
    res = CodesResult(verts, np.asarray(dec.faces), codes)
    if out_dir is not None:
        suffix = mesh_suffix(format, None)
        out = Path(out_dir)
        pic = _grid(verts, res.faces, [f"sample {i}" for i in range(n)]) if picture else None
        res.files = _write_meshes([out / f"sample_{i:03d}{suffix}" for i in range(n)], verts, res.faces, codes)
        if pic is not None:
            from fitface.io.image import write_png

            write_png(out / "samples.png", pic)
            res.files["picture"] = out / "samples.png"
    return res


def _grid(verts, faces, labels, ncols=None):
    from fitface.preview import mesh_strip

    k = len(verts)
    return mesh_strip(verts, faces, labels, size=192 if k <= 16 else 128,
                      ncols=ncols if ncols is not None else math.ceil(math.sqrt(k)))


def interpolate(
    a: Any,
    b: Any,
    *,
    model: Any = None,
    steps: int = 7,
    factors: Sequence[str] | None = None,
    range_: tuple[float, float] = (0.0, 1.0),
    out_dir: PathLike | None = None,
    format: str = "ply",
    picture: bool = True,
) -> CodesResult:
    """Interpolate (and extrapolate) between two codes (supplement Fig. 6), model frame and unit.

    ``z(t) = z_a + t (z_b - z_a)`` on the blocks in ``factors`` (default: every block), the other
    blocks kept at ``z_a``, for ``steps`` values of ``t`` evenly spaced over ``range_``
    (``(0, 1)`` interpolates; ``(-0.5, 1.5)`` extrapolates on both sides).

    Args:
        a, b: codes.json paths or :class:`fitface.io.codes.Codes` of one model.
        model: built-in name, file or decoder; None = the model the codes record (as
            :func:`retarget`).

    Returns:
        :class:`CodesResult` with (steps, V, 3) meshes; with ``out_dir``, ``interp_00.<ext>``
        (+ ``.codes.json``) per step and ``strip.png``.
    """
    from fitface.io.codes import Codes

    if int(steps) < 2:
        raise InputError(f"--steps: expected at least 2, got {steps}")
    lo, hi = (float(x) for x in range_)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
        raise InputError(f"--range: expected two different finite numbers, got {lo} {hi}")
    ca, cb = codes_of(a, "A"), codes_of(b, "B")
    dec = model_for_codes([(ca, a if isinstance(a, (str, os.PathLike)) else "A"),
                           (cb, b if isinstance(b, (str, os.PathLike)) else "B")], model)
    layout = dec.layout
    blocks = list(layout.names) if not factors else list(factors)
    for f in blocks:
        if f not in layout.names:
            raise InputError(f"--factor: the model has no latent block {f!r}; blocks: {', '.join(layout.names)}")
    za = np.concatenate([factor_code(dec, n, ca, "A") for n in layout.names])
    zb = np.concatenate([factor_code(dec, n, cb, "B") for n in layout.names])
    mask = np.zeros(layout.dim, dtype=bool)
    for f in blocks:
        mask[layout.slice(f)] = True
    ts = np.linspace(lo, hi, int(steps))
    z = za[None] + ts[:, None] * np.where(mask, zb - za, 0.0)[None]  # (steps, D)
    verts = np.asarray(dec.vertices(z), dtype=np.float64)
    codes = [Codes(dec.model_id, {k: v.tolist() for k, v in layout.split(z[i]).items()}, None, dec.unit,
                   {"interpolation": {"t": float(t), "factors": blocks}}, model_reference(dec))
             for i, t in enumerate(ts)]
    res = CodesResult(verts, np.asarray(dec.faces), codes)
    if out_dir is not None:
        suffix = mesh_suffix(format, None)
        out = Path(out_dir)
        pic = _grid(verts, res.faces, [f"t={t:.2f}" for t in ts], ncols=len(ts)) if picture else None
        res.files = _write_meshes([out / f"interp_{i:02d}{suffix}" for i in range(len(ts))], verts, res.faces, codes)
        if pic is not None:
            from fitface.io.image import write_png

            write_png(out / "strip.png", pic)
            res.files["picture"] = out / "strip.png"
    return res
