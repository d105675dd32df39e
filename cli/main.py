"""The ``churn`` command line: one entry point, one sub-command per lifecycle step.

Each command group lives in ``cli/commands/<group>.py`` and imports its heavy libraries
inside the command, so ``churn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import warnings

import typer

# Third-party deprecation chatter (ibis, feast) is noise for a CLI user; our own warnings still show.
for _mod in ("ibis", "feast", "duckdb"):
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=rf"{_mod}(\.|$)")

app = typer.Typer(
    name="churn",
    help="churn-platform: data → features → training → serving → monitoring → retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, group name or None for top-level commands)
_COMMAND_MODULES: list[tuple[str, str | None]] = [
    ("cli.commands.data", "data"),
    ("cli.commands.features", "features"),
    ("cli.commands.train", None),
    ("cli.commands.models", "models"),
    ("cli.commands.serve", None),
    ("cli.commands.jobs", None),
    ("cli.commands.interventions", "interventions"),
    ("cli.commands.demo", None),
]


@app.callback()
def _settings_first() -> None:
    # Settings are read before any command runs, so a bad CHURN_* value (e.g. an unusable
    # CHURN_REDIS_URL) is one clear line and exit 1, not a traceback from inside the command.
    import sys

    from churn.settings import get_settings

    if "--help" in sys.argv[1:]:  # help needs no settings
        return
    try:
        get_settings()
    except ValueError as exc:  # SettingsError, or a CHURN_* value of the wrong type
        from rich.markup import escape

        from churn.console import console

        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(getattr(exc, "exit_code", 1)) from None


for _module_name, _group in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_module_name)
    except ModuleNotFoundError as exc:  # a group not built yet in this checkout
        if exc.name != _module_name:
            raise
        continue
    if _group is None:
        for _cmd in _module.app.registered_commands:
            app.registered_commands.append(_cmd)
    else:
        app.add_typer(_module.app, name=_group)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
