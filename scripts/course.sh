#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the course's main job on the offline default dataset:
#   1. the demo: a standard and a PGD-trained SmallCNN, briefly trained, and their evaluation table;
#   2. every student notebook executed headless in order (executed notebooks, figures and a time table in build/course).
# Profile: $CLEAD_PROFILE (smoke | quick | colab | paper), default quick on a CPU, colab on a GPU. Extra arguments go to
# `python -m clead_lite course` (e.g. `bash scripts/course.sh 01 02` runs two notebooks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
.venv/bin/python -m clead_lite demo --no-progress
.venv/bin/python -m clead_lite course --out build/course "$@"
