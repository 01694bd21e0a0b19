#!/usr/bin/env bash
# Create .venv (if missing) and install clead_lite with everything the course and its tests need.
# Works offline except for the package registry. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision from the registry (on a machine without a GPU the default build still runs on the CPU)
.venv/bin/python -m pip install -q -e ".[course,test]"
# torchattacks is only an independent reference; its requests~=2.25.1 pin clashes with jupyterlab, so no deps
.venv/bin/python -m pip install -q --no-deps torchattacks==3.5.1
.venv/bin/python - <<'PY'
import torch, torchvision, clead_lite
print(f"[setup] ok: clead_lite {clead_lite.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, cuda available: {torch.cuda.is_available()}")
PY
