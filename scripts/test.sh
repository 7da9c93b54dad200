#!/usr/bin/env bash
# Install into ./.venv and run the whole test suite (what CI runs). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_SILENT=true
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
