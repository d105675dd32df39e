"""Event maps: a site's own event names → the canonical event types.

A spec is inline (``source=canonical[,source=canonical...]``) or a file: YAML (``{source: canonical}``
or ``{event_map: {source: canonical}}``) or CSV with two columns ``source,canonical``. Canonical
names map to themselves without being listed. Types that are neither listed nor canonical are
*unmapped*: refused by default (the ``event_type_values`` gate rejects or quarantines them), or
kept as the generic ``activity`` type with ``unmapped="activity"``.

Only the *distinct* types of a batch are looked at here (a handful of strings); the rows are
rewritten by DuckDB with a join against the ``translation`` (see ``jobs.ingest``), never in Python.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from churn.errors import IngestError
from churn.schema import CANONICAL_EVENT_TYPES, GENERIC_EVENT_TYPE

UNMAPPED_POLICIES = ("refuse", GENERIC_EVENT_TYPE)
MAP_FILE_SUFFIXES = (".yaml", ".yml", ".csv")
MAX_LISTED = 20  # unmapped types named in one error line; the rest are counted


class EventMapError(IngestError):
    """The event map itself is wrong (syntax, unreadable file, a target that is not canonical)."""

    report = None  # like jobs.ingest.IngestError: no gate ran, so no validation report


@dataclass(frozen=True)
class Resolution:
    """What a map does to one batch: ``translation`` (types to rewrite) and what stays unmapped."""

    translation: dict[str, str] = field(default_factory=dict)
    mapped: dict[str, int] = field(default_factory=dict)  # source type → rows, rewritten by the map
    unmapped: dict[str, int] = field(default_factory=dict)  # type → rows, neither listed nor canonical

    def unmapped_summary(self) -> str:
        """``'page_open' (1,234), 'clicked' (55)``, most frequent first, at most MAX_LISTED named."""
        items = sorted(self.unmapped.items(), key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{k!r} ({n:,})" for k, n in items[:MAX_LISTED])
        if len(items) > MAX_LISTED:
            text += f" and {len(items) - MAX_LISTED:,} more types"
        return text


@dataclass(frozen=True)
class EventMap:
    """``mapping`` source → canonical (validated); ``unmapped`` is ``refuse`` or ``activity``."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    unmapped: str = "refuse"

    def __post_init__(self) -> None:
        if self.unmapped not in UNMAPPED_POLICIES:
            raise EventMapError(
                f"--unmapped must be one of {', '.join(UNMAPPED_POLICIES)}, got {self.unmapped!r}"
            )
        bad = {s: t for s, t in self.mapping.items() if t not in CANONICAL_EVENT_TYPES}
        if bad:
            listed = ", ".join(f"{s}={t}" for s, t in bad.items())
            raise EventMapError(
                f"event map targets that are not canonical event types: {listed} "
                f"(canonical: {', '.join(CANONICAL_EVENT_TYPES)})"
            )

    @classmethod
    def from_spec(cls, spec: str | Path | None, unmapped: str = "refuse") -> EventMap:
        return cls(parse_spec(spec) if spec else {}, unmapped)

    def target(self, source: str) -> str | None:
        """The canonical type of ``source``; None if unmapped (refused)."""
        if source in self.mapping:
            return self.mapping[source]
        if source in CANONICAL_EVENT_TYPES:
            return source
        return GENERIC_EVENT_TYPE if self.unmapped == GENERIC_EVENT_TYPE else None

    def resolve(self, counts: Mapping[str | None, int]) -> Resolution:
        """Decide every distinct type of a batch (``counts``: type → rows; NULL is left to the gates)."""
        res = Resolution()
        for source, n in counts.items():
            if source is None:
                continue
            target = self.target(source)
            if target is None:
                res.unmapped[source] = n
            elif target != source:
                res.translation[source] = target
                if source in self.mapping:
                    res.mapped[source] = n
                else:  # kept as generic activity
                    res.unmapped[source] = n
        return res


def parse_spec(spec: str | Path) -> dict[str, str]:
    """An inline spec or a YAML/CSV file → {source: canonical} (targets are checked by EventMap)."""
    path = Path(spec)
    text = str(spec)
    looks_like_file = path.suffix.lower() in MAP_FILE_SUFFIXES and "=" not in text
    if looks_like_file or ("=" not in text and path.exists()):
        return _read_file(path)
    return _parse_inline(text)


def _parse_inline(text: str) -> dict[str, str]:
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        source, sep, target = item.partition("=")
        if not sep:
            raise EventMapError(
                f"event map: {item.strip()!r} is not source=canonical "
                "(inline maps are source=canonical[,source=canonical...], or give a .yaml/.csv file)"
            )
        pairs.append((source.strip(), target.strip()))
    return _to_dict(pairs, "inline event map")


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise EventMapError(f"event map {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventMapError(f"event map {path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".csv":
        return _to_dict(_csv_pairs(path, text), str(path))
    return _to_dict(_yaml_pairs(path, text), str(path))


def _yaml_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EventMapError(f"event map {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(doc, dict) and set(doc) == {"event_map"}:
        doc = doc["event_map"]
    if not isinstance(doc, dict) or not doc:
        raise EventMapError(f"event map {path}: expected a mapping {{source: canonical}} or {{event_map: {{...}}}}")
    for s, t in doc.items():
        if not isinstance(t, str) or isinstance(s, (dict, list)) or s is None:
            raise EventMapError(f"event map {path}: {s!r}: {t!r} is not a source: canonical pair of names")
    return [(str(s), t) for s, t in doc.items()]


def _csv_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0]] == ["source", "canonical"]:
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows, 1) if len(r) != 2]
    if bad or not rows:
        where = f"row {bad[0]} of the data" if bad else "no rows"
        raise EventMapError(f"event map {path}: expected two columns source,canonical ({where})")
    return [(s.strip(), t.strip()) for s, t in rows]


def _to_dict(pairs: list[tuple[str, str]], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for source, target in pairs:
        if not source.strip():
            raise EventMapError(f"{where}: empty source name (mapped to {target!r})")
        if source in out and out[source] != target:
            raise EventMapError(f"{where}: {source!r} is mapped twice ({out[source]!r} and {target!r})")
        out[source] = target
    if not out:
        raise EventMapError(f"{where}: no source=canonical pairs")
    return out
