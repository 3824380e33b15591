"""Built-in models by name (re-export): this module is :mod:`fitface.io.model_registry`.

Fitting resolves built-in names ("ict", ...) and the core (fitting, data, io, geometry) imports
nothing from ``fitface.models``, so the registry lives there. ``fitface.models.registry`` is the
same module object, not a copy: reading or patching ``DEFAULT_MODEL``, ``MODELS_DIR`` or
``BUILTIN_MODELS`` here is reading or patching the one registry every loader uses.
"""

import sys

from fitface.io import model_registry

sys.modules[__name__] = model_registry
