"""File I/O: meshes, landmark files, codes, images; every writer is atomic.

Model files are read here too, without torch: :mod:`.model_file_format` (the layout and every
reading check) and :mod:`.model_registry` (built-in model names -> files); writing them and
loading them into torch is :mod:`fitface.models.model_file`'s.
"""
