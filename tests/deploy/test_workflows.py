"""GitHub Actions workflows and the tools installer: actionlint and shellcheck, then what the
workflows do, read from their parsed YAML: what CI installs, tags, records and deploys to staging,
and what a release tag triggers, promotes and proposes for production. Where a workflow edits the
GitOps files, the edit is replayed on the real files and the chart rendered with the result."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.support.env import REPO, require_tool
from tests.support.images import TARGETS
from tests.support.tools import Rendered, containers, helm_template, parse_docs, run, values_for

pytestmark = pytest.mark.deploy

WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_actionlint() -> None:
    actionlint = require_tool("actionlint")
    require_tool("shellcheck")  # actionlint lints `run:` scripts with shellcheck when on PATH
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert files
    proc = run([actionlint, "-no-color", *files])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_scripts() -> None:
    shellcheck = require_tool("shellcheck")
    shell = [*(REPO / "scripts").glob("*.sh"), *(REPO / "charts").rglob("*.sh"), *(REPO / "docker").glob("*.sh")]
    scripts = sorted(str(p) for p in shell)
    # install-tools.sh, wheelhouse.sh, the chart's spark-submit.sh, the Spark image's entrypoint
    assert len(scripts) >= 4, scripts
    proc = run([shellcheck, *scripts])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actions_pinned_to_major_versions() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", uses), f"{path.name}: {uses}"


def _runs(job: dict) -> str:
    return "\n".join(str(st.get("run", "")) for st in job.get("steps", []))


def _uses(job: dict, action: str) -> list[dict]:
    return [st for st in job.get("steps", []) if str(st.get("uses", "")).split("@")[0] == action]


def _needs(job: dict) -> set[str]:
    needs = job.get("needs", [])
    return {needs} if isinstance(needs, str) else set(needs)


def _upstream(jobs: dict, name: str) -> set[str]:
    """Every job ``name`` waits for, directly or through other jobs."""
    seen: set[str] = set()
    todo = list(_needs(jobs[name]))
    while todo:
        job = todo.pop()
        if job not in seen:
            seen.add(job)
            todo += _needs(jobs[job])
    return seen


def _metadata_tags(step: dict) -> list[dict[str, str]]:
    """docker/metadata-action ``tags:`` lines as {"type": ..., "value": ..., ...}."""
    out = []
    for line in step["with"]["tags"].splitlines():
        if line.strip():
            out.append(dict(kv.split("=", 1) for kv in line.strip().split(",")))
    return out


def github_filter_regex(pattern: str) -> re.Pattern[str]:
    """A GitHub Actions branch/tag filter pattern as a regex, per GitHub's filter pattern cheat sheet:
    ``*`` any run without ``/``, ``**`` anything, ``?``/``+`` zero-or-one/one-or-more of the previous
    character or class, ``[...]`` a class; everything else literal; the whole ref must match."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch in "?+":
            assert out, f"{pattern}: {ch} needs something before it"
            out += ch
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out)


def github_filter_matches(patterns: list[str], ref: str) -> bool:
    """Whether a ref triggers a filter list: the last matching pattern wins, ``!`` excludes."""
    matched = False
    for pat in patterns:
        negated = pat.startswith("!")
        if github_filter_regex(pat.removeprefix("!")).fullmatch(ref):
            matched = not negated
    return matched


def test_github_filter_matcher() -> None:
    """The matcher the trigger test relies on, on GitHub's own documented examples."""
    assert github_filter_matches(["v2*"], "v2.0") and not github_filter_matches(["v2*"], "v3")
    assert github_filter_matches(["v[12].[0-9]+.[0-9]+"], "v1.10.1")
    assert not github_filter_matches(["v[12].[0-9]+.[0-9]+"], "v3.0.0")
    assert github_filter_matches(["feature/*"], "feature/x") and not github_filter_matches(["feature/*"], "feature/x/y")
    assert github_filter_matches(["feature/**"], "feature/x/y")
    assert not github_filter_matches(["releases/**", "!releases/**-alpha"], "releases/10-alpha")


# Fake digests, one per image, to run the workflows' edits on.
FAKE = {name: "sha256:" + (c * 64) for name, c in (("api", "a"), ("ml", "b"), ("drift", "c"), ("spark", "d"))}


