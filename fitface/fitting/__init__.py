"""The landmark-fitting engine (numpy + scipy only: importing it never imports torch).

Modules: :mod:`.similarity` (Umeyama, :class:`Similarity`), :mod:`.decoder` (torch-free model
decoders with hand-written VJPs, :func:`load_decoder`), :mod:`.adam` (batched Adam),
:mod:`.fit_loop` (the one optimisation loop: restarts, freeze, sequences, history, the best
restart, with pluggable data terms), and its data terms: :mod:`.landmark_fit` (3D landmarks
under a similarity, paper eq. 13), :mod:`.projection_fit` (2D landmarks under a scaled
orthographic camera, for photos) and :mod:`.surface_refine` (robust point-to-surface
refinement against a scan).
"""
