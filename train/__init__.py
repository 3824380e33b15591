"""Training the GAN (installed as ``fitface.train``).

:mod:`.config` (typed config, recipes in ``recipes/``), :mod:`.trainer`, :mod:`.losses`
(eq. 2-12), :mod:`.sampling` (fixed codes, phases, per-step seeds), :mod:`.checkpoint`
(pickle-free, exact resume), :mod:`.distributed`, :mod:`.logs`, :mod:`.warm_start` (the
generator started as the linear 3DMM of :mod:`fitface.models.builders.linear`).

The measurements the trainer logs (diversity, specificity, the proxy evaluation) come from
:mod:`fitface.evaluation`, which imports nothing from here.
"""
