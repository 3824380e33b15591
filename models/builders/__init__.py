"""Builders of the comparison models (installed as ``fitface.models.builders``).

A builder makes a :class:`fitface.models.face_model.FaceModel` from a fitface dataset without
adversarial training; the result is an ordinary model file (``fitface baseline``) that
sampling, fitting, retargeting and ``fitface evaluate`` use exactly like a trained GAN.

* :mod:`.linear`: the paper's additive linear 3DMM baseline (§5.5, Amberg et al. 2008, ref. [1]):
  identity PCA on neutral faces, expression PCA on displacements from each person's neutral;
  the generator is :class:`fitface.models.linear.LinearGenerator`.
* :mod:`.mae`: the MAE baseline (Fernandez Abrevaya et al. 2018, ref. [14]): a multilinear
  decoder (:class:`fitface.models.multilinear.MultilinearGenerator`) started as the linear 3DMM
  and trained jointly with a geometry-image encoder (:func:`.mae.build_mae`).
"""
