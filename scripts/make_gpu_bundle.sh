#!/usr/bin/env bash
# Fill .gpu_bundle/ (ignored by git) with what scripts/gpu_check.sh needs on a GPU machine without internet:
# pure-Python wheels (gpu_check.sh unpacks only those whose module is missing there) of the course's small dependencies (mlxtend, pyautoattack, umap-learn, pynndescent, torchattacks, the
# notebook runner) and MNIST's original gzip files (about 11 MB) from $CLEAD_SHARED_DATA (default /work/shared/data).
# torch, torchvision and the large scientific wheels are expected on the GPU machine; the bundle stays under
# $BUNDLE_MAX_MIB (default 48) so that it and the repository (about 11 MB) fit the 64 MiB the machine receives.
#
# The lent machine runs Python 3.12 (x86-64, no internet): the default PY_VERSION is 3.12 and every wheel is a
# binary (or pure) one for that Python and manylinux, fetched with the device README's platform flags. nbformat
# needs jsonschema, referencing, jsonschema-specifications and rpds-py (a compiled wheel): all are fetched.
#
#   bash scripts/make_gpu_bundle.sh                  # where the package registry is reachable
#   PY_VERSION=3.11 bash scripts/make_gpu_bundle.sh  # wheels for another Python (the offline test: this one's)
#   PIP_FIND_LINKS=dir  ...                          # take the wheels from a download cache first
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3 )}
BUNDLE=${GPU_BUNDLE:-.gpu_bundle}
SHARED=${CLEAD_SHARED_DATA:-/work/shared/data}
MAX_MIB=${BUNDLE_MAX_MIB:-48}
PYVER=${PY_VERSION:-3.12}
PLAT=(--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64)
rm -rf "$BUNDLE/site"                  # left by older versions of gpu_check.sh
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data/MNIST/raw"

# small wheels, without their dependencies (numpy, scipy, scikit-learn, pandas, numba are large and usually
# present; gpu_check.sh installs only what is missing)
SMALL="mlxtend pyautoattack umap-learn pynndescent torchattacks==3.5.1 nbclient nbformat fastjsonschema
       ipywidgets widgetsnbextension jupyterlab-widgets comm matplotlib-inline seaborn
       jsonschema referencing jsonschema-specifications rpds-py attrs jupyter_core traitlets"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" "${PLAT[@]}" -d "$BUNDLE/wheels" $SMALL

# the notebook kernel and its dependencies (pyzmq, tornado, ipython, ...; about 15 MB) for a machine without
# Jupyter; wheels for this platform and Python $PYVER
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" "${PLAT[@]}" -d "$BUNDLE/wheels" ipykernel jupyter_client

# pyautoattack's wheel carries a 45 MB example model (pyautoattack/examples/): keep the code only
"$PY" - "$BUNDLE/wheels" <<'PYEOF'
import glob, os, sys, zipfile
for path in glob.glob(os.path.join(sys.argv[1], "pyautoattack-*.whl")):
    with zipfile.ZipFile(path) as z:
        keep = [(i, z.read(i)) for i in z.infolist() if "/examples/" not in i.filename]
    if len(keep) < len(zipfile.ZipFile(path).infolist()):
        with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
            for info, data in keep:
                out.writestr(info, data)
        os.replace(path + ".tmp", path)
        print(f"[bundle] {os.path.basename(path)}: dropped its examples/ folder")
PYEOF

for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  src="$SHARED/MNIST/raw/$f"
  if [[ -f "$src.gz" ]]; then cp "$src.gz" "$BUNDLE/data/MNIST/raw/"
  elif [[ -f "$src" ]]; then gzip -9 -c "$src" > "$BUNDLE/data/MNIST/raw/$f.gz"
  else echo "[bundle] $src(.gz) not found: no MNIST in the bundle (the check then uses mnist5k)" >&2; fi
done

size=$(du -sm "$BUNDLE" | cut -f1)
echo "[bundle] $BUNDLE: ${size} MiB ($(ls "$BUNDLE/wheels" | wc -l) wheels, python $PYVER)"
if (( size > MAX_MIB )); then
  echo "[bundle] over $MAX_MIB MiB: it will not fit next to the repository in 64 MiB" >&2
  exit 1
fi
