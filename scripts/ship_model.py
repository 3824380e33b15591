"""Turn a trained (or built) model file into a shipped built-in model (fitface/models/NAME.safetensors).

Usage:
    python scripts/ship_model.py runs/ict_3dmm/model.safetensors --name ict-linear \\
        --command "fitface data ict ../shared/data/ict_face_light.npz -o data/ict && fitface baseline data/ict -o runs/ict_3dmm" \\
        --ict-licence ../shared/data/ict_face_light.npz
    python scripts/ship_model.py runs/ict/model.safetensors --name ict --recipe paper \\
        --command "fitface train data/ict -c paper -o runs/ict" --ict-licence ../shared/data/ict_face_light.npz

The shipped file keeps the generator (float16 weights; template, UV and landmark sets stay full
precision), the latent layout (all-zero columns, such as a linear model's noise block, are kept:
the format has no way to drop them), the landmark sets (ibug68 and mediapipe; mediapipe is
computed on the template when missing), the training config and the data fingerprint; it drops
the discriminator, which fitting does not use. Its metadata gets ``metadata["shipped"]``:

    name, budget (one line: "N generator steps, recipe R" or "linear 3DMM from N identities"),
    recipe, command (how the source model was made), source_model_id, source_file, data (the
    training set's fingerprint and builder info), licence_short, licence (full text, for
    ICT-derived models the ICT-FaceKit MIT licence read from the source), attribution.

It prints the size, the total size of all shipped model files (they must stay under
``--budget-mib``, 48 by default) and the largest vertex difference between the float32 and
float16 decodes over 64 random codes. Every model file is written atomically and is never
re-encoded in place: pass a trained run's file, not a shipped one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

#: Attribution of models derived from the ICT-FaceKit light-stage model.
ICT_ATTRIBUTION = ("Derived from the ICT-FaceKit Face Model Light (USC Institute for Creative Technologies, "
                   "https://github.com/ICT-VGL/ICT-FaceKit, commit da5f95a), MIT licence")
#: All shipped model files together must stay under this many MiB (the package's size budget).
SHIPPED_BUDGET_MIB = 48.0


def ict_licence_text(source: Path) -> str:
    """The MIT licence text stored in an ``ict_face_light.npz`` (key ``license``) or an
    ICT-FaceKit checkout's LICENSE file.

    Raises:
        InputError: no such file or folder, no licence in it, an unreadable npz.
    """
    from fitface.errors import InputError, one_line

    if source.is_dir():
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            if (source / name).is_file():
                return (source / name).read_text()
        raise InputError("no LICENSE file in the ICT-FaceKit checkout", source)
    if not source.is_file():
        raise InputError("--ict-licence: no such file or folder", source)
    try:
        with np.load(source, allow_pickle=False) as z:
            if "license" not in z.files:
                raise InputError("no 'license' key in the npz", source)
            return str(z["license"])
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable npz: {one_line(exc)}", source) from None


def budget_line(doc: dict) -> str:
    """One line on how the model was made (see fitface.models.registry)."""
    from fitface.models.registry import _budget

    return _budget({**doc, "metadata": {k: v for k, v in (doc.get("metadata") or {}).items() if k != "shipped"}})


def data_summary(doc: dict) -> dict:
    meta = doc.get("metadata") or {}
    ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    info = ds.get("info") if isinstance(ds.get("info"), dict) else {}
    keep = ("builder", "seed", "source", "identities", "samples", "narrow")
    return {"fingerprint": doc.get("data_fingerprint"), **{k: info[k] for k in keep if k in info}}


def main(argv: list[str] | None = None) -> int:
    import torch

    from fitface.errors import InputError
    from fitface.landmarks.correspondence import SET_NAME, attach_to_model
    from fitface.models.model_file import load_model, read_metadata, save_model
    from fitface.models.registry import BUILTIN_MODELS, FITFACE_LICENCE, ICT_LICENCE, MODELS_DIR, model_id_of_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="the trained run's (or baseline's) model.safetensors")
    ap.add_argument("--name", required=True, help="built-in name, e.g. ict, ict-linear, procedural")
    ap.add_argument("-o", "--out", type=Path, default=None,
                    help="destination (default: the registry's file for NAME, else fitface/models/NAME.safetensors)")
    ap.add_argument("--recipe", default=None, help="training recipe (default: the file's training_config recipe)")
    ap.add_argument("--command", default=None, help="the command(s) that made the source model")
    ap.add_argument("--budget", default=None, help="one-line training budget (default: from the file)")
    ap.add_argument("--ict-licence", type=Path, default=None,
                    help="ict_face_light.npz or an ICT-FaceKit checkout: the model derives from ICT-FaceKit; its "
                         "MIT licence text and attribution go into the metadata")
    ap.add_argument("--notes", default=None, help="the file's notes (default: a line naming NAME and its source)")
    ap.add_argument("--budget-mib", type=float, default=SHIPPED_BUDGET_MIB,
                    help="all shipped model files together must stay under this (default: %(default)s)")
    args = ap.parse_args(argv)

    try:
        doc = read_metadata(args.model)
        model = load_model(args.model)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (doc.get("metadata") or {}).get("shipped"):
        print(f"error: {args.model}: already a shipped model; ship the trained run's file instead", file=sys.stderr)
        return 2
    out = args.out or (BUILTIN_MODELS[args.name].path if args.name in BUILTIN_MODELS
                       else MODELS_DIR / f"{args.name}.safetensors")
    if SET_NAME not in model.landmark_sets:
        print(f"computing the {SET_NAME!r} landmark set on the template ...", file=sys.stderr)
        attach_to_model(model, required=True)
    if "ibug68" not in model.landmark_sets:
        print(f"error: {args.model}: no 'ibug68' landmark set", file=sys.stderr)
        return 2

    cfg = doc.get("training_config") or {}
    shipped = {
        "name": args.name,
        "shipped": dt.date.today().isoformat(),
        "budget": args.budget or budget_line(doc),
        "recipe": args.recipe or cfg.get("recipe") or cfg.get("baseline"),
        "command": args.command,
        "source_file": args.model.name,
        "source_model_id": model_id_of_file(args.model),
        "data": data_summary(doc),
    }
    if args.ict_licence is not None:
        try:
            licence = ict_licence_text(args.ict_licence)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        shipped.update({"licence_short": ICT_LICENCE, "licence": licence, "attribution": ICT_ATTRIBUTION})
    else:
        shipped.update({"licence_short": FITFACE_LICENCE, "licence": "MIT (see the fitface package's licence)",
                        "attribution": "fitface"})
    model.metadata["shipped"] = shipped
    notes = args.notes or (f"fitface built-in model {args.name!r}: {args.model.name} ({shipped['budget']}), "
                           f"shipped with float16 weights and without its discriminator")
    save_model(out, model, training_config=cfg, data_fingerprint=doc.get("data_fingerprint"), half=True, notes=notes)

    shipped_model = load_model(out)
    z = model.sample_latent(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model.decode(z) - shipped_model.decode(z)).abs().max().item()
    size = out.stat().st_size / 2**20
    total = sum(m.path.stat().st_size for m in BUILTIN_MODELS.values() if m.installed) / 2**20
    if out.resolve().parent != MODELS_DIR:
        total += size
    print(f"wrote {out}: {size:.2f} MiB, model_id {shipped_model.model_id}, max float16 decode difference "
          f"{diff:.4f} {shipped_model.unit} over 64 samples; all shipped models {total:.1f} MiB "
          f"(budget {args.budget_mib:g} MiB)")
    assert np.isfinite(diff)
    if total > args.budget_mib:
        print(f"warning: the shipped models take {total:.1f} MiB, over the {args.budget_mib:g} MiB budget",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
