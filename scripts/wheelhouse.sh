#!/usr/bin/env bash
# Download every wheel that hashed lock files pin into one folder (a wheelhouse), so that an image
# build can install them with `pip install --no-index --require-hashes` and never reach a package
# index: the air-gapped build path (docs/deploy.md), also the one the image tests take.
#
#   scripts/wheelhouse.sh DEST LOCK [LOCK...]
#   e.g. scripts/wheelhouse.sh ~/wheels/main requirements/main.txt requirements/build.txt
#
# The wheels are for the platform of the Python running this script (PYTHON, default python3);
# for another one pass pip's own options, e.g.
#   PIP_DOWNLOAD_ARGS="--platform manylinux_2_28_aarch64 --python-version 3.11" scripts/wheelhouse.sh ...
# A folder already made from the same lock files is kept as it is; otherwise the new one is
# filled beside it and swapped in only when complete, so an interrupted run leaves nothing half-made.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 DEST LOCK [LOCK...]" >&2
  exit 2
fi
dest=${1%/}
shift
python=${PYTHON:-python3}
read -r -a extra <<<"${PIP_DOWNLOAD_ARGS:-}"

want=$(cat "$@" | sha256sum | cut -d' ' -f1)-${PIP_DOWNLOAD_ARGS:-host}
if [[ -f "$dest/.locks" && "$(cat "$dest/.locks")" == "$want" ]]; then
  echo "wheelhouse: $dest is up to date"
  exit 0
fi

mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for lock in "$@"; do
  "$python" -m pip download --disable-pip-version-check --quiet --require-hashes \
    --only-binary=:all: --no-deps "${extra[@]}" --dest "$tmp" -r "$lock"
done
echo "$want" >"$tmp/.locks"
rm -rf "$dest.old"
if [[ -d "$dest" ]]; then mv "$dest" "$dest.old"; fi
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT
echo "wheelhouse: $(find "$dest" -name '*.whl' | wc -l) wheels in $dest"
