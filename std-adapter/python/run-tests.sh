#!/usr/bin/env bash
# Builds the `dragon_channels` Python extension into a venv and runs its pytest suite.
# Works on a fresh Debian 12 machine (as root) where python3 exists: python3-venv, gcc and a
# C linker are installed when missing; a Rust toolchain must be present.
# Usage: std-adapter/python/run-tests.sh [pytest args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="$here/.venv"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "python3 venv support is missing; installing python3-venv" >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "maturin>=1.5,<2" "pytest>=7" "mypy>=1.8"

# A C linker is installed when missing.
if ! command -v cc >/dev/null; then
    as_root apt-get update -qq && as_root apt-get install -y -qq gcc libc6-dev
fi
if ! command -v cargo >/dev/null; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || { echo "a Rust toolchain (cargo) is required" >&2; exit 1; }
fi

# maturin develop builds the extension (target/ in this crate, the abi3 build pyproject.toml
# asks for) and installs it into the venv. A version-specific `_native.cpython-*.so` left by an
# older build would be imported before `_native.abi3.so`: remove it.
rm -f "$here"/python/dragon_channels/_native.cpython-*.so
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release -q

"$venv/bin/python" -m pytest -q "$here/tests" "$@"
