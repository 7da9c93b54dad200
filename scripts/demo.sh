#!/usr/bin/env bash
# The whole demo on a fresh machine: install into ./.venv, train IR-SDE briefly on the built-in demo data (to
# show training works: the loss falls), then evaluate the shipped demo checkpoint on the held-out demo images:
# per-image and mean PSNR/SSIM of the degraded input vs the restored output, and a picture LQ | restored | GT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_SILENT=true
PY=.venv/bin/python

echo "== 1/2 training IR-SDE from scratch on the demo data (Gaussian noise over scikit-image photos) =="
$PY train.py experiment=irsde_demo hydra.run.dir=runs/demo/train

echo
echo "== 2/2 evaluating the shipped demo checkpoint (assets/irsde_demo_denoise.ckpt, trained with"
echo "       python train.py experiment=irsde_demo_ckpt) on the held-out demo images =="
$PY evaluate.py ckpt=assets/irsde_demo_denoise.ckpt out=runs/demo/eval
echo
echo "picture (LQ | restored | GT): runs/demo/eval/preview.png   metrics: runs/demo/eval/metrics.json"
echo "the model trained in step 1 is in runs/demo/train/checkpoints/last.ckpt (python evaluate.py ckpt=...)"
