"""pip-audit on the hashed lock files: no known vulnerabilities, or each one justified.

Accepted findings live in requirements/audit-ignore.txt (`<lock> <ID>  # why`), scoped per lock file.
pip-audit asks the PyPI JSON API (`-s pypi`) about each pinned version; the lock files are audited
as written (--require-hashes --disable-pip: nothing is resolved or installed). When that service
cannot be asked (no network, a mirror without the per-version API, ...) the audit proves nothing:
the test then skips with the reason, in CI too: unlike Redis or a linter, an advisory database is
an outside service that a test cannot start for itself, and on this project's own machines the
per-version API answers 404 (so nothing can be audited here; see README "Reliability"). A canary
pin with well-known advisories guards against a service that answers but carries no data, so the
skip is never a false all-clear.
"""

from __future__ import annotations

import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import pytest

from tests.support.env import REPO, require_tool
from tests.support.tools import run

pytestmark = pytest.mark.deploy

REQUIREMENTS = REPO / "requirements"
LOCKS = ("main.txt", "dev.txt", "drift.txt")
IGNORE_FILE = REQUIREMENTS / "audit-ignore.txt"
# urllib3 1.26.0 has several published advisories (e.g. CVE-2021-33503, fixed in 1.26.5).
CANARY = "urllib3==1.26.0"
ID_RE = re.compile(r"(PYSEC|GHSA|CVE|OSV|PYUP)-[A-Za-z0-9-]+")
UNREACHABLE_RE = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Max retries|Failed to establish|Name or service not known"
    r"|Temporary failure in name resolution|SSLError|ServiceError",
    re.I,
)


def _unavailable(msg: str) -> NoReturn:
    pytest.skip(f"vulnerability service unavailable, nothing was audited: {msg}")


def _ignores() -> dict[str, dict[str, str]]:
    """lock file -> {vulnerability ID: justification} from requirements/audit-ignore.txt."""
    out: dict[str, dict[str, str]] = {lock: {} for lock in LOCKS}
    for n, raw in enumerate(IGNORE_FILE.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry, _, why = line.partition("#")
        parts = entry.split()
        where = f"{IGNORE_FILE.name}:{n}"
        assert len(parts) == 2, f"{where}: expected `<lock file> <ID>  # justification`"
        lock, vuln_id = parts
        assert lock in out, f"{where}: unknown lock file {lock!r} (one of {LOCKS})"
        assert ID_RE.fullmatch(vuln_id), f"{where}: not a vulnerability ID: {vuln_id!r}"
        assert len(why.strip()) >= 20, f"{where}: {vuln_id} needs a justification comment"
        assert vuln_id not in out[lock], f"{where}: duplicate {vuln_id}"
        out[lock][vuln_id] = why.strip()
    return out


def _audit(exe: str, args: list[str]) -> tuple[Any | None, str]:
    """(parsed JSON report, or None when the service could not be asked; diagnostics)."""
    cmd = [exe, *args, "--disable-pip", "-s", "pypi", "-f", "json", "--progress-spinner", "off"]
    proc = run([*cmd, "--timeout", "30"], timeout=240)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("{"):
        if UNREACHABLE_RE.search(proc.stderr):
            return None, proc.stderr.strip().splitlines()[-1]
        raise AssertionError(f"pip-audit crashed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="session")
def audits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any | None, str]]:
    """pip-audit of every lock file plus the canary, in parallel, once per session."""
    exe = require_tool("pip-audit")
    canary = tmp_path_factory.mktemp("pip-audit") / "canary.txt"
    canary.write_text(CANARY + "\n")
    jobs: dict[str, list[str]] = {lock: ["-r", str(REQUIREMENTS / lock), "--require-hashes"] for lock in LOCKS}
    jobs["canary"] = ["-r", str(canary), "--no-deps"]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = pool.map(lambda args: _audit(exe, args), jobs.values())
    return dict(zip(jobs, results, strict=True))


def test_audit_ignore_file_is_justified() -> None:
    ignores = _ignores()
    assert set(ignores) == set(LOCKS)
    for lock in LOCKS:
        assert (REQUIREMENTS / lock).exists(), lock


@pytest.mark.parametrize("lock", LOCKS)
def test_pip_audit(audits: dict[str, tuple[Any | None, str]], lock: str) -> None:
    canary, canary_log = audits["canary"]
    if canary is None:
        _unavailable(canary_log)
    canary_deps = canary["dependencies"]
    if not canary_deps or any("skip_reason" in d for d in canary_deps) or not canary_deps[0].get("vulns"):
        _unavailable(f"the canary {CANARY} came back without its known advisories: {canary_deps}")

    report, log = audits[lock]
    if report is None:
        _unavailable(f"{lock}: {log}")
    deps = report["dependencies"]
    assert deps, f"pip-audit found no packages in {lock}"
    skipped = [f"{d['name']}: {d['skip_reason']}" for d in deps if "skip_reason" in d]
    if skipped:
        _unavailable(f"{lock}: {len(skipped)}/{len(deps)} packages not looked up, e.g. {skipped[:3]}")

    ignores = _ignores()[lock]
    used: set[str] = set()
    findings: list[str] = []
    for dep in deps:
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            hit = ids & ignores.keys()
            if hit:
                used |= hit
                continue
            fix = ", ".join(vuln.get("fix_versions", [])) or "no fix released"
            aliases = ", ".join(sorted(ids - {vuln["id"]}))
            findings.append(f"{dep['name']}=={dep['version']} {vuln['id']} ({aliases}) fixed in: {fix}")
    stale = sorted(ignores.keys() - used)
    if stale:
        warnings.warn(f"{IGNORE_FILE.name}: {lock} entries no longer reported, remove them: {stale}", stacklevel=1)
    assert not findings, (
        f"{len(findings)} known vulnerabilities in requirements/{lock}; upgrade the pin (regenerate the "
        f"lock, docs/contracts.md) or justify each in {IGNORE_FILE.relative_to(REPO)}:\n" + "\n".join(sorted(findings))
    )


def test_lock_files_are_fully_hashed() -> None:
    """--require-hashes audits exactly the pins: every requirement line carries a hash."""
    for lock in LOCKS:
        text = (REQUIREMENTS / lock).read_text()
        reqs = re.findall(r"^([A-Za-z0-9_.-]+==\S+)((?:\s*\\\n\s+--hash=\S+)*)", text, re.M)
        assert reqs, lock
        unhashed = [name for name, hashes in reqs if "--hash=sha256:" not in hashes]
        assert not unhashed, f"{lock}: pins without hashes: {unhashed}"
