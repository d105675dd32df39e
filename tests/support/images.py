"""Build and run the project's OCI images with Debian's podman (runc, cgroupfs), the way a cluster
would run them: the air-gapped build path (a base image made from Debian packages, wheels from a
wheelhouse, no network during the build) and pods started with the chart's own security context.

Downloads (the Debian base, the wheelhouses) are cached under ``$CHURN_CACHE_DIR`` (default
``~/.cache/churn-platform``), outside the repository; podman keeps its layer cache itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.env import REPO, require_tool

CACHE = Path(os.environ.get("CHURN_CACHE_DIR", Path.home() / ".cache" / "churn-platform"))
IMAGES = ("api", "ml", "drift")
MAIN_LOCKS = ("main.txt", "build.txt", "spark.txt")
WHEELHOUSE_LOCKS = {"api": MAIN_LOCKS, "ml": MAIN_LOCKS, "spark": MAIN_LOCKS, "drift": ("drift.txt",)}
"""One wheelhouse for every image built on the main lock (a superset for the api image), so that
building them one after another never refills it."""
TARGETS = {"spark": ("ml", "spark")}
"""Images that are a target of another image's Dockerfile: name -> (Dockerfile suffix, target)."""
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd", "libgomp1")
"""Debian bookworm's Python is 3.11, the version the locks are compiled for. `python-is-python3` and
`passwd` give what python:3.11-slim has (`python`, useradd); libgomp1 is what LightGBM links, so the
images' final stage finds it and needs no package index."""
APT_HINT = "install Debian's podman runc uidmap fuse-overlayfs mmdebstrap (ci.yml does)"


def _sudo() -> list[str]:
    """podman and mmdebstrap run as root: rootless needs subordinate ID ranges a runner may lack."""
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def podman_cmd() -> list[str]:
    podman = require_tool("podman", APT_HINT)
    require_tool("runc", APT_HINT)
    return [*_sudo(), podman, "--cgroup-manager=cgroupfs", "--runtime", "runc"]


ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*podman_cmd(), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} … exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def base_image() -> str:
    """A Python 3.11 base image from Debian packages (no image registry needed), imported once."""
    key = hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:12]
    return _debian_image(
        f"localhost/churn-base:bookworm-{key}", CACHE / "images" / f"base-bookworm-{key}.tar", BASE_PACKAGES
    )


