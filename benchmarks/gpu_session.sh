#!/usr/bin/env bash
# Every GPU check and figure of the README's "Speed" section in one run, sized for a lent GPU session (about 5-8
# minutes on an H100/H200, most of it torch.compile). Uses the machine's python3 (a CUDA build of PyTorch) with this
# checkout on PYTHONPATH; the log and the JSON results land in $OUT:
#
#     OUT=gpu-results bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
benchmark() { "$python" -m egtr.cli benchmark --device cuda --scope model "$@"; }
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    # Correctness first: CUDA paths against the CPU ones, and no host sync in the loss.
    "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/losses/test_no_host_sync.py
    # Batch 1 at 600x1000 (the paper's FPS setting; the original: 37.7 ms fp32 on an H200).
    benchmark --dtype float32 --out "$OUT/batch1_fp32.json"
    benchmark --dtype bfloat16 --out "$OUT/batch1_bf16.json"
    benchmark --dtype bfloat16 --compile reduce-overhead --warmup 20 --out "$OUT/batch1_bf16_compiled.json"
    # Throughput: a batch of 32 padded 600x1000 inputs.
    benchmark --dtype bfloat16 --batch-size 32 --runs 20 --out "$OUT/batch32_bf16.json"
    # ONNX Runtime's CUDA and TensorRT execution providers (needs onnxruntime-gpu; skipped with a line if absent).
    if "$python" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
        "$python" -m egtr.cli export --out "$OUT/vg_onnx" --model "$("$python" -c "
import tempfile, torch; from egtr import EGTR, EGTRConfig; d = tempfile.mkdtemp(); torch.manual_seed(0)
EGTR(EGTRConfig()).save_pretrained(d); print(d)")"
        benchmark --model "$OUT/vg_onnx" --runtime onnxruntime --out "$OUT/batch1_onnxruntime_cuda.json"
        benchmark --model "$OUT/vg_onnx" --runtime onnxruntime --device tensorrt --warmup 5 \
            --out "$OUT/batch1_onnxruntime_tensorrt.json"
    else
        echo "onnxruntime-gpu is not installed: the ONNX Runtime CUDA/TensorRT rows are not measured"
    fi
    "$python" benchmarks/deformable_attention.py --device cuda --runs 50
    "$python" benchmarks/relation_head.py --device cuda --batch-size 4
    "$python" benchmarks/train_step.py --device cuda --dtype bf16 --batch-size 8 --steps 20
} 2>&1 | tee "$OUT/log.txt"