def _apply_yq(script: str, env: dict[str, str], docs: dict[str, dict]) -> set[str]:
    """Run the ``yq -i`` assignments of ``script`` on the parsed files in ``docs`` (path -> data).

    Understands what the workflows use: ``.a.b = strenv(X)`` and
    ``(.spec.sources[] | select(has("path")) | .targetRevision) = strenv(X)``; a `style=` is layout.
    Returns the files it changed; fails on a `yq -i` it cannot read, so a new edit needs a test.
    """
    changed: set[str] = set()
    for expr, path in re.findall(r"yq -i '(.*?)'\s*\\?\s*(\S+)", script, flags=re.S):
        m = re.fullmatch(
            r'\(\.spec\.sources\[\] \| select\(has\("path"\)\) \| \.targetRevision\) = strenv\((\w+)\)', expr.strip()
        )
        if m:
            for src in docs[path]["spec"]["sources"]:
                if "path" in src:
                    src["targetRevision"] = env[m.group(1)]
            changed.add(path)
            continue
        for part in expr.split("|"):
            part = part.strip()
            m = re.fullmatch(r"(\.[\w.]+) = strenv\((\w+)\)", part)
            if m:
                *keys, last = m.group(1).strip(".").split(".")
                node = docs[path]
                for k in keys:
                    node = node.setdefault(k, {})
                node[last] = env[m.group(2)]
                changed.add(path)
            elif not re.fullmatch(r'\.[\w.]+ style="double"', part):
                raise AssertionError(f"unknown yq edit in {path}: {part!r}")
    assert changed or "yq -i" not in script, f"no yq edit understood in:\n{script}"
    return changed


def _step_env(step: dict, outputs: dict[str, str]) -> dict[str, str]:
    """A step's env with ``${{ needs.<job>.outputs.<name> }}`` / ``${{ github.ref_name }}`` filled in."""
    env = {}
    for key, value in step.get("env", {}).items():
        m = re.fullmatch(r"\$\{\{\s*(needs\.[\w-]+\.outputs\.[\w-]+|github\.ref_name)\s*\}\}", str(value))
        if m:
            env[key] = outputs[m.group(1)]
    return env


def _rendered_images(value_files: list[Path]) -> dict[str, set[str]]:
    """{image key: rendered references} of the churn containers and Spark applications rendered
    with these values files (the demo and spark.enabled on, so that every image is used)."""
    sets = ["--set", "demo.enabled=true,spark.enabled=true"]
    proc = helm_template([a for f in value_files for a in ("-f", str(f))] + sets)
    assert proc.returncode == 0, proc.stderr
    image = values_for("default")["image"]
    names = {f"{image['repositoryPrefix']}/{image[k]}": k for k in ("api", "ml", "drift", "spark")}
    refs: dict[str, set[str]] = {}
    for app in Rendered("workflow", proc.stdout).spark_applications().values():
        refs.setdefault(names[re.sub(r"(@[^/]*|:[^/:]*)$", "", app["spec"]["image"])], set()).add(app["spec"]["image"])
    for doc in parse_docs(proc.stdout):
        if doc["kind"] not in {"Deployment", "Job", "CronJob"}:
            continue
        spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        for c in containers(spec["template"]["spec"]):
            repo = re.sub(r"(@[^/]*|:[^/:]*)$", "", c["image"])
            if repo in names:
                refs.setdefault(names[repo], set()).add(c["image"])
    return refs