def _debian_image(tag: str, tar: Path, packages: tuple[str, ...], *hooks: str) -> str:
    """A bookworm image from Debian packages (mmdebstrap, no image registry), cached as a tar."""
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    if not tar.exists():
        mmdebstrap = require_tool("mmdebstrap", APT_HINT)
        tar.parent.mkdir(parents=True, exist_ok=True)
        partial = tar.with_suffix(".partial.tar")
        cmd = [
            *_sudo(),
            mmdebstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            *(f"--customize-hook={hook}" for hook in hooks),
            "bookworm",
            str(partial),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"mmdebstrap failed:\n{proc.stderr[-4000:]}"
        partial.rename(tar)
    podman("import", str(tar), tag)
    return tag


JRE_PACKAGES = ("openjdk-17-jre-headless",)


def jre_image() -> str:
    """A stand-in for the Spark target's ``JRE_IMAGE`` (Eclipse Temurin's, from a registry these
    machines do not reach): Debian's Java 17 runtime, its links resolved, at /opt/java/openjdk, the
    one path the Dockerfile copies."""
    key = hashlib.sha256(" ".join(JRE_PACKAGES).encode()).hexdigest()[:12]
    hook = 'mkdir -p "$1/opt/java" && chroot "$1" sh -c "cp -rL /usr/lib/jvm/java-17-openjdk-* /opt/java/openjdk"'
    return _debian_image(
        f"localhost/churn-jre:bookworm-{key}", CACHE / "images" / f"jre-bookworm-{key}.tar", JRE_PACKAGES, hook
    )


def wheelhouse(image: str) -> Path:
    """The wheels the image's locks pin, downloaded on the host (scripts/wheelhouse.sh)."""
    locks = WHEELHOUSE_LOCKS[image]
    dest = CACHE / "wheelhouse" / ("drift" if image == "drift" else "main")
    cmd = ["bash", str(REPO / "scripts" / "wheelhouse.sh"), str(dest), *(str(REPO / "requirements" / n) for n in locks)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHON": sys.executable}
    )
    assert proc.returncode == 0, f"wheelhouse failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return dest


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tag: str
    size_bytes: int


def build(image: str, base: str) -> BuiltImage:
    """Build docker/Dockerfile.<image> (or the target :data:`TARGETS` names) with no network: only
    the base images and the wheelhouse."""
    tag = f"localhost/churn-platform-{image}:test"
    dockerfile, target = TARGETS.get(image, (image, None))
    extra = ["--target", target, "--build-arg", f"JRE_IMAGE={jre_image()}"] if target == "spark" else []
    podman(
        "build",
        "--network",
        "none",
        *ULIMITS,
        *extra,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-context",
        f"wheelhouse={wheelhouse(image)}",
        "-f",
        str(REPO / "docker" / f"Dockerfile.{dockerfile}"),
        "-t",
        tag,
        str(REPO),
        timeout=1800,
    )
    info = json.loads(podman("image", "inspect", tag).stdout)[0]
    return BuiltImage(image, tag, int(info["Size"]))


def prune_stale_layers(older_than: str = "24h") -> None:
    """Drop untagged images older than ``older_than``: every code change leaves the previous build's
    final layers behind, so without this each run grows podman's store by gigabytes. Younger ones
    stay, which keeps the layer cache of the current day's builds."""
    podman("image", "prune", "--force", "--filter", f"until={older_than}", check=False)


def pod_flags(pod: Mapping[str, Any], container: Mapping[str, Any], volumes: Path) -> list[str]:
    """podman flags for what the chart asks of a container: user, read-only root, dropped
    capabilities, no privilege escalation, and its emptyDir mounts as folders under ``volumes``
    shared by every container of the pod, as a kubelet shares an emptyDir between them."""
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup", user))
    flags = ["--user", f"{user}:{group}"] if user is not None else []
    if csc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in csc.get("capabilities", {}).get("drop", []):
        flags.append("--cap-drop=all")
    if csc.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty:
            folder = volumes / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)  # what fsGroup gives the pod's user on a real emptyDir
            flags += ["--volume", f"{folder}:{mount['mountPath']}:rw"]
    return flags


def env_flags(env: Mapping[str, str]) -> list[str]:
    return [f for k, v in sorted(env.items()) for f in ("--env", f"{k}={v}")]


def run_container(
    image: str,
    command: list[str] | None,
    args: list[str],
    flags: list[str],
    env: Mapping[str, str],
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run one container to completion on the host network (it reaches the host's test servers);
    ``command`` replaces the image's entrypoint, as a pod's ``command`` does."""
    entry = ["--entrypoint", json.dumps(command)] if command else []
    return podman(
        "run",
        "--rm",
        "--network",
        "host",
        *ULIMITS,
        *flags,
        *env_flags(env),
        *entry,
        image,
        *args,
        timeout=timeout,
        check=False,
    )


@contextmanager
def running_container(
    image: str, command: list[str] | None, args: list[str], flags: list[str], env: Mapping[str, str]
) -> Iterator[str]:
    """A detached container (its name, for :func:`logs`), removed afterwards."""
    name = f"churn-test-{os.getpid()}-{hashlib.sha1(repr(args).encode()).hexdigest()[:8]}"
    entry = ["--entrypoint", json.dumps(command)] if command else []
    podman("run", "-d", "--name", name, "--network", "host", *ULIMITS, *flags, *env_flags(env), *entry, image, *args)
    try:
        yield name
    finally:
        podman("rm", "-f", name, check=False)


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return (proc.stdout + proc.stderr)[-6000:]
