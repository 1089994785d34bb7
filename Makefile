# Two commands on a fresh machine (see README):
#   make demo   -- the main job, end to end
#   make test   -- lint (ruff), types (mypy), the whole test suite (pytest)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest arm-env gpu-env clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/bitnet-export demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The emulated aarch64 environment (arm64 rootfs, aarch64 wheels, QEMU 10), cached under
# ~/.cache/bitnet_export and rebuilt only when its inputs change.
arm-env: venv
	$(BIN)/python -m runtimes.arm.env build

# Software Vulkan (SwiftShader from Debian's chromium-common) and onnxruntime-webgpu in its own
# site folder: the GPU adapters' code paths run on it where there is no GPU.
gpu-env: venv
	$(BIN)/python -m runtimes.gpu.vulkan build
	$(BIN)/python -m runtimes.gpu.ort_env build

pytest: venv
	$(BIN)/python -m pytest -q --durations=25

test: lint typecheck arm-env gpu-env pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