def test_ci_pipeline() -> None:
    ci = _load("ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    assert "group" in ci["concurrency"]
    jobs = ci["jobs"]
    assert any("make lint" in s.get("run", "") for s in jobs["lint"]["steps"])
    test = jobs["test"]
    assert test["needs"] == "lint"
    assert {"redis", "postgres"} <= set(test["services"])
    assert any("make test" in s.get("run", "") for s in test["steps"])
    images = jobs["images"]
    assert images["needs"] == "test"
    assert images["permissions"] == {"contents": "read", "packages": "write"}
    matrix = images["strategy"]["matrix"]
    assert matrix["image"] == ["api", "ml", "drift", "spark"]
    # The Spark image is the ml Dockerfile's `spark` target (tests/support/images.py builds it so)
    assert matrix["include"] == [{"image": k, "dockerfile": f, "target": t} for k, (f, t) in TARGETS.items()]
    (build,) = _uses(images, "docker/build-push-action")
    assert build["with"]["file"] == "docker/Dockerfile.${{ matrix.dockerfile || matrix.image }}"
    assert build["with"]["target"] == "${{ matrix.target }}"
    assert "type=gha" in build["with"]["cache-from"] and "type=gha" in build["with"]["cache-to"]
    assert "IMAGE=ghcr.io/${GITHUB_REPOSITORY,,}/${{ matrix.image }}" in _runs(images)


def test_ci_tags_images_by_commit_never_by_environment() -> None:
    """Every pushed image carries its full commit sha (what a release promotes); no tag names an
    environment, so nothing deploys by a tag that moves under it."""
    images = _load("ci.yml")["jobs"]["images"]
    (meta,) = _uses(images, "docker/metadata-action")
    tags = _metadata_tags(meta)
    assert {"type": "sha", "format": "long"} in tags, tags
    for tag in tags:
        assert tag.get("prefix", "sha-") == "sha-" and "suffix" not in tag, tag
        assert tag.get("value", "") not in {"staging", "production", "latest"}, tag
    (build,) = _uses(images, "docker/build-push-action")
    assert build["with"]["tags"] == "${{ steps.meta.outputs.tags }}"


def test_ci_records_the_pushed_digests() -> None:
    """The digest build-push-action reports for each image is handed on: an artifact per matrix leg,
    collected into one output per image (and digests.json) by a job that needs every leg."""
    jobs = _load("ci.yml")["jobs"]
    images = jobs["images"]
    (build,) = _uses(images, "docker/build-push-action")
    recorded = [st for st in images["steps"] if f"steps.{build['id']}.outputs.digest" in str(st.get("env", {}))]
    assert recorded, "no step reads the build's digest output"
    uploads = _uses(images, "actions/upload-artifact")
    assert uploads and all(st.get("if") == recorded[0].get("if") for st in uploads)
    assert "digest-${{ matrix.image }}" in uploads[0]["with"]["name"]
    digests = jobs["digests"]
    assert "images" in _needs(digests)
    (download,) = _uses(digests, "actions/download-artifact")
    assert download["with"]["pattern"] == "digest-*" and download["with"]["merge-multiple"] is True
    assert set(digests["outputs"]) == set(images["strategy"]["matrix"]["image"])
    assert any(st["with"]["name"] == "image-digests" for st in _uses(digests, "actions/upload-artifact"))


def test_staging_deploys_every_tested_build_by_digest(tmp_path: Path) -> None:
    """On a push to main, after the tests and the image pushes, CI writes the new digests into
    values-staging.yaml and pushes that to the branch the staging Application syncs: every build is
    a new digest, so Argo CD sees a diff and the pods roll. Nothing is pushed to main."""
    jobs = _load("ci.yml")["jobs"]
    deploy = jobs["deploy-staging"]
    assert {"digests", "images", "test"} <= _upstream(jobs, "deploy-staging")
    assert "github.ref == 'refs/heads/main'" in deploy["if"] and "github.event_name == 'push'" in deploy["if"]
    assert deploy["permissions"] == {"contents": "write"}
    (checkout,) = _uses(deploy, "actions/checkout")
    assert checkout["with"]["ref"] == "${{ github.sha }}", "deploy the commit that was tested, not main's tip"

    outputs = {f"needs.digests.outputs.{k}": v for k, v in FAKE.items()}
    values_path = "charts/churn-platform/values-staging.yaml"
    docs = {values_path: yaml.safe_load((REPO / values_path).read_text())}
    changed = set()
    for st in deploy["steps"]:
        if "yq -i" in str(st.get("run", "")):
            changed |= _apply_yq(st["run"], _step_env(st, outputs), docs)
    assert changed == {values_path}

    pushes = [line.split() for line in _runs(deploy).splitlines() if re.search(r"\bgit push\b", line)]
    assert len(pushes) == 1, pushes
    (target,) = [w.split(":", 1)[1] for w in pushes[0] if ":" in w]
    branch = target.removeprefix("refs/heads/")
    assert branch not in {"main", "master", "HEAD"}
    staging_app = yaml.safe_load((REPO / "argocd" / "application-staging.yaml").read_text())
    assert staging_app["spec"]["source"]["targetRevision"] == branch, "staging must sync what CI pushes"

    edited = tmp_path / "values-staging.yaml"
    edited.write_text(yaml.safe_dump(docs[values_path]))
    refs = _rendered_images([edited])
    assert set(refs) == set(FAKE)
    for key, rendered in refs.items():
        assert {r.split("@", 1)[1] for r in rendered if "@" in r} == {FAKE[key]} and all("@" in r for r in rendered)


def test_release_triggers_on_final_versions_only() -> None:
    rel = _load("release.yml")
    assert set(rel["on"]) == {"push"} and set(rel["on"]["push"]) == {"tags"}
    tags = rel["on"]["push"]["tags"]
    for ref in ("v0.1.0", "v1.2.3", "v10.20.30"):
        assert github_filter_matches(tags, ref), ref
    for ref in ("v1.2.3-rc1", "v1.2.3-rc.1", "v1.2", "1.2.3", "v1.2.3.4", "v1.2.x", "release-1.2.3"):
        assert not github_filter_matches(tags, ref), ref


def test_release_promotes_the_tested_images_without_rebuilding() -> None:
    rel = _load("release.yml")
    assert rel["permissions"] == {"contents": "read"}
    assert rel["concurrency"]["cancel-in-progress"] is False
    jobs = rel["jobs"]
    for name, job in jobs.items():
        assert not _uses(job, "docker/build-push-action"), f"{name} rebuilds"
        assert not re.search(r"\b(docker|podman|buildah) (build|push)\b|buildx build", _runs(job)), f"{name} rebuilds"
    # Only the promotion may write packages; only the pull request may write contents.
    writers = {name: {k for k, v in job.get("permissions", {}).items() if v == "write"} for name, job in jobs.items()}
    assert {n for n, w in writers.items() if "packages" in w} == {"promote"}
    assert {n for n, w in writers.items() if w & {"contents", "pull-requests"}} == {"pull-request"}
    assert writers["pull-request"] == {"contents", "pull-requests"}

    # The tested commit: on main, and a successful CI run on main for exactly that sha.
    verify = jobs["verify"]
    script = _runs(verify)
    assert re.search(r"git merge-base --is-ancestor \"\$SHA\" \"origin/\$MAIN\"", script)
    (gh_line,) = [line for line in script.replace("\\\n", " ").splitlines() if "gh run list" in line]
    gh = shlex.split(gh_line.split("$(", 1)[1].split(")", 1)[0])
    opts = {gh[i]: gh[i + 1] for i in range(len(gh) - 1) if gh[i].startswith("--")}
    assert (WORKFLOWS / opts["--workflow"]).is_file() and _load(opts["--workflow"])["name"] == "CI"
    assert opts["--commit"] == "$SHA" and opts["--status"] == "success" and opts["--event"] == "push"
    assert {"verify"} <= _upstream(jobs, "promote") and {"verify", "promote"} <= _upstream(jobs, "pull-request")

    # The promotion copies by digest the image CI pushed as sha-<commit> (ci.yml's type=sha,format=long).
    promote = _runs(jobs["promote"])
    assert re.search(r'imagetools inspect "\$ref:sha-\$SHA"', promote)
    creates = [line for line in promote.splitlines() if "imagetools create" in line]
    assert creates and all(re.search(r'"\$ref@\$digest"$', line.strip()) for line in creates), creates
    assert set(jobs["promote"]["outputs"]) == set(FAKE)


def test_release_opens_a_pull_request_that_pins_digests_and_the_chart_tag(tmp_path: Path) -> None:
    """The release never pushes to main: it opens a pull request whose change, applied to the GitOps
    files, makes the production Application render the released chart with the promoted digests."""
    jobs = _load("release.yml")["jobs"]
    for name, job in jobs.items():
        assert not re.search(r"\bgit push\b", _runs(job)), f"{name} pushes"
    pr_job = jobs["pull-request"]
    (pr,) = _uses(pr_job, "peter-evans/create-pull-request")
    assert pr["with"]["branch"] == "release/${{ github.ref_name }}"
    assert pr["with"]["base"] == "${{ github.event.repository.default_branch }}"

    outputs = {f"needs.promote.outputs.{k}": v for k, v in FAKE.items()}
    outputs |= {"github.ref_name": "v9.8.7", "needs.verify.outputs.version": "9.8.7"}
    values_path, app_path = "charts/churn-platform/values-production.yaml", "argocd/application-production.yaml"
    docs = {p: yaml.safe_load((REPO / p).read_text()) for p in (values_path, app_path)}
    changed: set[str] = set()
    for st in pr_job["steps"]:
        if "yq -i" in str(st.get("run", "")):
            changed |= _apply_yq(st["run"], _step_env(st, outputs), docs)
    assert changed == {values_path, app_path}
    assert set(pr["with"]["add-paths"].split()) == changed, "the pull request must carry every edited file"
    assert docs[values_path]["image"]["tag"] == "9.8.7"
    (chart_src,) = [s for s in docs[app_path]["spec"]["sources"] if "path" in s]
    assert chart_src["targetRevision"] == "v9.8.7"

    edited = tmp_path / "values-production.yaml"
    edited.write_text(yaml.safe_dump(docs[values_path]))
    refs = _rendered_images([edited])
    assert set(refs) == set(FAKE)
    for key, rendered in refs.items():
        assert all(r.endswith("@" + FAKE[key]) for r in rendered), rendered


APT_BINARIES = {
    "redis-server": {"redis-server"},
    "podman": {"podman"},
    "runc": {"runc"},
    "uidmap": {"newuidmap", "newgidmap"},
    "fuse-overlayfs": {"fuse-overlayfs"},
    "mmdebstrap": {"mmdebstrap"},
}
"""Debian/Ubuntu package → the binaries the suite looks for that it installs."""


def _demanded_binaries() -> set[str]:
    """Every executable a test asks for by name, through ``require_tool`` or ``shutil.which``."""
    names: set[str] = set()
    for path in (REPO / "tests").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r'require_tool\("([\w.-]+)"', text))
        names |= set(re.findall(r'shutil\.which\("([\w.-]+)"\)', text))
    return names - {"mount", "sudo"}  # the tmpfs case: base system of every runner, not a package


