"""The self-contained model file: one safetensors file with a JSON document in its header.

Layout of a model file (``*.safetensors``, format ``"fitface-model"``, version 1):

    tensors
        generator.fc.weight (H, D), generator.fc.bias (H,),
        generator.out.weight (3V, H), generator.out.bias (3V,)     float32 (float16 if half)
            -- or, for a linear model (generator kind "linear", the 3DMM baseline):
        generator.basis (3V, D), generator.offset (3V,)            float32 (float16 if half)
        template (V, 3) float32, model unit       faces (F, 3) int64       uv (V, 2) float32
        landmarks.<name>.face_index (L,) int64    landmarks.<name>.bary (L, 3) float64
        discriminator.* (optional; present when save_model got a discriminator; float16 if half)
    header metadata (safetensors' str -> str map), one key:
        "fitface": a JSON document, see :func:`build_document` (format, version, fitface
        version, created, unit, latent layout, factors with class names, image size,
        generator config, landmark set names, discriminator config or null, storage dtype,
        training config, data fingerprint, notes, metadata).

The generator config has a ``"kind"``: ``"mlp"`` (the GAN's
:class:`~fitface.models.generator.Generator`: latent_dim, num_vertices, hidden,
negative_slope) or ``"linear"`` (:class:`~fitface.models.linear.LinearGenerator`:
latent_dim, num_vertices). A config without ``"kind"`` is ``"mlp"``: GAN files are written
without it, as by earlier versions, so old and new files read alike (see :func:`generator_kind`).

Convention:
    * ``model_id`` of a file = the first 16 hex digits of the sha256 of the file's bytes
      (:func:`file_model_id`). Two saves of the same weights differ (the ``created`` time is in
      the header), so the id names a file, not a set of weights.
    * ``half=True`` stores only the network weights (generator, discriminator) as float16; the
      template, UV and landmark arrays stay float32/float64 (they are small, and the template
      needs the precision: float16 spacing at 100 mm is 0.06 mm). A half file loads as float32
      by default. At V = 22,129 the generator is 34.1 M parameters: 136 MB in float32, 68 MB
      in float16 (measured whole files with a 44k-triangle template: 137.9 MB and 69.7 MB).
    * Loading never unpickles: the file is parsed as safetensors (a JSON header plus raw
      little-endian buffers). Every problem raises :class:`fitface.errors.InputError` with a
      one-line message naming the file.
    * All files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitface.errors import InputError

from . import registry as _registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .discriminator import Discriminator
    from .face_model import FaceModel

#: Value of the document's "format" field.
FORMAT = "fitface-model"
#: Format version written and read by this fitface.
VERSION = 1
#: Key of the JSON document in the safetensors header metadata.
METADATA_KEY = "fitface"
#: Generator kinds a model file may hold (``document["generator"]["kind"]``, default "mlp").
GENERATOR_KINDS = ("mlp", "linear")
#: Largest accepted safetensors header (bytes); safetensors itself uses the same bound.
MAX_HEADER_BYTES = 100_000_000
#: Number of hex digits of a model id.
MODEL_ID_HEX = 16
#: The file of the default built-in model (:data:`fitface.models.registry.DEFAULT_MODEL`), for
#: reference only: every loader resolves ``None`` and built-in names through
#: :func:`fitface.models.registry.resolve_model` at call time.
DEFAULT_MODEL_PATH = _registry.BUILTIN_MODELS[_registry.DEFAULT_MODEL].path

_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def file_model_id(data: bytes) -> str:
    """Model id of a file's bytes: the first 16 hex digits of their sha256."""
    return hashlib.sha256(data).hexdigest()[:MODEL_ID_HEX]


def generator_kind(document: dict[str, Any]) -> str:
    """The generator kind of a (validated) model document: ``"mlp"`` or ``"linear"``
    (``"mlp"`` when the generator config has no ``"kind"``)."""
    return str(document["generator"].get("kind", "mlp"))


def _generator_shell(gen: dict[str, Any]):
    """A generator of the configured kind and size, built on the current default device
    (call inside ``with torch.device("meta")`` to allocate nothing)."""
    kind = gen.get("kind", "mlp")
    if kind == "linear":
        from .linear import LinearGenerator

        return LinearGenerator.empty(gen["latent_dim"], gen["num_vertices"])
    from .generator import Generator

    return Generator(gen["latent_dim"], gen["num_vertices"], gen["hidden"], float(gen["negative_slope"]))


