"""The landmark-fitting engine (numpy + scipy only: importing it never imports torch).

Modules: :mod:`.similarity` (Umeyama, :class:`Similarity`), :mod:`.decoder` (torch-free model
decoders with hand-written VJPs, :func:`load_decoder`), :mod:`.adam` (batched Adam),
:mod:`.landmark_fit` (paper eq. 13, batched, restarts, freeze, sequences) and
:mod:`.surface_refine` (robust point-to-surface refinement against a scan).
"""
