"""What every trained baseline builder returns (:mod:`.mae`, :mod:`.coma`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fitface.models.face_model import FaceModel


@dataclass
class BaselineBuild:
    """A built baseline.

    Attributes:
        model: the built :class:`FaceModel` (float32, CPU, eval mode).
        report: JSON-serialisable dict of what the build did: epochs done, steps, per-epoch mean
            losses, seconds, stop reason, counts (also in ``model.metadata["baseline"]``).
    """

    model: FaceModel
    report: dict[str, Any] = field(default_factory=dict)
