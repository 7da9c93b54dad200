#!/usr/bin/env bash
# The checks that need a GPU, in one run of under 10 minutes on one CUDA device:
#   bash scripts/gpu_check.sh            (results and logs in runs/gpu_check/, or $OUT)
# 1. the CUDA tests (tests/gpu: networks and samplers on CUDA against the CPU, the bf16 fast path);
# 2. a short training of each demo experiment with trainer.accelerator=gpu trainer.precision=bf16-mixed;
# 3. an evaluation of the shipped demo model on CUDA, official sampler and fast path, and its images/s;
# 4. the IR-SDE speed benchmarks with --device cuda (eager and torch.compile'd fast path) and activation
#    checkpointing's memory and step time for every large network at its official batch and patch size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_SILENT=true
step() { echo; echo "== $* ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.version.cuda)"

step "CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/tests.txt"

step "short bf16 trainings on the GPU"
GPU=(trainer.accelerator=gpu trainer.precision=bf16-mixed trainer.max_steps=100 trainer.max_time=null
     trainer.val_check_interval=50 logger=csv paths.log_dir="$OUT/runs")
for exp in irsde_demo irsde_demo_derain diffir_s1_demo diffpir_prior_demo; do
    timeout 150 "$PY" train.py experiment=$exp "${GPU[@]}" name=$exp 2>&1 | tail -n 3 | tee -a "$OUT/train.txt"
done
s1=$(ls -t "$OUT"/runs/diffir_s1_demo/*/checkpoints/last.ckpt | head -n 1)
timeout 150 "$PY" train.py experiment=diffir_s2_demo model.stage1_ckpt="$s1" "${GPU[@]}" name=diffir_s2_demo \
    2>&1 | tail -n 3 | tee -a "$OUT/train.txt"

step "evaluation on CUDA"
"$PY" evaluate.py ckpt=assets/irsde_demo_denoise.ckpt device=cuda out="$OUT/eval_official" progress=false \
    | tee "$OUT/eval.txt"
"$PY" evaluate.py ckpt=assets/irsde_demo_denoise.ckpt device=cuda precision=bf16 sampler=mr_ode steps=5 \
    out="$OUT/eval_fast" progress=false | tee -a "$OUT/eval.txt"

step "evaluation throughput on one GPU (evaluate.py through Lightning's Trainer.test)"
"$PY" -m benchmarks.inference_scaling --device cuda --cells 1x1 --images 32 --size 256 --repeats 1 \
    --out "$OUT/inference_scaling_cuda.json"

step "a large photo: pixel IR-SDE against latent Refusion (restore.py end to end, peak CUDA memory)"
"$PY" -m benchmarks.irsde_large_photo --device cuda --out "$OUT/irsde_large_photo_cuda.json"

step "speed benchmarks on CUDA"
"$PY" -m benchmarks.realesrgan_degradation --device cuda --out "$OUT/realesrgan_degradation_cuda.json"
"$PY" -m benchmarks.irsde_fast_path --device cuda --fast mr_ode:2@10 mr_ode:2@5 --out "$OUT/irsde_fast_path.json"
"$PY" -m benchmarks.irsde_fast_path --device cuda --fast mr_ode:2@10 mr_ode:2@5 --compile \
    --out "$OUT/irsde_fast_path_compiled.json"
"$PY" -m benchmarks.irsde_speed --device cuda --no-memory --out "$OUT/irsde_speed.json"
"$PY" -m benchmarks.activation_checkpointing --device cuda --out "$OUT/activation_checkpointing_cuda.json"
echo; echo "done: $OUT"
