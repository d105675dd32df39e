"""What docs/contracts.md promises: CLI commands and options, the drift entry point, routes, metrics."""

from __future__ import annotations

import re

from tests.support.env import REPO

CONTRACTS = REPO / "docs" / "contracts.md"


def _section(title: str) -> str:
    text = CONTRACTS.read_text()
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"section {title!r} not found in docs/contracts.md"
    return m.group(1)


def contract_commands() -> dict[tuple[str, ...], set[str]]:
    """`churn` command paths from the Commands block -> the options the contract lists for them."""
    block = re.search(r"```(.*?)```", _section("Commands"), re.S)
    assert block, "no command block in docs/contracts.md"
    commands: dict[tuple[str, ...], set[str]] = {}
    for raw in block.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("churn "):
            continue
        alternatives = [a.strip() for a in line.split("|")]
        first = alternatives[0].split()[1:]
        group = first[0]
        for i, alt in enumerate(alternatives):
            words = alt.split()
            words = words[1:] if i == 0 else [group, *words]
            path: list[str] = []
            for w in words:
                if re.fullmatch(r"[a-z][a-z-]*", w):
                    path.append(w)
                else:
                    break
            commands[tuple(path)] = set(re.findall(r"--[a-z][a-z-]*", alt))
    return commands


def contract_drift_options() -> set[str]:
    m = re.search(r"`python -m jobs\.drift ([^`]*)`", CONTRACTS.read_text())
    assert m, "drift entry point not found in docs/contracts.md"
    return set(re.findall(r"--[a-z][a-z-]*", m.group(1)))


def contract_routes() -> set[str]:
    return set(re.findall(r"(/[a-z][a-z/]*)", _section("API")))


def contract_metrics() -> set[str]:
    return set(re.findall(r"\b(churn_[a-z_]+)", _section("Prometheus metric names")))
