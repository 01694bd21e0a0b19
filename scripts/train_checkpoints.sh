#!/usr/bin/env bash
# Train the quick-profile checkpoints shipped in data/checkpoints/ (SmallCNN on the offline mnist5k) and
# record them in data/checkpoints/manifest.json (sha256, dataset, method, profile, command), then fill in each
# entry's full config, model-store key and metrics on the first n_eval test images (scripts/update_manifest.py).
# Usage: bash scripts/train_checkpoints.sh [methods...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
methods=${*:-standard pgd_at clead_online clead_faithful}
for m in $methods; do
  out=data/checkpoints/mnist5k_${m}_quick.pt
  $PY -m clead_lite train --method "$m" --dataset mnist5k --profile quick --seed 0 --retrain \
      --out "$out" --no-progress --json "build/checkpoints/${m}.json"
  $PY - "$out" "$m" <<'PY'
import json, sys
from clead_lite.course.checkpoints import load_checkpoint, write_manifest_entry
path, method = sys.argv[1], sys.argv[2]
state = load_checkpoint(path)
write_manifest_entry(path, dataset="mnist5k", method=method, profile="quick", model="smallcnn",
                     metrics=state.get("metrics"), seed=0, command=state.get("command"))
print("manifest entry written for", path)
PY
done
$PY scripts/update_manifest.py
