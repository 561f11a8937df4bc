"""``ldeq``: the project's command line. Sub-commands live in small modules and import heavy stacks lazily."""

from __future__ import annotations

import typer

from ldeq_cli import (
    core_commands,
    data_commands,
    demo_commands,
    eval_commands,
    export_commands,
    models_commands,
    serve_commands,
    track_commands,
    train_commands,
)

app = typer.Typer(help="Stable video facial landmarks with Landmark DEQs and RwR.", no_args_is_help=True)
core_commands.register(app)
data_commands.register(app)
demo_commands.register(app)
train_commands.register(app)
eval_commands.register(app)
serve_commands.register(app)
models_commands.register(app)
track_commands.register(app)
export_commands.register(app)


if __name__ == "__main__":
    app()
