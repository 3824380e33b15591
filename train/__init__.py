"""Training and evaluation (installed as ``fitface.train``).

Training the GAN: :mod:`.config` (typed config, recipes in ``recipes/``), :mod:`.trainer`,
:mod:`.losses` (eq. 2-12), :mod:`.sampling` (fixed codes, phases, per-step seeds),
:mod:`.checkpoint` (pickle-free, exact resume), :mod:`.distributed`, :mod:`.logs`.

Evaluation: :mod:`.metrics` (diversity,
specificity), :mod:`.resnet` + :mod:`.embedding` + :mod:`.decoupling` (the decoupling metric),
:mod:`.testsets`, :mod:`.sparse_reconstruction` (Table 2), :mod:`.retargeting_eval`,
:mod:`.report` (``fitface evaluate``).
"""
