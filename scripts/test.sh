#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test: the package's unit tests, the notebooks executed top to bottom
# in the smoke profile (nbval), the real-browser test (headless Chromium from Debian's packages), then the
# mutation check's fast subset (scripts/mutants.py --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[test] installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[test] /usr/bin/chromium is missing: install Debian's chromium (sudo apt-get install chromium) — the browser test will fail" >&2
  fi
fi
export CLEAD_PROFILE=smoke MPLBACKEND=Agg PYTHONHASHSEED=0
.venv/bin/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider -q -ra "$@"
# the mutation check: deliberate bugs that the tests above must catch (the fast subset; --all: scripts/mutants.py)
.venv/bin/python scripts/mutants.py --fast
