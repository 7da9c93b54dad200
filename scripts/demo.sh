#!/usr/bin/env bash
# The whole demo on a fresh machine: install into ./.venv, train IR-SDE briefly on the built-in demo data (to
# show training works: the loss falls), then evaluate the shipped demo checkpoint on the held-out demo images:
# per-image and mean PSNR/SSIM of the degraded input vs the restored output, and a picture LQ | restored | GT.
# Then DiffIR stage 2 deblurs the held-out photos with its shipped demo checkpoint, and last DiffPIR fills holes in
# held-out demo faces with the shipped demo prior (a DDPM trained on 90 faces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_SILENT=true
PY=.venv/bin/python

echo "== 1/5 training IR-SDE from scratch on the demo data (Gaussian noise over scikit-image photos) =="
$PY train.py experiment=irsde_demo hydra.run.dir=runs/demo/train

echo
echo "== 2/5 evaluating the shipped demo checkpoint (assets/irsde_demo_denoise.ckpt, trained with"
echo "       python train.py experiment=irsde_demo_ckpt) on the held-out demo images =="
$PY evaluate.py ckpt=assets/irsde_demo_denoise.ckpt out=runs/demo/eval perceptual=false
echo
echo "picture (LQ | restored | GT): runs/demo/eval/preview.png   metrics: runs/demo/eval/metrics.json"
echo "the model trained in step 1 is in runs/demo/train/checkpoints/last.ckpt (python evaluate.py ckpt=...)"

echo
echo "== 3/5 DiffIR stage 2: deblurring the held-out demo photos with the shipped demo checkpoint"
echo "       (assets/diffir_demo_s2.ckpt, trained with experiment=diffir_s1_demo_ckpt then diffir_s2_demo_ckpt) =="
$PY evaluate.py ckpt=assets/diffir_demo_s2.ckpt out=runs/demo/diffir perceptual=false

echo
echo "== 4/5 DiffPIR: box inpainting of the held-out demo faces, 20 NFEs, with the shipped demo prior"
echo "       (assets/diffpir_demo_faces_prior.ckpt, trained with python train.py experiment=diffpir_prior_demo) =="
$PY evaluate.py model=diffpir prior_ckpt=assets/diffpir_demo_faces_prior.ckpt task=inpainting mask=box \
    out=runs/demo/diffpir perceptual=false
echo
echo "== 5/5 real-world x4 super-resolution with the shipped DiffIR-RealSR demo (assets/diffir_realsr_demo_x4.ckpt,"
echo "       trained on Real-ESRGAN degradations of the demo photos: experiment=diffir_realsr_demo_s1, then _s2) =="
echo "-- held-out photos degraded by Real-ESRGAN's model with a fixed seed (input scores: bicubic upsampling)"
$PY evaluate.py ckpt=assets/diffir_realsr_demo_x4.ckpt out=runs/demo/realsr perceptual=false
echo "-- a photo saved by a real JPEG encoder (PIL, q60) after downscaling and sensor-like noise: never seen in training"
$PY scripts/real_photo.py --out runs/demo/realsr/real
$PY restore.py ckpt=assets/diffir_realsr_demo_x4.ckpt input=runs/demo/realsr/real/lq output=runs/demo/realsr/real/restored
echo "-- bicubic upsampling of that JPEG, then the demo model's restoration (PSNR/SSIM on Y, NIQE: lower is better)"
$PY evaluate.py restored=runs/demo/realsr/real/bicubic gt=runs/demo/realsr/real/gt convention=y out=runs/demo/realsr/real/scores_bicubic
$PY evaluate.py restored=runs/demo/realsr/real/restored gt=runs/demo/realsr/real/gt convention=y out=runs/demo/realsr/real/scores
echo
echo "pictures (measurement | restored | GT): runs/demo/eval/preview.png (IR-SDE), runs/demo/diffir/preview.png (DiffIR),"
echo "runs/demo/diffpir/preview.png (DiffPIR), runs/demo/realsr/preview.png and runs/demo/realsr/real/restored/ (real-world x4)"
