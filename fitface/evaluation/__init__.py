"""Evaluating face models: the paper's metrics, ``fitface evaluate`` and the proxy.

Paper concept -> module:

* **Table 1** (§5.3-5.4), one row per model:

  - ``Dec-Id``, ``Dec-Exp`` (decoupling, judged by the dataset's embedders):
    :func:`.decoupling.decoupling_score`;
  - ``Coef-Dec-Id``, ``Coef-Dec-Exp`` (the ground-truth coefficient variant, beyond the paper):
    :func:`.decoupling.coefficient_decoupling`;
  - ``Div``, ``Div-Id``, ``Div-Exp`` (diversity): :func:`.diversity_specificity.diversity`; the
    "Training data" row: :func:`.report.training_diversity`;
  - ``Sp.`` (specificity, exact nearest training face):
    :class:`.diversity_specificity.NearestFace`.

* **Decoupling embedders** (supplement, "Decoupling Evaluation - Implementation Details"), one
  per factor and dataset: :mod:`.embedder` (a trained one: network, render settings,
  threshold; its file), :mod:`.embedder_network` (the ResNet-18), :mod:`.embedder_rendering`
  (the normal-map renders it sees, the render cache), :mod:`.embedder_verification` (triplet
  loss, validation pairs, the "same" threshold at FAR < 10%), :mod:`.embedder_training`
  (training them, ``train_embedders``).
* **Test set** of §5.5 (held-out identities x extreme expressions outside the training
  recipes, with ground truth): :mod:`.heldout_captures`
  (:func:`.heldout_captures.build_test_captures`).
* **Table 2** (§5.5, reconstruction of sparse data): :mod:`.sparse_reconstruction`.
* **Retargeting** (expression transfer, Fig. 4 and the supplement; the paper shows it in pictures)
  measured against ground truth: :mod:`.retargeting`.
* **Tracking a video** (``fitface track``, beyond the paper) measured against ground truth:
  rendered face videos of a known identity, expression trajectory and head pose, per-frame
  vertex error and jitter: :mod:`.tracking_video`.
* **The report** (``fitface evaluate``: ``report.md``, ``report.json``, figures): :mod:`.report`.
* **Proxy evaluation** (the trainer, every ``proxy_every`` steps: the same measurements at
  small counts, seconds instead of minutes): :mod:`.proxy`.
* **Training-progress metrics** (``metrics.csv`` of a run: diversity, specificity,
  near-training share): :class:`.diversity_specificity.ProgressEvaluator`.

Imports point one way: ``fitface.cli`` and the trainer (``fitface.train``) import this package;
it imports the models (``fitface.models``, ``fitface.api``, ``fitface.landmarks``) and the core,
never ``fitface.train`` (tests/test_import_direction.py).
"""
