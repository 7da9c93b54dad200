#!/usr/bin/env bash
# Create ./.venv (if needed) and install the suite's requirements into it. Usage: bash scripts/setup_env.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and alone: pip then takes the pinned wheels (served locally on the project's CI machines)
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
if [ "${1:-}" = "dev" ]; then
  .venv/bin/pip install -q -r requirements-dev.txt
else
  .venv/bin/pip install -q -r requirements.txt
fi
# NIQE's pristine model (niqe_pris_params.npz, from the NIQE authors' release) ships inside MMagic's wheel
# (Apache-2.0); core/noreference.py reads only that file, so the package goes in without its dependencies
.venv/bin/pip install -q --no-deps mmagic==1.2.0
