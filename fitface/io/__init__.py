"""File I/O: meshes, landmark files, codes, images; every writer is atomic."""
