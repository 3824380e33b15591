"""``fitface view RESULT -o view.html``: one self-contained HTML page that shows a result in 3D.

:func:`view` builds the result's GLB with the export API (:func:`fitface.api.export.export_result`)
and inlines it, three.js (with its glTF loader and orbit controls, the vendored bundle
``fitface/viewer/three_bundle.min.js``; rebuilt by ``fitface/viewer/js/build.sh``) and every
datum into ``fitface/viewer/template.html``. The page fetches nothing (its Content-Security-Policy
forbids it), so it opens from ``file://`` with no network, in any browser with WebGL. It shows:

* the fitted face (the GLB's mesh, with its morph targets and animation);
* a fit's scan (``codes.json: scan_file``) and landmarks (``landmarks_file`` targets in red, the
  fitted points ``target + landmark_residuals`` in blue, joined by lines), where they exist;
* per-vertex error colours with a legend in mm: a fit's distance from each fitted vertex to the
  scan's surface (exact point-to-triangle distance);
* one slider per expression target (the GLB's ``mesh.extras.targetNames``);
* play, pause and a frame slider for a sequence (a track or a retargeted sequence), with the
  export's per-frame RMS against fitface's own mesh;
* the ARKit-52 weights of ``arkit.json`` per frame, where the result folder has one.

Once loaded, the page states what it holds (for a test or a script): ``document.title`` reads
``fitface view: loaded targets=N frames=T duration=D errors=E`` and the hidden
``<pre id="fitface-status">`` holds the same as JSON (plus target names, vertex count and the
page's errors, which it collects from ``window.onerror`` and ``console.error``).

Convention:
    * glTF is Y-up and right-handed; the export decides the GLB's unit and axes (see
      :mod:`fitface.api.export`). The scan and landmarks are mapped into the face mesh's own
      coordinates (its POSITION accessor, initial morph weights applied) by a least-squares
      similarity from the fit's mesh (the capture's frame and unit, ``fit.*`` in the fit folder)
      and drawn as children of the face's node, so they share its unit, axes and pose whatever the
      export chose. Without a fit mesh of the same vertex count, the scan and landmarks are left
      out (a warning in the page's info).
    * Error values are millimetres (the capture unit converted with :data:`fitface.units.MM_PER_UNIT`),
      or the capture's own unit when it has none in mm (a photo fit: pixels).
    * The page is written atomically (:func:`fitface.io.atomic.write_text`): a failure leaves no
      half-written HTML and an existing file untouched.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fitface.api.inputs import PathLike
from fitface.errors import InputError

#: Placeholders of ``fitface/viewer/template.html``.
BUNDLE_MARK = "/*FITFACE_THREE_BUNDLE*/"
DATA_MARK = "/*FITFACE_DATA*/"
#: Scans with more triangles are shown with a random subset of this many (seeded; the page's size).
MAX_SCAN_FACES = 200_000
#: Point clouds (scans without faces) are shown with at most this many points.
MAX_SCAN_POINTS = 200_000
#: The legend's top is this quantile of the vertex errors (rounded up to a 1-2-5 number);
#: larger errors take the top colour (the legend says ">=").
LEGEND_QUANTILE = 0.95
#: Largest RMS of the similarity fit-mesh -> GLB mesh, as a fraction of the mesh's size, under which
#: the scan and landmarks are drawn (above it the two meshes do not correspond).
ALIGN_TOLERANCE = 0.05
#: Files that mark a result folder, by kind.
RESULT_MARKERS = {"fit": "codes.json", "track": "track.json", "retarget": "retarget.json"}


@dataclass
class ViewResult:
    """Result of :func:`view` (and :func:`write_page`).

    Attributes:
        path: the HTML file written.
        kind: ``"fit"``, ``"track"``, ``"retarget"`` (the export's kind) or what the caller said.
        num_targets: morph targets of the GLB's face mesh.
        num_frames: frames of the animation (1 for a still).
        fps: the animation's frame rate (None for a still).
        size_bytes: size of the page.
        scan: the scan is in the page. landmarks: the landmarks are. errors: per-vertex error
            colours are (``error_unit`` their unit, ``error_max`` the legend's top).
        notes: what was left out and why (also shown in the page).
    """

    path: Path
    kind: str
    num_targets: int
    num_frames: int
    fps: float | None
    size_bytes: int
    scan: bool = False
    landmarks: bool = False
    errors: bool = False
    error_unit: str | None = None
    error_max: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (``fitface view --json``)."""
        return {"path": str(self.path), "kind": self.kind, "num_targets": self.num_targets,
                "num_frames": self.num_frames, "fps": self.fps, "size_bytes": self.size_bytes, "scan": self.scan,
                "landmarks": self.landmarks, "errors": self.errors, "error_unit": self.error_unit,
                "error_max": self.error_max, "notes": list(self.notes)}


# ------------------------------------------------------------------------------ GLB reading
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


@dataclass
class GlbInfo:
    """What the page and the alignment need from a GLB (its first mesh's first primitive).

    Attributes:
        positions: (V, 3) float64 POSITION with the initial morph weights applied (mesh-local
            coordinates, the GLB's unit), or None when it cannot be read (sparse accessors).
        target_names: names of the morph targets (``mesh.extras.targetNames``; may be empty).
        num_targets: morph targets of the primitive.
        weight_range: (lo, hi) over the initial weights and every weight animation key, with
            [0, 1] always included (the sliders' range).
        num_keys: keyframes of the longest animation sampler (0 without animation).
        duration: the animation's last key time in seconds (0 without animation).
    """

    positions: np.ndarray | None
    target_names: list[str]
    num_targets: int
    weight_range: tuple[float, float]
    num_keys: int
    duration: float


def _accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    """(count, width) array of accessor ``index`` (normalized integers are not rescaled)."""
    acc = gltf.accessors[index]
    if acc.sparse is not None or acc.bufferView is None:
        raise ValueError("sparse or empty accessor")
    view = gltf.bufferViews[acc.bufferView]
    dtype = np.dtype(_COMPONENTS[acc.componentType])
    width = _WIDTH[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    stride = view.byteStride or dtype.itemsize * width
    if stride == dtype.itemsize * width:
        return np.frombuffer(blob, dtype, acc.count * width, start).reshape(acc.count, width)
    rows = [np.frombuffer(blob, dtype, width, start + i * stride) for i in range(acc.count)]
    return np.stack(rows)


def read_glb(glb: bytes) -> GlbInfo:
    """:class:`GlbInfo` of GLB bytes.

    Raises:
        InputError: not a GLB, or no mesh in it.
    """
    import pygltflib

    try:
        gltf = pygltflib.GLTF2.load_from_bytes(glb)
    except Exception as exc:  # pygltflib raises a variety of errors for bad bytes
        raise InputError(f"not a GLB file ({exc})") from None
    if not gltf.meshes or not gltf.meshes[0].primitives:
        raise InputError("the GLB holds no mesh")
    blob = gltf.binary_blob() or b""
    mesh = gltf.meshes[0]
    prim = mesh.primitives[0]
    targets = prim.targets or []
    extras = mesh.extras if isinstance(mesh.extras, dict) else {}
    names = [str(n) for n in extras.get("targetNames", [])]
    init = np.zeros(len(targets)) if not mesh.weights else np.asarray(mesh.weights, dtype=np.float64)
    for node in gltf.nodes or []:
        if node.mesh == 0 and getattr(node, "weights", None):  # pygltflib's Node may lack the field
            init = np.asarray(node.weights, dtype=np.float64)
    lo, hi = min(0.0, float(init.min(initial=0.0))), max(1.0, float(init.max(initial=1.0)))
    num_keys, duration = 0, 0.0
    positions = None
    try:
        positions = _accessor(gltf, blob, prim.attributes.POSITION).astype(np.float64)
        for w, t in zip(init, targets):
            if w and t.get("POSITION") is not None:
                positions = positions + w * _accessor(gltf, blob, t["POSITION"]).astype(np.float64)
        for anim in gltf.animations or []:
            for ch, sampler in ((c, anim.samplers[c.sampler]) for c in anim.channels):
                times = _accessor(gltf, blob, sampler.input)
                num_keys = max(num_keys, len(times))
                duration = max(duration, float(times.max(initial=0.0)))
                if ch.target.path == "weights":
                    out = _accessor(gltf, blob, sampler.output)
                    if out.dtype.kind == "f" and out.size:
                        lo, hi = min(lo, float(out.min())), max(hi, float(out.max()))
    except (ValueError, KeyError, IndexError, TypeError):
        positions = None
    return GlbInfo(positions, names, len(targets), (lo, hi), num_keys, duration)


# ------------------------------------------------------------------------------ page
def _b64(a: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def nice_ceil(x: float) -> float:
    """The smallest 1-2-5 number (..., 0.5, 1, 2, 5, 10, ...) >= ``x`` (1 for x <= 0)."""
    if not (x > 0 and math.isfinite(x)):
        return 1.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10.0**e >= x * (1 - 1e-12):
            return float(m * 10.0**e)
    return float(10.0 ** (e + 1))


def _script_safe(text: str) -> str:
    """Text that cannot end its ``<script>`` element early."""
    return text.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def bundle_text() -> str:
    """The vendored three.js bundle (``fitface/viewer/three_bundle.min.js``)."""
    return (resources.files("fitface") / "viewer" / "three_bundle.min.js").read_text(encoding="utf-8")


def page_html(glb: bytes, data: dict[str, Any]) -> str:
    """The page: the template with the bundle, the GLB (base64) and ``data`` inlined.

    ``data`` keys the page reads (all optional): name, kind, model, info (list of lines), fps,
    num_frames, frame_rms (per frame, mm), weight_min, weight_max, autoplay, face_color,
    vertex_errors {values: base64 float32 (V,), vmax, unit, title, note}, scan {positions: base64
    float32 (P*3,), faces: base64 uint32 (F*3,) or absent}, landmarks {targets, fitted: base64
    float32 (L*3,), radius}, arkit {names, weights (T, 52), note, residual_rms_mm}.
    """
    template = (resources.files("fitface") / "viewer" / "template.html").read_text(encoding="utf-8")
    doc = {"kind": "result", "weight_min": 0.0, "weight_max": 1.0, **data,
           "glb": base64.b64encode(glb).decode("ascii")}
    payload = json.dumps(doc, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    bundle = _script_safe(bundle_text())
    head, sep, tail = template.partition(BUNDLE_MARK)
    if not sep or DATA_MARK not in tail:
        raise RuntimeError("fitface/viewer/template.html lost its placeholders")
    pre, _, post = tail.partition(DATA_MARK)
    return head + bundle + pre + payload + post


def write_page(glb: bytes, output: PathLike, data: dict[str, Any] | None = None) -> ViewResult:
    """Write the page of any GLB (its face mesh, targets and animation) to ``output``, atomically.

    Args:
        glb: GLB bytes (glTF 2.0 binary).
        output: the HTML file (its folder is created).
        data: what the page shows beside the GLB (see :func:`page_html`); ``fps`` and
            ``num_frames`` default to the GLB's animation (30 fps assumed where not given).

    Raises:
        InputError: ``glb`` is no GLB with a mesh, or ``output`` is a folder.
    """
    from fitface.io.atomic import write_text

    out = Path(output)
    if out.is_dir():
        raise InputError("the output is a folder; give an .html file name", out)
    info = read_glb(glb)
    data = dict(data or {})
    lo, hi = info.weight_range
    if lo < 0:  # signed weights (PCA or expression-code targets): a symmetric range
        top = nice_ceil(max(-lo, hi))
        data.setdefault("weight_min", -top)
        data.setdefault("weight_max", top)
    else:
        data.setdefault("weight_max", nice_ceil(hi))
        data.setdefault("weight_min", 0.0)
    if info.num_keys:
        data.setdefault("fps", (info.num_keys - 1) / info.duration if info.duration > 0 else 30.0)
        data.setdefault("num_frames", info.num_keys)
    html = page_html(glb, data)
    write_text(out, html)
    errors = data.get("vertex_errors") or {}
    return ViewResult(out, str(data.get("kind", "result")), info.num_targets,
                      int(data.get("num_frames") or 1) if info.num_keys else 1,
                      float(data["fps"]) if info.num_keys else None, len(html.encode("utf-8")),
                      scan=bool(data.get("scan")), landmarks=bool(data.get("landmarks")), errors=bool(errors),
                      error_unit=errors.get("unit"), error_max=errors.get("vmax"), notes=list(data.get("notes", [])))


# ------------------------------------------------------------------------------ results
def result_kind(folder: Path) -> str:
    """``"fit"``, ``"track"`` or ``"retarget"`` from the folder's files (as the export reads them:
    retarget.json, else codes.npz or track.json, else codes.json).

    Raises:
        InputError: a missing path, a file, or a folder with none of codes.json, codes.npz,
            track.json, retarget.json.
    """
    if not folder.exists():
        raise InputError("no such result folder", folder)
    if not folder.is_dir():
        raise InputError("not a result folder (give the folder that fit, track or retarget wrote)", folder)
    if (folder / "retarget.json").is_file():
        return "retarget"
    if (folder / "codes.npz").is_file() or (folder / "track.json").is_file():
        return "track"
    if (folder / "codes.json").is_file():
        return "fit"
    raise InputError("no fitface result here (no codes.json, codes.npz, track.json or retarget.json): give the folder that "
                     "`fitface fit`, `track` or `retarget` wrote", folder)


def _fit_mesh(folder: Path) -> Path | None:
    from fitface.io.mesh import MESH_SUFFIXES

    for suffix in MESH_SUFFIXES:
        if (folder / f"fit{suffix}").is_file():
            return folder / f"fit{suffix}"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable JSON ({exc})", path) from None
    if not isinstance(doc, dict):
        raise InputError("not a JSON object", path)
    return doc


def _fit_extras(folder: Path, info: GlbInfo, data: dict[str, Any], show_scan: bool, show_landmarks: bool) -> None:
    """A fit folder's scan, landmarks and vertex errors, mapped into the GLB mesh's coordinates."""
    from fitface.fitting.similarity import umeyama
    from fitface.io.landmarks import load_landmarks
    from fitface.io.mesh import load_mesh
    from fitface.units import MM_PER_UNIT

    doc = _read_json(folder / "codes.json")
    unit = doc.get("unit")
    notes = data.setdefault("notes", [])
    info_lines = data.setdefault("info", [])
    to_mm = MM_PER_UNIT.get(unit) if isinstance(unit, str) else None
    err_unit = "mm" if to_mm else (str(unit) if unit else "px")
    rms = doc.get("landmark_rms")
    if isinstance(rms, (int, float)):
        info_lines.append(f"landmark RMS {rms * (to_mm or 1):.3g} {err_unit} ({len(doc.get('landmark_residuals') or [])}"
                          " landmarks)")
    mesh_path = _fit_mesh(folder)
    if mesh_path is None or info.positions is None:
        notes.append("no fit mesh (fit.*) to align the scan and landmarks with" if mesh_path is None
                     else "the GLB's mesh could not be read; scan and landmarks left out")
        return
    fit = load_mesh(mesh_path)
    if len(fit.vertices) != len(info.positions):
        notes.append(f"{mesh_path.name} has {len(fit.vertices)} vertices, the GLB {len(info.positions)}: "
                     "scan and landmarks left out")
        return
    sim = umeyama(fit.vertices, info.positions)
    mapped = sim.apply(fit.vertices)[0]
    size = float(np.linalg.norm(info.positions.max(0) - info.positions.min(0)))
    misfit = float(np.sqrt(np.mean(np.sum((mapped - info.positions) ** 2, axis=1))))
    if not (misfit <= ALIGN_TOLERANCE * size):
        notes.append(f"the GLB's mesh does not match {mesh_path.name} (RMS {misfit:.3g} of size {size:.3g}): "
                     "scan and landmarks left out")
        return
    to_glb = sim.apply  # capture frame -> GLB mesh-local coordinates
    glb_size = size

    scan_file = doc.get("scan_file")
    if show_scan and scan_file:
        scan_path = Path(scan_file)
        if not scan_path.is_absolute() and not scan_path.exists():
            scan_path = folder / scan_path
        try:
            scan = load_mesh(scan_path, require_faces=False)
        except InputError as exc:
            notes.append(f"scan left out: {exc}")
            scan = None
        if scan is not None:
            _add_scan(scan, fit.vertices, to_glb, to_mm, err_unit, data)
    lm_file = doc.get("landmarks_file")
    residuals = doc.get("landmark_residuals")
    if show_landmarks and lm_file and residuals is not None:
        try:
            targets = load_landmarks(lm_file, dims=3)
            res = np.asarray(residuals, dtype=np.float64)
            if res.shape != targets.shape:
                raise InputError(f"{len(targets)} landmarks in the file, {len(res)} residuals in codes.json", lm_file)
        except InputError as exc:
            notes.append(f"landmarks left out: {exc}")
        else:
            data["landmarks"] = {"targets": _b64(to_glb(targets)[0], np.float32),
                                 "fitted": _b64(to_glb(targets + res)[0], np.float32),
                                 "radius": 0.006 * glb_size}


def _add_scan(scan, fit_vertices: np.ndarray, to_glb, to_mm: float | None, err_unit: str,
              data: dict[str, Any]) -> None:
    """The scan (subsampled to :data:`MAX_SCAN_FACES`) and the fit's vertex-to-scan distances."""
    from fitface.evaluation.sparse_reconstruction import SurfaceDistance

    v, f = np.asarray(scan.vertices, dtype=np.float64), np.asarray(scan.faces, dtype=np.int64).reshape(-1, 3)
    rng = np.random.default_rng(0)
    note = ""
    if len(f):
        dist = SurfaceDistance(v, f)(fit_vertices)  # (V,) capture unit
        if len(f) > MAX_SCAN_FACES:
            f = f[np.sort(rng.choice(len(f), MAX_SCAN_FACES, replace=False))]
            note = f" (shown: {MAX_SCAN_FACES:,} of its triangles)"
        used, f = np.unique(f, return_inverse=True)
        v, f = v[used], f.reshape(-1, 3)
        data["scan"] = {"positions": _b64(to_glb(v)[0], np.float32), "faces": _b64(f, np.uint32)}
        what = "distance to the scan's surface"
    else:
        from scipy.spatial import cKDTree

        dist = cKDTree(v).query(fit_vertices)[0]
        if len(v) > MAX_SCAN_POINTS:
            v = v[np.sort(rng.choice(len(v), MAX_SCAN_POINTS, replace=False))]
            note = f" (shown: {MAX_SCAN_POINTS:,} of its points)"
        data["scan"] = {"positions": _b64(to_glb(v)[0], np.float32)}
        what = "distance to the nearest scan point"
    dist = dist * (to_mm or 1.0)
    vmax = nice_ceil(float(np.quantile(dist, LEGEND_QUANTILE)))
    data["vertex_errors"] = {"values": _b64(dist, np.float32), "vmax": vmax, "unit": err_unit,
                             "title": f"Error ({err_unit})",
                             "note": f"each fitted vertex's {what}; median {np.median(dist):.3g} {err_unit}{note}"}


def _arkit(folder: Path) -> dict[str, Any] | None:
    """``arkit.json``'s names and weights per frame ((T, 52) list), or None (absent or unreadable)."""
    path = folder / "arkit.json"
    if not path.is_file():
        return None
    try:
        doc = _read_json(path)
        names = [str(n) for n in doc["names"]]
        w = np.asarray(doc["weights"], dtype=np.float64)
        w = w.reshape(1, -1) if w.ndim == 1 else w
        if w.ndim != 2 or w.shape[1] != len(names) or not np.isfinite(w).all():
            return None
    except (InputError, KeyError, TypeError, ValueError):
        return None
    out: dict[str, Any] = {"names": names, "weights": np.round(w, 4).tolist()}
    for key in ("residual_rms_mm", "rms_mm"):
        v = doc.get(key)
        if isinstance(v, (int, float)) or (isinstance(v, list) and v and isinstance(v[0], (int, float))):
            out["residual_rms_mm"] = v if isinstance(v, (int, float)) else float(np.mean(v))
            break
    out["note"] = "solved per frame (bounded least squares, arkit.json)."
    return out


def _export_error(exp, data: dict[str, Any]) -> None:
    """The export's stated error (GLB's mesh against fitface's, per frame) into the page, in mm
    where the result's unit converts (``frame_rms`` is read in mm by the page)."""
    from fitface.units import MM_PER_UNIT

    rms = getattr(exp, "rms_mm", None)
    if rms is None:
        return
    a = np.atleast_1d(np.asarray(rms, dtype=np.float64)).ravel()
    unit = getattr(exp, "unit", "mm") or "mm"
    scale, shown = (MM_PER_UNIT[unit], "mm") if unit in MM_PER_UNIT else (1.0, unit)
    a = a * scale
    finite = a[np.isfinite(a)]
    if len(a) > 1 and shown == "mm":
        data["frame_rms"] = [float(x) if math.isfinite(x) else None for x in a]
    if len(finite):
        worst = " (worst frame)" if len(a) > 1 else ""
        data["info"].append(f"GLB vs fitface mesh: RMS {finite.max():.3g} {shown}{worst}")


def _export_arkit(exp) -> dict[str, Any] | None:
    """The export's ARKit-52 weights (ICT basis) for the page, or None."""
    a = getattr(exp, "arkit", None)
    if a is None:
        return None
    w = np.asarray(a.weights, dtype=np.float64).reshape(-1, len(a.names))
    res = np.asarray(getattr(a, "residual_rms_mm", []), dtype=np.float64).ravel()
    out: dict[str, Any] = {"names": list(a.names), "weights": np.round(w, 4).tolist(),
                           "note": "bounded least squares per frame, split pairs merged (fitface export --arkit)."}
    if len(res) and np.isfinite(res).all():
        out["residual_rms_mm"] = float(res.mean())
    return out


def _view_direction(folder: Path, kind: str) -> dict[str, list[float]] | None:
    """Where the camera looks from: the face's front (+Z of the model) and up (+Y), in the GLB's
    world frame. A fit or retarget bakes its pose (``transform``) into the vertices; a track's
    world is the photo frame (Y up, Z towards the viewer)."""
    if kind == "track":
        return {"front": [0.0, 0.0, 1.0], "up": [0.0, 1.0, 0.0]}
    doc_path = folder / ("retarget.json" if kind == "retarget" else "codes.json")
    try:
        rot = np.asarray(_read_json(doc_path)["transform"]["rotation"], dtype=np.float64)
    except (InputError, KeyError, TypeError, ValueError):
        return None
    if rot.shape != (3, 3) or not np.isfinite(rot).all():
        return None
    return {"front": rot[:, 2].tolist(), "up": rot[:, 1].tolist()}


def view(
    result: PathLike,
    output: PathLike | None = None,
    *,
    scan: bool = True,
    landmarks: bool = True,
    autoplay: bool = True,
    export_options: dict[str, Any] | None = None,
) -> ViewResult:
    """Write one self-contained HTML page that shows a fit, a track or a retargeted sequence.

    Args:
        result: the folder that ``fitface fit`` (codes.json), ``track`` (codes.npz, track.json) or
            ``retarget`` (retarget.json) wrote, or that file itself.
        output: the HTML file; default ``RESULT/view.html``.
        scan: show a fit's scan and its per-vertex error colours (when ``codes.json`` names a
            scan file that is still there).
        landmarks: show a fit's landmarks (targets and fitted points).
        autoplay: a sequence starts playing when the page opens.
        export_options: keyword arguments for :func:`fitface.api.export.export_result`.

    Returns:
        :class:`ViewResult`.

    Raises:
        InputError: not a result folder, or what the export refuses (one line, exit code 2 in
            the CLI); nothing is written then.
    """
    folder = Path(result)
    if folder.is_file() and folder.name in ("codes.json", "codes.npz", "retarget.json"):
        folder = folder.parent  # a result's own file names its folder
    kind = result_kind(folder)
    out = Path(output) if output is not None else folder / "view.html"
    if out.is_dir():
        raise InputError("the output is a folder; give an .html file name", out)
    from fitface.api.export import export_result

    exp = export_result(folder, None, **(export_options or {}))
    info = read_glb(exp.glb)
    kind = str(getattr(exp, "kind", None) or kind)
    data: dict[str, Any] = {"name": folder.resolve().name, "kind": kind, "autoplay": bool(autoplay),
                            "info": [], "notes": []}
    summary_file = folder / RESULT_MARKERS.get(kind, "codes.json")
    if summary_file.is_file():
        model = _read_json(summary_file).get("model")
        if isinstance(model, str):
            data["model"] = Path(model).name if ("/" in model or "\\" in model) else model
    frames = int(getattr(exp, "num_frames", 0) or 0)
    fps = getattr(exp, "fps", None)
    if frames > 1 and info.num_keys:
        data["num_frames"] = frames
        if fps:
            data["fps"] = float(fps)
    data["notes"] += [str(n) for n in getattr(exp, "notes", [])]
    _export_error(exp, data)
    if kind == "fit":
        _fit_extras(folder, info, data, scan, landmarks)
    view_dir = _view_direction(folder, kind)
    if view_dir is not None:
        data["view"] = view_dir
    arkit = _export_arkit(exp) or _arkit(folder)
    if arkit is not None:
        data["arkit"] = arkit
    data["info"] += [f"note: {n}" for n in data["notes"]]
    return write_page(exp.glb, out, data)