# ------------------------------------------------------------------------------ writing
def build_document(
    model: "FaceModel",
    discriminator: "Discriminator | None" = None,
    training_config: dict | None = None,
    data_fingerprint: str | None = None,
    half: bool = False,
    notes: str = "",
) -> dict[str, Any]:
    """The JSON document stored under the header key ``"fitface"`` (JSON-serialisable dict)."""
    import fitface

    layout = model.layout
    return {
        "format": FORMAT,
        "version": VERSION,
        "fitface_version": fitface.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "unit": model.unit,
        "latent_layout": layout.to_json(),
        # factor -> class names, in layout order ([] = factor without labelled classes)
        "factors": {f: list(model.classes.get(f, [])) for f in layout.factors},
        "image_size": model.image_size,
        "num_vertices": model.num_vertices,
        "num_faces": int(model.faces.shape[0]),
        # mlp: latent_dim, num_vertices, hidden, negative_slope; linear: kind, latent_dim, num_vertices
        "generator": model.generator.config(),
        "landmark_sets": list(model.landmark_sets),
        "discriminator": None if discriminator is None else discriminator.config(),
        "storage_dtype": "float16" if half else "float32",
        "training_config": dict(training_config or {}),
        "data_fingerprint": data_fingerprint,
        "notes": str(notes),
        "metadata": dict(model.metadata),
    }


def _tensors_for(model: "FaceModel", discriminator: "Discriminator | None", half: bool) -> dict[str, "torch.Tensor"]:
    import numpy as np
    import torch

    def net(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float16 if half else torch.float32)
        return t.contiguous()

    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.generator.state_dict().items():
        tensors[f"generator.{name}"] = net(t)
    if discriminator is not None:
        for name, t in discriminator.state_dict().items():
            tensors[f"discriminator.{name}"] = net(t)
    tensors["template"] = model.template.detach().cpu().float().contiguous()
    tensors["faces"] = model.faces.detach().cpu().long().contiguous()
    tensors["uv"] = model.uv.detach().cpu().float().contiguous()
    for name, lset in model.landmark_sets.items():
        face_index = np.ascontiguousarray(lset.face_index, dtype=np.int64)
        tensors[f"landmarks.{name}.face_index"] = torch.from_numpy(face_index)
        tensors[f"landmarks.{name}.bary"] = torch.from_numpy(np.ascontiguousarray(lset.bary, dtype=np.float64))
    return tensors


def save_model(
    path: str | os.PathLike,
    model: "FaceModel",
    discriminator: "Discriminator | None" = None,
    training_config: dict | None = None,
    data_fingerprint: str | None = None,
    half: bool = False,
    notes: str = "",
) -> str:
    """Write ``model`` (and optionally its discriminator, for resuming / fine-tuning) to one file.

    Args:
        path: destination, conventionally ``*.safetensors``; written atomically.
        model: the :class:`FaceModel`.
        discriminator: if given, its weights are stored as ``discriminator.*`` and its config
            in the document (:func:`load_discriminator` restores it).
        training_config: JSON-serialisable dict (non-JSON values such as paths are stored
            as ``str``).
        data_fingerprint: the training dataset's fingerprint.
        half: store network weights as float16 (see module doc).
        notes: free text.

    Returns:
        The file's model id (also set as ``model.model_id``).
    """
    from safetensors.torch import save as st_save

    from fitface.io.atomic import write_bytes

    if discriminator is not None and discriminator.image_size != model.image_size:
        raise ValueError(
            f"discriminator: image_size {discriminator.image_size} != model image_size {model.image_size}"
        )
    doc = build_document(model, discriminator, training_config, data_fingerprint, half, notes)
    text = json.dumps(doc, default=str, ensure_ascii=True)
    data = st_save(_tensors_for(model, discriminator, half), metadata={METADATA_KEY: text})
    write_bytes(path, data)
    model._model_id = file_model_id(data)
    return model._model_id


