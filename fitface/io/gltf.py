"""Writing a face rig as glTF 2.0 binary (GLB) with pygltflib: :func:`glb_bytes`.

One mesh (one triangle primitive) on one node in one scene:

* attributes ``POSITION`` and ``NORMAL`` (float32) and optionally ``COLOR_0`` (float32 RGB,
  **linear**: colours are given in sRGB and converted here, as glTF requires);
* one morph target per blendshape (``POSITION`` deltas, optionally ``NORMAL`` deltas), named in
  ``mesh.extras.targetNames`` (the convention three.js, Blender and Babylon read);
* the initial weights ``mesh.weights``;
* for sequences, one animation: a ``weights`` channel (``LINEAR``, T keyframes of K weights) and,
  when head poses are given, the node's ``rotation`` (quaternions, ``LINEAR`` = slerp) and
  ``translation`` channels. Sampler input times are seconds.

Convention:
    * Positions, deltas and translations are written as given, in whatever unit the caller uses
      (glTF nominally means metres; the caller records its unit in ``asset.extras.unit``).
      Axes: glTF's (+Y up, +Z towards the viewer, right-handed), which is fitface's model and
      photo frame (x right, y up, z to the viewer).
    * The node's world transform at time t is ``x_world = R(t) x_local + T(t)`` (no scale).
    * The animated local mesh at time t is ``base + sum_k w_k(t) * delta_k`` (glTF morphing).
    * Quaternions are written ``(x, y, z, w)``, sign-flipped where needed so consecutive
      keyframes have a non-negative dot product (slerp takes the short way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: glTF component type and target codes used here.
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB colours in [0, 1] -> linear RGB in [0, 1] (the IEC 61966-2-1 transfer function).

    Args:
        rgb: (..., C) float in [0, 1] (values are clipped to it).

    Returns:
        (..., C) float64 linear values.
    """
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float64 unit area-weighted vertex normals of ``vertices`` (V, 3) and ``faces`` (F, 3)
    (an isolated vertex gets (0, 0, 1))."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # (F, 3), |fn| = 2 area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    out = np.divide(n, length, out=np.zeros_like(n), where=length > 0)
    out[length[:, 0] == 0] = (0.0, 0.0, 1.0)
    return out


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation matrices -> (T, 4) float64 unit quaternions ``(x, y, z, w)``, with signs
    chosen so consecutive quaternions have a non-negative dot product."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()  # (T, 4) xyzw
    q = np.atleast_2d(q)
    for t in range(1, len(q)):
        if np.dot(q[t], q[t - 1]) < 0:
            q[t] = -q[t]
    return q


class _Blob:
    """The binary chunk: buffer views and accessors appended in order (4-byte aligned)."""

    def __init__(self, gltf):
        self.gltf = gltf
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, kind: str, component: int, target: int | None = None,
            minmax: bool = False) -> int:
        import pygltflib as g

        data = np.ascontiguousarray(array).tobytes()
        pad = (-self.size) % 4
        if pad:
            self.parts.append(b"\x00" * pad)
            self.size += pad
        view = g.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target)
        self.parts.append(data)
        self.size += len(data)
        self.gltf.bufferViews.append(view)
        count = int(array.shape[0])
        acc = g.Accessor(bufferView=len(self.gltf.bufferViews) - 1, byteOffset=0, componentType=component,
                         count=count, type=kind)
        if minmax:
            a = np.asarray(array, dtype=np.float64).reshape(count, -1)
            acc.min = a.min(axis=0).tolist() if count else None
            acc.max = a.max(axis=0).tolist() if count else None
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def bytes(self) -> bytes:
        data = b"".join(self.parts)
        return data + b"\x00" * ((-len(data)) % 4)


