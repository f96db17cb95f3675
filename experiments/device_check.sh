#!/usr/bin/env bash
# The accelerator check on a GPU machine without network that has its own JAX stack preinstalled (jax, jaxlib and
# the CUDA plugin, numpy, flax, optax, chex, orbax-checkpoint, scipy, matplotlib, seaborn, pytest, pytest-xdist):
# one command, run from the repository root with the wheels of experiments/device_wheels.txt in .whl/
# (experiments/fetch_device_wheels.sh downloads them beforehand, on a machine with network):
#
#   bash experiments/device_check.sh [accelerator_check.py options, e.g. --budget 300 or --parts tests]
#
# It installs the wheels into $SITE (default /tmp/site) with --no-deps, never touching the machine's own packages;
# puts the repository first and $SITE second on PYTHONPATH (this package is imported from the repository, not
# installed); prints the versions; checks that JAX sees the expected backend ($EXPECT_BACKEND, default gpu: a CUDA
# plugin that fails to load would otherwise make JAX fall back to the CPU, and the check would measure the wrong
# thing); then runs experiments/accelerator_check.py --out "$OUT/gpu" --budget 480 (8 minutes, less if the set-up
# took more than a minute; options given to this script come later and win). Every step has a hard time limit and
# the whole command ends in about $DEADLINE_S seconds at most (default 570: the device machine allows one command 600 s).
#
# Results, all under $OUT (the folder the device machine sends back; default ./device_out): device_check.txt (this
# script's output: install, versions, backend), gpu/results.json, gpu/results.md and gpu/log.txt (the check's).
# The tail of results.md is printed at the end. Exit status: the check's (0 when every part is ok), 3 when the
# wheels do not install, 4 when JAX does not come up on the expected backend.
#
# A rehearsal on any machine with the same Python: EXPECT_BACKEND=cpu OUT=/tmp/out bash experiments/device_check.sh --tiny
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
root="$PWD"
out="${OUT:-$root/device_out}"
site="${SITE:-/tmp/site}"
py="${PYTHON:-python3}"
expect="${EXPECT_BACKEND:-gpu}"
mkdir -p "$out/gpu" || exit 2
log="$out/device_check.txt"
: > "$log"
say() { echo "$*" | tee -a "$log"; }

say "device_check: $(date -u +%FT%TZ), $(command -v "$py") ($("$py" -V 2>&1)), $(nproc) CPUs, repo $root"
command -v nvidia-smi > /dev/null && timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader 2>&1 | tee -a "$log"

shopt -s nullglob
wheel_dir="${WHEELS:-.whl}"
wheels=("$wheel_dir"/*.whl)
if [ "${#wheels[@]}" -eq 0 ]; then
    say "device_check: no wheels in $wheel_dir/ (run experiments/fetch_device_wheels.sh where there is network, and carry .whl)"
    exit 3
fi
say "installing ${#wheels[@]} wheels into $site"
if ! "$py" -m pip --version > /dev/null 2>&1; then
    # No pip: a wheel without a .data folder (every one listed) installs by unpacking it where Python looks.
    say "device_check: no pip for $py; unpacking the wheels into $site instead"
    install=("$py" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]'
             "$site")
else
    install=("$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site")
fi
if ! timeout 180 "${install[@]}" "${wheels[@]}" >> "$log" 2>&1; then
    say "device_check: pip install of $wheel_dir/*.whl into $site failed (output above in $log)"
    tail -20 "$log"
    exit 3
fi
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the test part's workers share the device
export PYTHONUNBUFFERED=1

before_probe=$(wc -l < "$log")
# Versions of everything the check imports, and the backend JAX comes up on (a first CUDA start can take a while).
timeout 180 "$py" - "$expect" >> "$log" 2>&1 <<'EOF'
import sys
from importlib import metadata
names = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "numpy",
         "scipy", "flax", "optax", "chex", "orbax-checkpoint", "ml-dtypes", "gymnax", "gymnasium", "brax", "mujoco",
         "mujoco-core", "mujoco-mjx", "jaxopt", "trimesh", "ml-collections", "matplotlib", "seaborn", "pytest",
         "pytest-xdist"]
for name in names:
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} not installed")
import importlib
import jax
for module in ("ppocma_jax", "gymnax", "brax.envs", "mujoco.mjx", "tensorboardX"):  # a failure here: that part fails
    try:
        print(f"import {module}: ok ({importlib.import_module(module).__file__})")
    except Exception as exc:
        print(f"import {module}: FAILED {type(exc).__name__}: {exc}")
print(f"backend {jax.default_backend()}, devices {jax.devices()}")
sys.exit(0 if jax.default_backend() == sys.argv[1] else 4)
EOF
status=$?
tail -n "+$((before_probe + 1))" "$log"
if [ "$status" -ne 0 ]; then
    say "device_check: JAX or an import did not come up on backend '$expect' (exit $status); not running the check"
    exit 4
fi

# The check itself, in what is left of $DEADLINE_S (default 570 s: the device machine allows one command 600 s):
# its --budget bounds every part (each is killed at its limit); timeout is the last resort.
left=$(( ${DEADLINE_S:-570} - SECONDS ))
budget=$(( left - 30 < 480 ? left - 30 : 480 ))
say "device_check: ${SECONDS} s of set-up; accelerator check with --budget $budget (hard limit $left s)"
timeout -k 10 "$left" "$py" experiments/accelerator_check.py --out "$out/gpu" --budget "$budget" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
say "device_check: accelerator_check.py exit status $status"
if [ -f "$out/gpu/results.md" ]; then
    echo "----- $out/gpu/results.md (tail)"
    tail -c 7000 "$out/gpu/results.md"
fi
exit "$status"
