#!/usr/bin/env bash
# The real-GPU check, on a machine with an NVIDIA GPU and no network (see bench/README.md):
#   carried: .gl/*.deb  (Vulkan loader + GL libraries, `apt-get download` on an amd64 Debian)
#            .whl/*.whl (ai-edge-litert, onnxruntime-webgpu, backports.strenum for its Python)
#            .gpucheck/models (from `.venv/bin/python bench/gpu_check/prepare.py .gpucheck/models`)
# Prints the per-model table (Vulkan adapter, errors vs PyTorch and vs the CPU adapter, latency)
# and writes gpu_check.json into $OUT (or ./gpu_check_out).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu_check_out}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ]; then export VK_ICD_FILENAMES=$nvidia_icd VK_DRIVER_FILES=$nvidia_icd; fi
export XDG_CACHE_HOME=/tmp/gpu_check_cache XDG_RUNTIME_DIR=/tmp/gpu_check_run
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
pipi /tmp/gpu_check_site .whl/ai_edge_litert-*.whl .whl/backports*.whl
# onnxruntime-webgpu shadows onnxruntime: its own site folder, where runtimes.gpu.ort_env looks
webgpu_version=$(ls .whl/onnxruntime_webgpu-*.whl | sed -E 's/.*onnxruntime_webgpu-([0-9.]+)-.*/\1/')
pipi "$XDG_CACHE_HOME/bitnet_export/ort-webgpu-$webgpu_version/site" .whl/onnxruntime_webgpu-*.whl
export PYTHONPATH=/tmp/gpu_check_site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -c "import sys, onnxruntime, ai_edge_litert; print(sys.version.split()[0], 'ort', onnxruntime.__version__)"
python3 bench/gpu_check/run_check.py .gpucheck/models "$out"
