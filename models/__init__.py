"""Networks and model files (installed as ``fitface.models``).

* :mod:`.latent`: the latent layout (factor blocks, then noise; defined in :mod:`fitface.latent`,
  re-exported).
* :mod:`.generator`: the paper's MLP generator (Fig. 12a); :mod:`.linear`: the linear 3DMM
  generator behind the same interface; :mod:`.multilinear`: the MAE baseline's multilinear
  (Tucker) decoder behind it too (no builder yet).
* :mod:`.builders`: models built from a dataset without adversarial training;
  :mod:`.builders.linear` the linear 3DMM baseline (``fitface baseline``).
* :mod:`.discriminator`: the critic with one classifier branch per factor (Fig. 12b).
* :mod:`.face_model`: template + generator + mapping layer + landmark sets as one module.
* :mod:`.model_file`: one safetensors file with JSON metadata; loading never unpickles.
* :mod:`.registry`: the built-in models by name (``procedural``, ``ict``, ``ict-linear``) and
  the default (``DEFAULT_MODEL``); ``default.safetensors`` is ``procedural`` (see
  train/recipes/default_model.toml), ``ict-linear.safetensors`` the ICT linear 3DMM.
"""
