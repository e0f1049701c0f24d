#!/usr/bin/env bash
# Installs llama-cpp-python into the given virtualenv from a portable wheel we build ourselves.
#
# Why not `pip install llama-cpp-python`: PyPI ships only its source, the default build targets the
# building CPU (-march=native) and dies with "Illegal instruction" on CPUs that differ (AMX, AVX-512),
# and pip's shared wheel cache may hand back such a native build. So we build once with
# GGML_NATIVE=OFF, never through pip's cache, keep the wheel in our own cache keyed by version and
# build flags, and check that it loads before trusting it.
set -euo pipefail

VENV=${1:?usage: install_model_runtime.sh VENV_DIR}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
CMAKE_FLAGS="-DGGML_NATIVE=OFF"
FLAGS_KEY=$(printf '%s' "$CMAKE_FLAGS" | sha256sum | cut -c1-12)
CACHE_ROOT=${BEDROCK_METERING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bedrock-saas-metering}
WHEEL_DIR="$CACHE_ROOT/wheels/llama-cpp-python-$VERSION-$FLAGS_KEY"
PY="$VENV/bin/python"

loads() {
    # A subprocess, so an illegal instruction kills the probe and not this script.
    "$PY" -c 'import llama_cpp; llama_cpp.llama_backend_init(); print(llama_cpp.__version__)' >/dev/null 2>&1
}

if "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$VERSION')" 2>/dev/null && loads; then
    echo "llama-cpp-python $VERSION already installed"
    exit 0
fi

build() {
    echo "Building llama-cpp-python $VERSION with $CMAKE_FLAGS (about 5 minutes on 2 cores; once per machine)..."
    local started
    started=$(date +%s)
    rm -rf "$WHEEL_DIR"
    mkdir -p "$WHEEL_DIR"
    CMAKE_ARGS="$CMAKE_FLAGS" "$VENV/bin/pip" wheel --no-cache-dir --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$WHEEL_DIR" --quiet
    echo "Built llama-cpp-python in $(( $(date +%s) - started )) s; cached in $WHEEL_DIR"
}

install() {
    local wheel
    wheel=$(ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl | head -n1)
    "$VENV/bin/pip" install --quiet --no-cache-dir --force-reinstall --no-deps "$wheel"
    "$VENV/bin/pip" install --quiet "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
}

ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1 || build
install
if ! loads; then
    echo "The cached wheel does not load on this CPU; rebuilding it." >&2
    build
    install
    loads || { echo "llama-cpp-python $VERSION does not load even after a rebuild" >&2; exit 1; }
fi
echo "llama-cpp-python $VERSION ready (wheel cache: $WHEEL_DIR)"
