"""``fitface data``: build, import and inspect training datasets."""

from __future__ import annotations

import click

from fitface.cli import LazyGroup

#: Subcommands of ``fitface data``: name -> "module:attribute".
DATA_COMMANDS: dict[str, str] = {
    "info": "fitface.cli.data_info:info",
    "import": "fitface.cli.data_import:import_",
    "synthetic": "fitface.cli.data_synthetic:synthetic",
    "ict": "fitface.cli.data_ict:ict",
}


@click.group(cls=LazyGroup, lazy=DATA_COMMANDS)
def data():
    """Build, import and inspect training datasets.

    \b
    A dataset is a folder of registered meshes in correspondence with per-sample
    labels (identity, expression, ...); see docs/formats.md.
    """