# ------------------------------------------------------------------------------ reading
def _parse_header(prefix: bytes, file_size: int, path: Path) -> dict[str, Any]:
    """Parse a safetensors header from the file's first bytes (``prefix`` holds at least the
    whole header when the file is valid); returns the header dict."""
    bad = "not a fitface model file"
    if file_size < 8 or len(prefix) < 8:
        raise InputError(f"{bad}: {file_size} bytes is too short for a safetensors file", path)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise InputError(f"{bad}: not a safetensors file (header length field {n} is implausible)", path)
    if 8 + n > file_size:
        raise InputError(f"{bad}: truncated safetensors header ({8 + n} bytes announced, file has {file_size})", path)
    try:
        header = json.loads(prefix[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{bad}: not a safetensors file (header is not JSON: {_one_line(exc)})", path) from None
    if not isinstance(header, dict):
        raise InputError(f"{bad}: not a safetensors file (header is not a JSON object)", path)
    data_size = file_size - 8 - n
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{bad}: malformed safetensors entry for tensor {name!r}", path) from None
        end = max(end, stop)
    if end > data_size:
        raise InputError(f"truncated model file: tensor data needs {end} bytes, file holds {data_size}", path)
    return header


def _document(header: dict[str, Any], path: Path) -> dict[str, Any]:
    """Extract and validate the fitface JSON document from a safetensors header."""
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or METADATA_KEY not in meta:
        raise InputError(f"not a fitface model file: a safetensors file without {METADATA_KEY!r} metadata", path)
    try:
        doc = json.loads(meta[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed fitface metadata (not JSON: {_one_line(exc)})", path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"not a fitface model file: metadata format is {got!r}, expected {FORMAT!r}", path)
    if doc.get("version") != VERSION:
        raise InputError(
            f"unsupported fitface model format version {doc.get('version')!r} (this fitface "
            f"{_fitface_version()} reads version {VERSION})",
            path,
        )
    _validate_document(doc, path)
    return doc


def _fitface_version() -> str:
    import fitface

    return fitface.__version__


def _validate_document(doc: dict[str, Any], path: Path) -> None:
    from fitface.units import UNITS

    from .latent import LatentLayout

    def need(key: str, kind: type) -> Any:
        """``doc[key]``, which must be of JSON type ``kind`` (str, int, list or dict; a bool is not an int)."""
        if key not in doc:
            raise InputError(f"malformed fitface metadata: missing {key!r}", path)
        value = doc[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"malformed fitface metadata: {key!r} has type {type(value).__name__}", path)
        return value

    unit = need("unit", str)
    if unit not in UNITS:
        raise InputError(f"malformed fitface metadata: unknown unit {unit!r}", path)
    try:
        layout = LatentLayout.from_json(need("latent_layout", list))
    except ValueError as exc:
        raise InputError(f"malformed fitface metadata: {_one_line(exc)}", path) from None
    factors = need("factors", dict)
    if list(factors) != list(layout.factors) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in factors.values()
    ):
        raise InputError(
            f"malformed fitface metadata: factors {list(factors)} do not match the layout's {list(layout.factors)}",
            path,
        )
    if need("image_size", int) <= 0:
        raise InputError("malformed fitface metadata: image_size must be positive", path)
    nv, nf = need("num_vertices", int), need("num_faces", int)
    if nv <= 0 or nf <= 0:
        raise InputError("malformed fitface metadata: num_vertices and num_faces must be positive", path)
    gen = need("generator", dict)
    gen_kind = gen.get("kind", "mlp")
    if gen_kind not in GENERATOR_KINDS:
        raise InputError(f"malformed fitface metadata: unknown generator kind {gen_kind!r} "
                         f"(this fitface {_fitface_version()} reads {', '.join(GENERATOR_KINDS)})", path)
    ints = ("latent_dim", "num_vertices", "hidden") if gen_kind == "mlp" else ("latent_dim", "num_vertices")
    for key in ints:
        if not isinstance(gen.get(key), int) or isinstance(gen.get(key), bool) or gen[key] <= 0:
            raise InputError(f"malformed fitface metadata: generator.{key} must be a positive int", path)
    if gen_kind == "mlp" and (not isinstance(gen.get("negative_slope"), (int, float))
                          or isinstance(gen.get("negative_slope"), bool)):
        raise InputError("malformed fitface metadata: generator.negative_slope must be a number", path)
    if gen["latent_dim"] != layout.dim or gen["num_vertices"] != nv:
        raise InputError(
            f"malformed fitface metadata: generator config {gen} disagrees with layout dim {layout.dim} "
            f"/ num_vertices {nv}",
            path,
        )
    sets = need("landmark_sets", list)
    if not all(isinstance(s, str) and s and "." not in s for s in sets) or len(set(sets)) != len(sets):
        raise InputError(f"malformed fitface metadata: bad landmark set names {sets}", path)
    disc = doc.get("discriminator")
    if disc is not None:
        ok = (
            isinstance(disc, dict)
            and isinstance(disc.get("num_classes"), dict)
            and all(isinstance(v, int) and v > 0 for v in disc["num_classes"].values())
            and isinstance(disc.get("image_size"), int)
            and isinstance(disc.get("negative_slope"), (int, float))
        )
        if not ok:
            raise InputError("malformed fitface metadata: bad discriminator config", path)
    if doc.get("storage_dtype") not in ("float32", "float16"):
        raise InputError(f"malformed fitface metadata: storage_dtype {doc.get('storage_dtype')!r}", path)
    for key in ("training_config", "metadata"):
        if not isinstance(doc.get(key, {}), dict):
            raise InputError(f"malformed fitface metadata: {key!r} must be an object", path)


def _resolve(path: str | os.PathLike | None) -> Path:
    """A model argument (``None`` = the default, a built-in name, or a path) as an existing file."""
    from .registry import resolve_model_path

    return resolve_model_path(path)


def read_metadata(path: str | os.PathLike | None) -> dict[str, Any]:
    """The validated JSON document of a model file, reading only its header (no torch import).

    Raises:
        InputError: missing file, not a safetensors file, no fitface metadata, wrong format
            version, malformed document, truncated file.
    """
    p = _resolve(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            prefix = head + (f.read(n) if 2 <= n <= min(MAX_HEADER_BYTES, size - 8) else b"")
    except OSError as exc:
        raise InputError(f"cannot read model file: {_one_line(exc.strerror or exc)}", p) from None
    return _document(_parse_header(prefix, size, p), p)


class ModelFile:
    """A parsed, validated model file (tensors on CPU, as stored).

    Attributes:
        path: the file.
        document: the JSON document (dict).
        tensors: ``{name: tensor}``.
        model_id: sha256 prefix of the file's bytes.
    """

    def __init__(self, path: Path, document: dict[str, Any], tensors: dict[str, "torch.Tensor"], model_id: str):
        self.path, self.document, self.tensors, self.model_id = path, document, tensors, model_id


def _expected_shapes(doc: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{tensor name: (shape, "float" | "int")}`` that the document implies (all tensors)."""
    import torch

    from .discriminator import Discriminator

    with torch.device("meta"):
        g = _generator_shell(doc["generator"])
        expected = {f"generator.{k}": (tuple(v.shape), "float") for k, v in g.state_dict().items()}
        disc = doc.get("discriminator")
        if disc is not None:
            d = Discriminator(disc["num_classes"], disc["image_size"], float(disc["negative_slope"]))
            expected.update({f"discriminator.{k}": (tuple(v.shape), "float") for k, v in d.state_dict().items()})
    expected.update(expected_mesh_tensors(doc))
    return expected


def expected_mesh_tensors(doc: dict[str, Any]) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """The non-network tensors a document implies: template, faces, uv and every landmark set's
    ``face_index`` / ``bary`` (``None`` = any length). Torch-free."""
    nv, nf = doc["num_vertices"], doc["num_faces"]
    expected: dict[str, tuple[tuple[int | None, ...], str]] = {
        "template": ((nv, 3), "float"), "faces": ((nf, 3), "int"), "uv": ((nv, 2), "float")}
    for name in doc["landmark_sets"]:
        expected[f"landmarks.{name}.face_index"] = ((None,), "int")
        expected[f"landmarks.{name}.bary"] = ((None, 3), "float")
    return expected


def check_tensor_headers(header: dict[str, Any], expected: dict[str, tuple[tuple[int | None, ...], str]], p: Path,
                         float_dtypes=_FLOAT_DTYPES, also_allowed: str | None = None) -> None:
    """Check the safetensors header's entries against ``expected`` before loading anything.

    Raises:
        InputError: a missing or unexpected tensor (names starting with ``also_allowed`` are
            tolerated), a shape or dtype mismatch.
    """
    present = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = [k for k in expected if k not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"model file is missing tensor {missing[0]!r}{more}", p)
    extra = [k for k in present if k not in expected and not (also_allowed and k.startswith(also_allowed))]
    if extra:
        raise InputError(f"model file has unexpected tensor {extra[0]!r}", p)
    for name, (shape, kind) in expected.items():
        entry = present[name]
        got = tuple(entry.get("shape", ()))
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
            raise InputError(f"tensor {name!r} has shape {got}, expected {want}", p)
        if entry.get("dtype") not in (float_dtypes if kind == "float" else _INT_DTYPES):
            raise InputError(f"tensor {name!r} has dtype {entry.get('dtype')}, expected {kind}", p)


def check_tensor_values(arrays, doc: dict[str, Any], p: Path) -> None:
    """Check loaded tensors (numpy arrays or CPU torch tensors): landmark sets consistent and in
    range, face indices in range, every floating tensor finite.

    Raises:
        InputError: naming the tensor and the problem.
    """
    import numpy as np

    for name in doc["landmark_sets"]:
        fi, bary = np.asarray(arrays[f"landmarks.{name}.face_index"]), arrays[f"landmarks.{name}.bary"]
        if fi.shape[0] != bary.shape[0]:
            raise InputError(f"landmark set {name!r}: {fi.shape[0]} face indices but {bary.shape[0]} bary rows", p)
        if fi.size and (int(fi.min()) < 0 or int(fi.max()) >= doc["num_faces"]):
            raise InputError(f"landmark set {name!r}: face_index out of range [0, {doc['num_faces']})", p)
    faces = np.asarray(arrays["faces"])
    if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= doc["num_vertices"]):
        raise InputError(f"faces: vertex index out of range [0, {doc['num_vertices']})", p)
    for name, t in arrays.items():
        a = t.detach().float().numpy() if hasattr(t, "detach") and t.is_floating_point() else np.asarray(t)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"tensor {name!r} holds NaN or inf", p)


def read_model_file(path: str | os.PathLike | None) -> ModelFile:
    """Read and validate a whole model file (never unpickles).

    Raises:
        InputError: see :func:`read_metadata`, plus missing / unexpected tensors, shape or
            dtype mismatches, non-finite weights, face or landmark indices out of range.
    """
    from safetensors.torch import load as st_load

    p = _resolve(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model file: {_one_line(exc.strerror or exc)}", p) from None
    header = _parse_header(data, len(data), p)
    doc = _document(header, p)

    check_tensor_headers(header, _expected_shapes(doc), p)  # before materialising anything
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types; nothing is unpickled
        raise InputError(f"corrupt safetensors data: {_one_line(exc)}", p) from None
    check_tensor_values(tensors, doc, p)
    return ModelFile(p, doc, tensors, file_model_id(data))


def load_model(
    path: str | os.PathLike | None = None, device: "str | torch.device" = "cpu", dtype: "torch.dtype | None" = None
) -> "FaceModel":
    """Load a :class:`FaceModel` from a model file (never unpickles; validates everything).

    Args:
        path: the model file, a built-in model name (``"procedural"``, ``"ict"``, ``"ict-linear"``:
            :mod:`fitface.models.registry`), or ``None`` for the default built-in model.
        device: where to put the model.
        dtype: float dtype of the model (default float32, also for files stored in half).

    Returns:
        The model in eval mode, ``model.model_id`` = the file's id.

    Raises:
        InputError: with a one-line message naming the file (see :func:`read_model_file`).
    """
    import torch
    from fitface.landmarks.sets import LandmarkSet

    from .face_model import FaceModel
    from .latent import LatentLayout

    dtype = torch.float32 if dtype is None else dtype
    mf = read_model_file(path)
    doc, t = mf.document, mf.tensors
    with torch.device("meta"):
        gen = _generator_shell(doc["generator"])  # Generator or LinearGenerator, by kind
    state = {k[len("generator."):]: v.to(dtype) for k, v in t.items() if k.startswith("generator.")}
    gen.load_state_dict(state, assign=True)
    gen = gen.to(device)
    landmark_sets = {
        name: LandmarkSet(name, t[f"landmarks.{name}.face_index"].numpy().astype("int64"),
                          t[f"landmarks.{name}.bary"].double().numpy())
        for name in doc["landmark_sets"]
    }
    try:
        model = FaceModel(
            t["template"], t["faces"], t["uv"], LatentLayout.from_json(doc["latent_layout"]), gen,
            unit=doc["unit"], landmark_sets=landmark_sets, image_size=doc["image_size"],
            classes={k: v for k, v in doc["factors"].items() if v}, metadata=doc.get("metadata", {}),
        )
    except ValueError as exc:
        raise InputError(f"inconsistent model file: {_one_line(exc)}", mf.path) from None
    model._model_id = mf.model_id
    return model.eval()


def load_discriminator(
    path: str | os.PathLike | None, device: "str | torch.device" = "cpu", dtype: "torch.dtype | None" = None
) -> "Discriminator | None":
    """The discriminator stored in a model file (for resuming / fine-tuning), or ``None`` when
    the file has none. Raises :class:`InputError` like :func:`load_model`."""
    import torch

    from .discriminator import Discriminator

    dtype = torch.float32 if dtype is None else dtype
    mf = read_model_file(path)
    cfg = mf.document.get("discriminator")
    if cfg is None:
        return None
    with torch.device("meta"):
        disc = Discriminator(cfg["num_classes"], cfg["image_size"], float(cfg["negative_slope"]))
    prefix = "discriminator."
    disc.load_state_dict({k[len(prefix):]: v.to(dtype) for k, v in mf.tensors.items() if k.startswith(prefix)},
                         assign=True)
    return disc.to(device)


def read_tensor(path: str | os.PathLike, key: str):
    """One tensor of a model file as a numpy array, without torch (e.g. ``"faces"``)."""
    from safetensors import safe_open

    src = Path(path)
    try:
        with safe_open(str(src), framework="np") as f:
            if key not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise InputError(f"model file has no tensor {key!r}", src)
            return f.get_tensor(key)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 (safetensors' own error types)
        raise InputError(f"cannot read model tensors: {_one_line(exc)}", src) from None


def add_landmark_set(path: str | os.PathLike, landmark_set, out: str | os.PathLike | None = None,
                     replace: bool = False, metadata: dict[str, Any] | None = None) -> str:
    """Store ``landmark_set`` (a :class:`fitface.landmarks.sets.LandmarkSet`) in a model file.

    The set is stored like the built-in ones (``landmarks.<name>.face_index`` / ``.bary``
    tensors and its name in the document's ``landmark_sets``); every other tensor and field is
    kept. Written atomically to ``out`` (default: in place; a built-in model needs ``out``); the
    new header is validated before it replaces anything. The file's hash, hence its ``model_id``, changes. ``metadata`` keys
    are merged into the document's ``metadata`` (e.g. how the set was made).

    Returns:
        The new file's model id.

    Raises:
        InputError: not a model file, a bad set name, a set of that name exists (unless
            ``replace``), or triangle indices out of range.
    """
    import re

    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save as st_save

    from fitface.io.atomic import atomic_path

    src = _registry.editable_source(path, out)
    doc = read_metadata(src)
    name = landmark_set.name
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(name) or ""):
        raise InputError(f"landmark set name {name!r}: use letters, digits, '_' or '-' (no '.')")
    if name in doc["landmark_sets"] and not replace:
        raise InputError(f"the model already has a landmark set {name!r} (pass --replace to overwrite it)", src)
    try:
        with safe_open(str(src), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # noqa: BLE001 (safetensors' own error types)
        raise InputError(f"cannot read model tensors: {_one_line(exc)}", src) from None
    num_faces = int(tensors["faces"].shape[0])
    fi = np.ascontiguousarray(landmark_set.face_index, dtype=np.int64)
    if fi.size and (fi.min() < 0 or fi.max() >= num_faces):
        raise InputError(f"landmark set {name!r}: triangle index out of range [0, {num_faces})", src)
    tensors[f"landmarks.{name}.face_index"] = fi
    tensors[f"landmarks.{name}.bary"] = np.ascontiguousarray(landmark_set.bary, dtype=np.float64)
    if name not in doc["landmark_sets"]:
        doc["landmark_sets"].append(name)
    if metadata:
        doc["metadata"] = {**dict(doc.get("metadata") or {}), **metadata}
    data = st_save(tensors, metadata={METADATA_KEY: json.dumps(doc, default=str, ensure_ascii=True)})
    target = Path(out) if out is not None else src
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
        read_metadata(tmp)  # the new header must validate before it replaces anything
    return file_model_id(data)
