"""The self-contained model file: one safetensors file with a JSON document in its header.

The layout (tensor names, shapes and dtypes; the document's fields; generator kinds ``"mlp"``,
``"linear"``, ``"multilinear"`` and ``"coma"``) and every reading check are in :mod:`fitface.io.model_file_format`, which this
module and the torch-free :func:`fitface.fitting.decoder.load_decoder` both read through (one
parse per load). This module writes files (:func:`save_model`, :func:`add_landmark_set`) and
loads them into torch (:func:`load_model`, :func:`load_discriminator`).

Convention:
    * ``model_id`` of a file = the first 16 hex digits of the sha256 of the file's bytes
      (:func:`file_model_id`). Two saves of the same weights differ (the ``created`` time is in
      the header), so the id names a file, not a set of weights.
    * ``half=True`` stores only the network weights (generator, discriminator) as float16; the
      template, UV and landmark arrays stay float32/float64 (they are small, and the template
      needs the precision: float16 spacing at 100 mm is 0.06 mm); so do a generator's
      ``exact_tensors()`` (a CoMA model's mesh hierarchy, float64 / int64). A half file loads as float32
      by default. At V = 22,129 the generator is 34.1 M parameters: 136 MB in float32, 68 MB
      in float16 (measured whole files with a 44k-triangle template: 137.9 MB and 69.7 MB).
    * Loading never unpickles: the file is parsed as safetensors (a JSON header plus raw
      little-endian buffers). Every problem raises :class:`fitface.errors.InputError` with a
      one-line message naming the file.
    * All files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitface.checks import check_face_index
from fitface.errors import InputError, one_line

# The format's constants and functions stay public names of this module (noqa: F401 for the
# ones it does not use itself: FORMAT, VERSION, GENERATOR_KINDS, MAX_HEADER_BYTES, ...).
from fitface.io.model_file_format import (  # noqa: F401
    DISCRIMINATOR_PREFIX,
    FORMAT,
    GENERATOR_KINDS,
    MAX_HEADER_BYTES,
    METADATA_KEY,
    MODEL_ID_HEX,
    VERSION,
    ExpectedTensors,
    ModelFile,
    check_tensor_headers,
    check_tensor_values,
    decode_tensors,
    expected_generator_tensors,
    expected_mesh_tensors,
    file_model_id,
    generator_kind,
    read_document,
    read_model_bytes,
)

from . import registry as _registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .discriminator import Discriminator
    from .face_model import FaceModel

#: The file of the default built-in model (:data:`fitface.models.registry.DEFAULT_MODEL`), for
#: reference only: every loader resolves ``None`` and built-in names through
#: :func:`fitface.models.registry.resolve_model` at call time.
DEFAULT_MODEL_PATH = _registry.BUILTIN_MODELS[_registry.DEFAULT_MODEL].path


def _generator_shell(gen: dict[str, Any], tensors: dict[str, Any] | None = None):
    """A generator of the configured kind and size, built on the current default device
    (call inside ``with torch.device("meta")`` to allocate nothing). A ``"coma"`` generator needs
    the file's ``generator.hierarchy.*`` tensors (``tensors``, names with the ``generator.``
    prefix) and is built on the CPU from them (its sparse operators hold values)."""
    kind = gen.get("kind", "mlp")
    if kind == "coma":
        import torch

        from .coma_generator import HIERARCHY_PREFIX, ComaGenerator

        prefix = "generator." + HIERARCHY_PREFIX
        with torch.device("cpu"):
            return ComaGenerator.empty(gen, {k[len(prefix):]: v for k, v in (tensors or {}).items()
                                             if k.startswith(prefix)})
    if kind == "linear":
        from .linear import LinearGenerator

        return LinearGenerator.empty(gen["latent_dim"], gen["num_vertices"])
    if kind == "multilinear":
        from .multilinear import MultilinearGenerator

        ni, nj = gen["identity_dim"], gen["expression_dim"]
        return MultilinearGenerator.empty(ni, nj, gen["num_vertices"], noise_dim=gen["latent_dim"] - ni - nj)
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
        # mlp: latent_dim, num_vertices, hidden, negative_slope; linear: kind, latent_dim, num_vertices;
        # multilinear: kind, latent_dim, num_vertices, identity_dim, expression_dim;
        # coma: those and sizes, encoder_filters, decoder_filters, order
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
    exact = getattr(model.generator, "exact_tensors", None)
    for name, a in (exact() if callable(exact) else {}).items():  # stored as they are (no cast)
        tensors[f"generator.{name}"] = torch.from_numpy(np.array(a, copy=True, order="C"))
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
def _resolve(path: str | os.PathLike | None) -> Path:
    """A model argument (``None`` = the default, a built-in name, or a path) as an existing file."""
    return _registry.resolve_model_path(path)


def read_metadata(path: str | os.PathLike | None) -> dict[str, Any]:
    """The validated JSON document of a model file, reading only its header (no torch import).

    Args:
        path: the model file, a built-in model name, or ``None`` for the default built-in model.

    Raises:
        InputError: missing file, not a safetensors file, no fitface metadata, wrong format
            version, malformed document, truncated file.
    """
    return read_document(_resolve(path))


def _expected_shapes(doc: dict[str, Any]) -> ExpectedTensors:
    """``{tensor name: (shape, "float" | "int")}`` that the document implies (all tensors): the
    generator's and the mesh's (:mod:`fitface.io.model_file_format`) and the discriminator's,
    whose shapes only its network knows."""
    import torch

    from .discriminator import Discriminator

    expected = expected_generator_tensors(doc)
    disc = doc.get("discriminator")
    if disc is not None:
        with torch.device("meta"):
            d = Discriminator(disc["num_classes"], disc["image_size"], float(disc["negative_slope"]))
        expected.update({f"{DISCRIMINATOR_PREFIX}{k}": (tuple(v.shape), "float") for k, v in d.state_dict().items()})
    expected.update(expected_mesh_tensors(doc))
    return expected


def read_model_file(path: str | os.PathLike | None) -> ModelFile:
    """Read and validate a whole model file (never unpickles).

    Raises:
        InputError: see :func:`read_metadata`, plus missing / unexpected tensors, shape or
            dtype mismatches, non-finite weights, face or landmark indices out of range.
    """
    from safetensors.torch import load as st_load

    p = _resolve(path)
    file = read_model_bytes(p)  # the one parse of the header and document
    check_tensor_headers(file.header, _expected_shapes(file.document), p)  # before materialising anything
    tensors = decode_tensors(file, st_load)
    check_tensor_values(tensors, file.document, p)
    return ModelFile(p, file.document, tensors, file.model_id)


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
        # Generator, LinearGenerator, MultilinearGenerator or ComaGenerator (built on the CPU from
        # its stored hierarchy), by kind
        gen = _generator_shell(doc["generator"], t)
    exact = set(gen.exact_tensors()) if hasattr(gen, "exact_tensors") else set()
    state = {k[len("generator."):]: v.to(dtype) for k, v in t.items()
             if k.startswith("generator.") and k[len("generator."):] not in exact}
    try:
        gen.load_state_dict(state, assign=True)
    except RuntimeError as exc:  # pragma: no cover (shapes were checked against the document)
        raise InputError(f"inconsistent model file: {one_line(exc)}", mf.path) from None
    gen = gen.to(dtype)
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
        raise InputError(f"inconsistent model file: {one_line(exc)}", mf.path) from None
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
    prefix = DISCRIMINATOR_PREFIX
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
        raise InputError(f"cannot read model tensors: {one_line(exc)}", src) from None


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
        raise InputError(f"cannot read model tensors: {one_line(exc)}", src) from None
    num_faces = int(tensors["faces"].shape[0])
    fi = np.ascontiguousarray(landmark_set.face_index, dtype=np.int64)
    check_face_index(f"landmark set {name!r}", fi, num_faces, src)
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
