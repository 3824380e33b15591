"""Landmark sets and lifting landmarks from photos and scans (installed as ``fitface.landmarks``).

* :mod:`.sets`: :class:`~fitface.landmark_set.LandmarkSet`, ordered surface points (triangle +
  barycentric; defined in :mod:`fitface.landmark_set`, re-exported);
  :mod:`.set_files`: user set files.
* :mod:`.mediapipe_mesh`, :mod:`.mediapipe_points`: running mediapipe's face mesh, which of its
  points are used.
* :mod:`.correspondence`: a model's ``"mediapipe"`` set, found on its rendered template.
* :mod:`.lift_photo`, :mod:`.photo_fit`: photos -> landmarks -> fits; :mod:`.lift_scan`: automatic
  landmarks for raw scans (multi-view renders + consensus).
"""