def test_ci_installs_every_binary_the_suite_demands() -> None:
    script = (REPO / "scripts" / "install-tools.sh").read_text()
    loop = re.findall(r"^for exe in ([\w .$-]+); do", script, flags=re.M)
    assert loop, "install-tools.sh lists the tools it installs in a `for exe in ...; do` check loop"
    system = re.search(r'^SYSTEM_BINARIES="([\w .-]+)"$', script, flags=re.M)
    assert system, "install-tools.sh names the binaries of the system packages it installs"
    from_script = set(loop[-1].replace("$SYSTEM_BINARIES", system.group(1)).split())
    steps = _load("ci.yml")["jobs"]["test"]["steps"]
    packages: set[str] = set()
    for st in steps:
        for line in str(st.get("run", "")).splitlines():
            if "apt-get install" in line:
                packages |= {w for w in line.split("apt-get install", 1)[1].split() if not w.startswith("-")}
    from_apt = set().union(*(APT_BINARIES.get(p, set()) for p in packages))
    demanded = _demanded_binaries()
    assert {"redis-server", "helm", "podman", "mmdebstrap"} <= demanded  # the scan sees the suite's demands
    missing = demanded - from_script - from_apt
    assert not missing, f"ci.yml's test job does not install {sorted(missing)} (apt packages: {sorted(packages)})"
    names = [st.get("name", st.get("run", "")) for st in steps]
    assert names.index("System packages") < next(i for i, st in enumerate(steps) if st.get("run") == "make test")
    # Missing binaries fail rather than skip only under CI=true.
    assert str(_load("ci.yml")["jobs"]["test"]["env"]["CI"]).lower() == "true"


def test_ci_caches_the_suite_downloads() -> None:
    """The tools, wheelhouse and base image the suite downloads are cached across runs, keyed on
    the files that decide their content (a changed lock or installer must not reuse the old ones)."""
    test = _load("ci.yml")["jobs"]["test"]
    caches = [st for st in _uses(test, "actions/cache") if "churn-platform" in st["with"]["path"]]
    assert len(caches) == 1, caches
    (cache,) = caches
    assert cache["with"]["path"].rstrip("/") == "~/.cache/churn-platform"
    hashed = set(re.findall(r"'([^']+)'", re.search(r"hashFiles\(([^)]*)\)", cache["with"]["key"]).group(1)))
    assert {"requirements/*.txt", "scripts/install-tools.sh"} <= hashed, hashed
    assert "restore-keys" not in cache["with"], "a stale tool or base image must not be restored"
    steps = test["steps"]
    assert steps.index(cache) < next(i for i, st in enumerate(steps) if st.get("run") == "make test")
