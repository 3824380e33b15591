"""The ``fitface`` command line: a thin layer over the Python API.

Commands load lazily (``import fitface.cli`` imports neither torch nor trimesh), so
``fitface --help`` and a landmark-only ``fitface fit`` start fast.

Exit codes (:data:`fitface.errors.EXIT_CODES`): 0 success; 2 bad input or usage (one line on
stderr, no traceback); 3 no face found in an image; 4 some captures of a batch failed (the
others were fitted); 1 an unexpected internal error; 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from fitface import __version__
from fitface.errors import FitfaceError, FitfaceWarning


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use.

    ``lazy`` maps a command name to ``"module.path:attribute"``.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


#: Top-level commands: name -> "module:attribute". Each command lives in its own module.
COMMANDS = {
    "data": "fitface.cli.data:data",
    "demo": "fitface.cli.demo:demo",
    "train": "fitface.cli.train:train",
    "fit": "fitface.cli.fit:fit",
    "batch": "fitface.cli.batch:batch",
    "retarget": "fitface.cli.retarget:retarget",
    "sample": "fitface.cli.sample:sample",
    "interpolate": "fitface.cli.sample:interpolate",
    "landmarks": "fitface.cli.landmarks:landmarks",
    "lift": "fitface.cli.lift:lift",
    "baseline": "fitface.cli.baseline:baseline",
    "evaluate": "fitface.cli.evaluate:evaluate",
    "models": "fitface.cli.models:models",
    "track": "fitface.cli.track:track",
    "export": "fitface.cli.export:export",
    "view": "fitface.cli.view:view",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="fitface")
def cli():
    """fitface: fit, train and evaluate a decoupled identity/expression 3D face model.

    \b
    Reconstruct faces from sparse landmarks (fit, batch, lift), move expressions
    between faces (retarget), sample and interpolate the latent space (sample),
    train the GAN on your own registered scans (data, train) and measure models
    with the paper's metrics (evaluate). Start with `fitface demo -o DIR`;
    `fitface models` lists the built-in models (--model NAME).

    Run `fitface COMMAND --help` for each command's options.
    Exit codes: 0 success, 2 bad input, 3 no face in an image, 4 some
    captures of a batch failed, 1 internal error.
    """


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=None):
    """fitface's own warnings as one line ``warning: ...`` on stderr; others as Python shows them."""
    if issubclass(category, FitfaceWarning):
        click.echo(f"warning: {' '.join(str(message).split())}", err=True)
    elif _default is not None:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fitface`` script; returns (and exits with) the exit code."""
    import functools
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always", FitfaceWarning)
        warnings.showwarning = functools.partial(_show_warning, _default=warnings.showwarning)
        code = _run(argv)
    if argv is None:
        sys.exit(code)
    return code


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="fitface", standalone_mode=False)
        code = 0
    except click.exceptions.Exit as exc:  # --help, --version
        code = exc.exit_code
    except click.ClickException as exc:  # usage errors: one line, exit 2
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except FitfaceError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    return code
