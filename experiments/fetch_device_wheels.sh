#!/usr/bin/env bash
# Download the wheels listed in experiments/device_wheels.txt, for CPython 3.12 on manylinux x86_64, into DEST
# (default: .whl at the repository root), replacing the wheels there. Needs network and pip; fetches nothing else.
#
#   bash experiments/fetch_device_wheels.sh [DEST]
#   PIP="path/to/venv/bin/pip" PYTHON_VERSION=3.11 bash experiments/fetch_device_wheels.sh /tmp/whl311
#
# PIP defaults to "python3 -m pip"; PYTHON_VERSION (default 3.12, the GPU machine's Python) picks the binary wheels
# (mujoco-core is the only one with compiled code).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.whl}"
pip_cmd=(${PIP:-python3 -m pip})
pyver="${PYTHON_VERSION:-3.12}"
mapfile -t reqs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$root/experiments/device_wheels.txt" | grep -v '^$')
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${pip_cmd[@]}" download --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$tmp" "${reqs[@]}"
n=$(ls "$tmp"/*.whl | wc -l)
if [ "$n" -ne "${#reqs[@]}" ]; then
    echo "fetch_device_wheels: got $n wheels for ${#reqs[@]} requirements" >&2
    exit 1
fi
mkdir -p "$dest"
rm -f "$dest"/*.whl  # an old version left next to a new one would make pip refuse both
mv "$tmp"/*.whl "$dest"/
echo "$n wheels, $(du -sh "$dest" | cut -f1) in $dest"
