"""Turn a trained run's model into the built-in default model (models/default.safetensors).

Usage (see train/recipes/default_model.toml for the whole recipe):
    python scripts/ship_default_model.py runs/default/model.safetensors

The shipped file keeps the generator (float16 weights; template, UV and landmark sets stay full
precision), the landmark sets (ibug68 and mediapipe), the training config and the data
fingerprint; it drops the discriminator, which fitting does not use. It prints the size and the
largest vertex difference between the float32 and float16 decodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from fitface.models.model_file import DEFAULT_MODEL_PATH, load_model, read_metadata, save_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="the trained run's model.safetensors")
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_MODEL_PATH, help="destination (default: %(default)s)")
    args = ap.parse_args()

    doc = read_metadata(args.model)
    model = load_model(args.model)
    if "mediapipe" not in model.landmark_sets:
        raise SystemExit(f"{args.model}: no 'mediapipe' landmark set; run `fitface landmarks mediapipe` on it first")
    save_model(args.out, model, training_config=doc.get("training_config"),
               data_fingerprint=doc.get("data_fingerprint"), half=True,
               notes=f"fitface's built-in default model: {args.model.name} of the default_model recipe on the "
                     "built-in procedural set (fitface data synthetic); procedural faces only")
    shipped = load_model(args.out)
    z = model.sample_latent(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model.decode(z) - shipped.decode(z)).abs().max().item()
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out}: {size:.1f} MiB, model_id {shipped.model_id}, "
          f"max float16 decode difference {diff:.4f} {shipped.unit} over 64 samples")
    assert np.isfinite(diff)


if __name__ == "__main__":
    main()
