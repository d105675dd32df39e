"""CLI command groups; each module exposes a ``typer.Typer`` named ``app``."""
