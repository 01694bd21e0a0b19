#!/usr/bin/env bash
# The prepared GPU check (issue 9), for one GPU, in at most 10 minutes: the full training loop against a
# textbook loop and its MFU, one epoch of the colab profile's PGD-AT and C-LEAD online (scaled to 50,000
# images), and notebooks 01 and 05 executed in the colab profile; every figure in benchmarks/results/gpu_check.json.
#
#   bash scripts/gpu_check.sh            # on the GPU machine (no internet: uses .gpu_bundle/ when it is there)
#   bash scripts/gpu_check.sh --tiny     # on a CPU, tiny sizes: proves the code path (tests/test_gpu_check.py)
#
# Before, where the internet works: bash scripts/make_gpu_bundle.sh (wheels + MNIST into .gpu_bundle/, ignored
# by git, under 50 MiB so that it travels with the repository). Extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3 )}
BUNDLE=${GPU_BUNDLE:-.gpu_bundle}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONHASHSEED=0

# 1. the Python packages this check needs that the machine lacks: unpacked from the carried pure-Python wheels
#    into $BUNDLE/site (put on PYTHONPATH after the check found them missing, so installed ones are never shadowed)
site=$("$PY" - "$BUNDLE" <<'PYEOF'
import glob, importlib.util, os, sys, zipfile
bundle = sys.argv[1]
need = {"mlxtend": "mlxtend", "pyautoattack": "pyautoattack", "umap": "umap_learn", "pynndescent": "pynndescent",
        "torchattacks": "torchattacks", "nbclient": "nbclient", "nbformat": "nbformat", "fastjsonschema": "fastjsonschema",
        "ipywidgets": "ipywidgets", "comm": "comm", "matplotlib_inline": "matplotlib_inline", "seaborn": "seaborn"}
site = os.path.join(bundle, "site")
used = False
for module, dist in need.items():
    if importlib.util.find_spec(module) is not None:
        continue
    wheels = sorted(glob.glob(os.path.join(bundle, "wheels", f"{dist}-*.whl")))
    if not wheels:
        print(f"[gpu_check] {module} is missing and {bundle}/wheels has no {dist} wheel", file=sys.stderr)
        continue
    zipfile.ZipFile(wheels[-1]).extractall(site)
    print(f"[gpu_check] {module}: unpacked {os.path.basename(wheels[-1])}", file=sys.stderr)
    used = True
print(os.path.abspath(site) if used else "")
PYEOF
)
[[ -n "$site" ]] && export PYTHONPATH="$PYTHONPATH:$site"

# 2. real data: MNIST's gzip files from the bundle, unpacked where torchvision looks (CLEAD_DATA_ROOT)
if [[ -z "${CLEAD_DATA_ROOT:-}" && -d "$BUNDLE/data/MNIST/raw" ]]; then
  export CLEAD_DATA_ROOT="$PWD/$BUNDLE/data"
  for gz in "$BUNDLE"/data/MNIST/raw/*.gz; do
    [[ -f "${gz%.gz}" ]] || gunzip -kf "$gz"
  done
fi

exec "$PY" benchmarks/gpu_check.py "$@"
