#!/usr/bin/env bash
# What was run on the lent GPU machine (an H100) to prove the CUDA path and take the GPU figures
# of docs/benchmarks.md. Run from the project root there, with the project and its dependencies installed:
#   bash bench/gpu_session.sh prove     # CUDA tests, a 3-trial default.yaml search loaded on CPU,
#                                       # one trial profiled, eager against CUDA graph
#   bash bench/gpu_session.sh measure   # the benchmarks' 50-trial search, promote best, workers per GPU
#   bash bench/gpu_session.sh loader_and_tests   # trainer against loader; CUDA test run
# Results go to $OUT (or ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
root=$PWD
step() { echo; echo "=== $* ($(date +%T))"; }

prove() {
    step "device"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
    lscpu | grep -m1 "Model name" | tee -a "$out/device.txt"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"
    step "eager against CUDA graph, one epoch profiled"
    timeout 200 python3 bench/profile_trial.py --images 20000 2>&1 | tee "$out/profile.txt"
    step "the CPU suite's core on CUDA"
    # These tests expect one search process; the GPU default (several workers) is proven below.
    PIPELINE_TEST_DEVICE=cuda PIPELINE_WORKERS=1 timeout 300 python3 -m pytest -q -p no:cacheprovider \
        tests/train tests/data/test_augment.py tests/search \
        tests/ship/test_shipping.py -k "not browser and not mlflow_ui and not ui_refuses" \
        2>&1 | tee "$out/tests.txt" | tail -40
    step "3 trials of default.yaml on CUDA; their models loaded and run on the CPU"
    work=$(mktemp -d); cd "$work"
    timeout 240 python3 -m pipeline search --trials 3 --space default --study gpu3 2>&1 | tail -25
    CUDA_VISIBLE_DEVICES= python3 - <<'PY' 2>&1 | tee "$out/load_on_cpu.txt"
import mlflow, numpy as np, optuna, torch
from pipeline.data.sources import load_mnist
assert not torch.cuda.is_available()
mlflow.set_tracking_uri("sqlite:///mlflow.db")
study = optuna.load_study(study_name="gpu3", storage="sqlite:///optuna.db")
test = load_mnist().test
x, y = (test.images[:2000].float() / 255).numpy(), test.labels[:2000].numpy()
for t in study.trials:
    uri = t.user_attrs.get("model_uri")
    if uri:
        digits = mlflow.pyfunc.load_model(uri).predict(x)
        print(f"trial {t.number} ({t.state.name}, trained on {t.user_attrs.get('worker')}): "
              f"loaded on the CPU, {(digits == y).mean():.2%} of 2,000 test images")
    else:
        print(f"trial {t.number}: {t.state.name} {t.user_attrs.get('reason', '')}")
PY
    cd "$root"
}

measure() {
    step "pipeline search --trials 50 (the default on a GPU: default.yaml, workers per GPU)"
    work=$(mktemp -d); cd "$work"
    start=$SECONDS
    timeout 310 python3 -m pipeline search --trials 50 2>&1 | tee "$out/search50.txt" | tail -32
    echo "wall $((SECONDS - start)) s" | tee -a "$out/search50.txt"
    step "pipeline promote best"
    timeout 60 python3 -m pipeline promote best 2>&1 | tee "$out/promote.txt"
    cp reports/mnist-default/top_trials.csv "$out/" 2>/dev/null
    cd "$root"
}

workers_loader_tests() {
    step "workers per GPU"
    timeout 240 python3 bench/workers.py --device cuda --space default --workers 1,2,4,8 --trials 16 --train-subset 6000 2>&1 | grep -v "frombuffer\|not writable" | tee "$out/workers.txt"
    loader_and_tests
}

loader_and_tests() {
    step "trainer against the seed reports' loader, CUDA"
    timeout 90 python3 bench/trainer_vs_loader.py --device cuda --images 25600 --workers 4 2>&1 | tee "$out/trainer_vs_loader.txt"
    step "the CPU suite's core on CUDA: search and shipping"
    # These tests expect one search process, and load models themselves as the docs say a
    # GPU machine should (MLFLOW_DEFAULT_PREDICTION_DEVICE=cpu).
    PIPELINE_TEST_DEVICE=cuda PIPELINE_WORKERS=1 MLFLOW_DEFAULT_PREDICTION_DEVICE=cpu \
        timeout 200 python3 -m pytest -q -p no:cacheprovider -rf --durations=8 \
        tests/ship/test_shipping.py tests/search/test_search.py \
        -k "not browser and not mlflow_ui and not ui_refuses" 2>&1 | tee "$out/tests.txt" | tail -30
}

"$@"
