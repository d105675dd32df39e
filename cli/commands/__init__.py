"""One Typer app per command group (``data``, ``features``, ``models``) or set of top-level commands."""
