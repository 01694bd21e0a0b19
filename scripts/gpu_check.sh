#!/usr/bin/env bash
# The prepared GPU check (issues 9, 21), for one GPU, under one deadline (--deadline-s, default 540 s): one colab
# epoch on synthetic CIFAR-10 under fp16, bf16, fp32 and bf16 without cuDNN, C-LEAD online, the --gpu-loop comparison,
# and notebooks 01 and 05 in the colab profile. Every figure goes to $OUT/gpu_check.jsonl (and $OUT/<name>.json) as
# soon as it is measured, so a run stopped at its limit still returns what it measured.
#
#   bash scripts/gpu_check.sh            # on the GPU machine (no internet: uses .gpu_bundle/ when it is there)
#   bash scripts/gpu_check.sh --tiny     # on a CPU, tiny sizes: proves the code path (tests/test_gpu_check.py)
#
# Before, where the internet works: bash scripts/make_gpu_bundle.sh (wheels for Python 3.12 into .gpu_bundle/,
# ignored by git, under 48 MiB so that it travels with the repository; carry it). Extra arguments go to
# benchmarks/gpu_check.py. The no-network install from the bundle alone: tests/test_gpu_bundle_offline.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3 )}
BUNDLE=${GPU_BUNDLE:-.gpu_bundle}
WORK=build/gpu_check            # unpacked wheels and data go here (ignored, never carried back)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONHASHSEED=0

# 1. the Python packages the machine lacks: every carried wheel none of whose top-level modules imports here is
#    unpacked into $WORK/site, which goes on PYTHONPATH (installed packages are never shadowed)
site=$("$PY" - "$BUNDLE" "$WORK/site" <<'PYEOF'
import glob, importlib.util, os, sys, zipfile
bundle, site = sys.argv[1], sys.argv[2]
used = False
for wheel in sorted(glob.glob(os.path.join(bundle, "wheels", "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        # the wheel's importable top-level names: packages and modules, not its metadata or bundled libraries
        tops = {n.split("/")[0].removesuffix(".py") for n in z.namelist()
                if not n.split("/")[0].endswith((".dist-info", ".data", ".libs")) and (n.endswith(".py") or "/" in n)}
        tops = {t.split(".")[0] for t in tops if t and not t.startswith("_")} or {t for t in tops if t}
        if not tops or any(importlib.util.find_spec(t) is not None for t in tops):
            continue              # installed here already: never shadow it
        z.extractall(site)
    print(f"[gpu_check] unpacked {os.path.basename(wheel)} ({', '.join(sorted(tops))} missing)", file=sys.stderr)
    used = True
print(os.path.abspath(site) if used else "")
PYEOF
)
[[ -n "$site" ]] && export PYTHONPATH="$PYTHONPATH:$site"

# 2. real data: MNIST's gzip files from the bundle, unpacked where torchvision looks (CLEAD_DATA_ROOT)
if [[ -z "${CLEAD_DATA_ROOT:-}" && -d "$BUNDLE/data/MNIST/raw" ]]; then
  mkdir -p "$WORK/data/MNIST/raw"
  for gz in "$BUNDLE"/data/MNIST/raw/*.gz; do
    raw="$WORK/data/MNIST/raw/$(basename "${gz%.gz}")"
    [[ -f "$raw" ]] || gunzip -c "$gz" > "$raw"
  done
  export CLEAD_DATA_ROOT="$PWD/$WORK/data"
fi

exec "$PY" benchmarks/gpu_check.py "$@"
