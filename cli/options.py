"""Helpers shared by command modules: parse dates, turn domain errors into clean exits."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import typer
from rich.markup import escape

from churn.console import console
from churn.errors import ChurnError

__all__ = ["DATE_KEYWORDS", "ChurnError", "parse_date", "user_errors"]


DATE_KEYWORDS = {"today": 0, "yesterday": 1}
"""Words ``--date`` accepts besides ``YYYY-MM-DD``: days before today's UTC date."""


def parse_date(value: str | None) -> dt.date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC); ``None`` means today."""
    word = "today" if value is None else value.strip().lower()
    if word in DATE_KEYWORDS:
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DATE_KEYWORDS[word])
    try:
        return dt.date.fromisoformat(word)
    except ValueError as exc:
        raise typer.BadParameter(f"expected YYYY-MM-DD, today or yesterday, got {value!r}") from exc


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a ChurnError as one line on stderr and exit with its code, without a traceback."""
    try:
        yield
    except ChurnError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from exc
    except OSError as exc:  # disk full, read-only file system, a file where a directory belongs...
        detail = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc) or repr(exc)
        console.print(f"[red]error:[/red] {escape(detail)}", soft_wrap=True)
        raise typer.Exit(1) from exc