def glb_bytes(
    vertices: np.ndarray,
    faces: np.ndarray,
    targets: np.ndarray,
    target_names: Sequence[str],
    weights: np.ndarray,
    *,
    times: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    morph_normals: bool = False,
    name: str = "face",
    extras: dict[str, Any] | None = None,
) -> bytes:
    """Build a GLB (module doc) and return its bytes; nothing is written.

    Args:
        vertices: (V, 3) float, the base (rest) mesh, any unit.
        faces: (F, 3) int triangles.
        targets: (K, V, 3) float morph-target position deltas, the unit of ``vertices``.
        target_names: K names (``mesh.extras.targetNames``), unique.
        weights: (K,) the initial weights, or (T, K) per keyframe (row 0 is also the initial one).
        times: (T,) float seconds, increasing, one per row of ``weights``; needed for T > 1.
        rotation: (T, 3, 3) float node rotation per keyframe, or None (no pose animation).
        translation: (T, 3) float node translation per keyframe, the unit of ``vertices``.
        colors: (V, 3) float sRGB in [0, 1] (written linear as ``COLOR_0``), or None.
        morph_normals: also write each target's ``NORMAL`` deltas (larger file; better shading).
        name: the mesh and node name.
        extras: JSON-able ``asset.extras`` (e.g. ``{"unit": "mm"}``).

    Returns:
        The GLB file's bytes.

    Raises:
        ValueError: inconsistent shapes, non-finite values, duplicate names, decreasing times.
    """
    import pygltflib as g

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    d = np.asarray(targets, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices: expected (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"faces: expected (F, 3) indices into {len(v)} vertices")
    if d.ndim != 3 or d.shape[1:] != v.shape:
        raise ValueError(f"targets: expected (K, {len(v)}, 3), got {d.shape}")
    k = d.shape[0]
    names = [str(n) for n in target_names]
    if len(names) != k or len(set(names)) != k:
        raise ValueError(f"target_names: expected {k} unique names, got {len(names)} ({len(set(names))} unique)")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != k:
        raise ValueError(f"weights: expected (K,) or (T, K) with K = {k}, got {np.shape(weights)}")
    nt = w.shape[0]
    for label, a in (("vertices", v), ("targets", d), ("weights", w)):
        if not np.isfinite(a).all():
            raise ValueError(f"{label}: NaN or inf values")
    animated = nt > 1 or rotation is not None or translation is not None
    if animated:
        if times is None:
            raise ValueError("times: needed for an animation")
        ts = np.asarray(times, dtype=np.float64).reshape(-1)
        if ts.shape != (nt,) or not np.isfinite(ts).all() or (nt > 1 and not (np.diff(ts) > 0).all()):
            raise ValueError(f"times: expected {nt} finite, increasing seconds")
    if rotation is not None and np.shape(rotation) != (nt, 3, 3):
        raise ValueError(f"rotation: expected ({nt}, 3, 3), got {np.shape(rotation)}")
    if translation is not None and np.shape(translation) != (nt, 3):
        raise ValueError(f"translation: expected ({nt}, 3), got {np.shape(translation)}")

    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator="fitface (pygltflib)", extras=dict(extras or {})))
    gltf.buffers.append(g.Buffer())
    blob = _Blob(gltf)
    normals = vertex_normals(v, f)
    attrs = g.Attributes(
        POSITION=blob.add(v.astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True),
        NORMAL=blob.add(normals.astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER),
    )
    if colors is not None:
        c = np.asarray(colors, dtype=np.float64)
        if c.shape != (len(v), 3) or not np.isfinite(c).all():
            raise ValueError(f"colors: expected ({len(v)}, 3) finite sRGB values in [0, 1], got {c.shape}")
        attrs.COLOR_0 = blob.add(srgb_to_linear(c).astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER)
    indices = blob.add(f.astype(np.uint32).reshape(-1), "SCALAR", _UINT32, _ELEMENT_ARRAY_BUFFER, minmax=False)
    morphs = []
    for j in range(k):
        t = g.Attributes(POSITION=blob.add(d[j].astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True))
        if morph_normals:
            t.NORMAL = blob.add((vertex_normals(v + d[j], f) - normals).astype(np.float32), "VEC3", _FLOAT,
                                _ARRAY_BUFFER)
        morphs.append(t)
    material = g.Material(name=f"{name}-material", doubleSided=True,
                          pbrMetallicRoughness=g.PbrMetallicRoughness(
                              baseColorFactor=[1.0, 1.0, 1.0, 1.0] if colors is not None else [0.8, 0.7, 0.62, 1.0],
                              metallicFactor=0.0, roughnessFactor=0.7))
    gltf.materials.append(material)
    prim = g.Primitive(attributes=attrs, indices=indices, mode=g.TRIANGLES, material=0, targets=morphs or None)
    gltf.meshes.append(g.Mesh(name=name, primitives=[prim], weights=w[0].tolist() if k else None,
                              extras={"targetNames": names} if k else None))
    node = g.Node(name=name, mesh=0)
    if rotation is not None:
        node.rotation = matrix_to_quaternion(np.asarray(rotation)[:1])[0].tolist()
    if translation is not None:
        node.translation = np.asarray(translation, dtype=np.float64)[0].tolist()
    gltf.nodes.append(node)
    gltf.scenes.append(g.Scene(name=name, nodes=[0]))
    gltf.scene = 0

    if animated and nt > 1:
        inp = blob.add(ts.astype(np.float32), "SCALAR", _FLOAT, None, minmax=True)
        samplers, channels = [], []
        if k:
            out = blob.add(w.astype(np.float32).reshape(-1), "SCALAR", _FLOAT, None)
            samplers.append(g.AnimationSampler(input=inp, output=out, interpolation="LINEAR"))
            channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                               target=g.AnimationChannelTarget(node=0, path="weights")))
        if rotation is not None:
            out = blob.add(matrix_to_quaternion(rotation).astype(np.float32), "VEC4", _FLOAT, None)
            samplers.append(g.AnimationSampler(input=inp, output=out, interpolation="LINEAR"))
            channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                               target=g.AnimationChannelTarget(node=0, path="rotation")))
        if translation is not None:
            out = blob.add(np.asarray(translation, dtype=np.float32), "VEC3", _FLOAT, None)
            samplers.append(g.AnimationSampler(input=inp, output=out, interpolation="LINEAR"))
            channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                               target=g.AnimationChannelTarget(node=0, path="translation")))
        if channels:
            gltf.animations.append(g.Animation(name=f"{name}-animation", samplers=samplers, channels=channels))

    data = blob.bytes()
    gltf.buffers[0].byteLength = len(data)
    gltf.set_binary_blob(data)
    return b"".join(gltf.save_to_bytes())


def read_glb(data: bytes):
    """Parse GLB bytes with pygltflib: a ``pygltflib.GLTF2`` (its binary chunk via
    ``binary_blob()``)."""
    import pygltflib as g

    return g.GLTF2.load_from_bytes(data)


def accessor_array(gltf, index: int) -> np.ndarray:
    """The data of accessor ``index`` of a GLB read by :func:`read_glb` as a float64 or int64 array
    of shape (count,) for SCALAR, (count, n) for VECn (tightly packed, non-sparse accessors)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    dtype = {_FLOAT: np.float32, _UINT32: np.uint32, 5123: np.uint16, 5121: np.uint8}[acc.componentType]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    a = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    a = a.astype(np.float64 if dtype == np.float32 else np.int64)
    return a if width == 1 else a.reshape(acc.count, width)


__all__ = ["accessor_array", "glb_bytes", "matrix_to_quaternion", "read_glb", "srgb_to_linear", "vertex_normals"]
