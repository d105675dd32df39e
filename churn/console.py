"""Progress and the one-line summary every long step ends with."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


@dataclass
class StepResult:
    """What a step wrote; filled in by the step, printed as one summary line at the end."""

    name: str
    wrote: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in self.extra.items()]
        if self.wrote:
            parts.append("wrote " + ", ".join(self.wrote))
        return f"{self.name}: " + "; ".join(parts) + f" ({self.seconds:.1f}s)"


@contextlib.contextmanager
def step(name: str) -> Iterator[StepResult]:
    result = StepResult(name)
    start = time.perf_counter()
    yield result
    result.seconds = time.perf_counter() - start
    print(result.summary(), flush=True)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
