"""The `bolab` command: engine verbs (run, plot) and service verbs on one typer app."""

import typer

from bolab import export_cli, local_cli, service_cli
from bolab.keys_cli import keys_app

app = typer.Typer(
    help="bolab: benign-overfitting experiments, locally or on the lab service.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
local_cli.register(app)
service_cli.register(app)
export_cli.register(app)
app.add_typer(keys_app, name="keys")
