"""Turn a trained run's model into the built-in ``procedural`` model (models/default.safetensors).

Usage (see train/recipes/default_model.toml for the whole recipe):
    python scripts/ship_default_model.py runs/default/model.safetensors

A thin wrapper of scripts/ship_model.py (``--name procedural``): float16 generator weights, the
ibug68 and mediapipe landmark sets, the training config and data fingerprint, no
discriminator, plus ``metadata["shipped"]`` (name, budget, recipe, command, licence).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ship_model import main as ship  # noqa: E402

COMMAND = ("fitface data synthetic -o data/synth && fitface train data/synth -c default_model -o runs/default")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    return ship([sys.argv[1], "--name", "procedural", "--recipe", "default_model", "--command", COMMAND,
                 "--notes", f"fitface's built-in default model: {Path(sys.argv[1]).name} of the default_model "
                            "recipe on the built-in procedural set (fitface data synthetic); procedural faces only",
                 *sys.argv[2:]])


if __name__ == "__main__":
    sys.exit(main())
