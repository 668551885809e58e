#!/usr/bin/env bash
# The one abi3 wheel (cp39-abi3) on more than one CPython: builds it with the maturin of the
# venv run-tests.sh makes (.venv), then runs the pytest suite (tests/) against the installed
# wheel on
#   - the host's CPython (3.11 on Debian 12), in a fresh venv;
#   - CPython 3.9, in a Debian 11 (bullseye) chroot made by debootstrap (python3 and
#     python3-pytest from Debian, this host's libc6 package; /proc, /dev and /dev/shm
#     bind-mounted; the wheel unzipped onto PYTHONPATH);
#   - each interpreter named in $ABI3_EXTRA_PYTHONS (paths, e.g. pyenv's 3.10 / 3.12 / 3.13),
#     in a fresh venv each.
# Also type-checks src/buffer.rs's Py_buffer against PyO3's (a non-abi3 `cargo check`).
# Caches the chroot and the venvs under .abi3-test/ (gitignored; delete it to start over).
# Needs root (debootstrap, chroot, mount; CI runs as root) and a Debian host (apt-get download,
# dpkg-query). Installs debootstrap when missing.
# Tests that need what a plain Python lacks skip themselves (test_packaging.py: maturin, mypy).
# Usage: std-adapter/python/test-abi3.sh [pytest args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
cache="$here/.abi3-test"
venv="$here/.venv"
root="$cache/bullseye"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "test-abi3.sh: $*" >&2; exit 1; }

[ -x "$venv/bin/maturin" ] ||
    fail "no maturin in $venv: run std-adapter/python/run-tests.sh first (it makes the venv)"
if ! command -v cargo >/dev/null; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || fail "a Rust toolchain (cargo) is required"
fi
mkdir -p "$cache"

echo "== Py_buffer layout against PyO3's (non-abi3 build for $("$venv/bin/python" -V))"
PYO3_PYTHON="$venv/bin/python" cargo check -q

echo "== the wheel"
rm -rf "$cache/wheels"
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" build --release -q -o "$cache/wheels"
shopt -s nullglob
wheels=("$cache"/wheels/*.whl)
shopt -u nullglob
[ "${#wheels[@]}" = 1 ] || fail "expected one wheel, got: ${wheels[*]:-none}"
wheel="${wheels[0]}"
case "$(basename "$wheel")" in
    *-cp39-abi3-*) echo "$(basename "$wheel")" ;;
    *) fail "$(basename "$wheel") is not a cp39-abi3 wheel" ;;
esac

# The native module the interpreter imports must be the wheel's abi3 one.
check_import='import dragon_channels._native as n, sys
assert n.__file__.endswith("_native.abi3.so"), n.__file__
print(sys.version.split()[0], n.__file__)'

# run_in_venv PYTHON NAME: a fresh venv of PYTHON with the wheel and pytest; runs the suite.
run_in_venv() {
    local py="$1" dir="$cache/venv-$2"
    shift 2
    echo "== $("$py" -V) ($py)"
    [ -x "$dir/bin/python" ] || "$py" -m venv "$dir" || fail "cannot make a venv with $py"
    "$dir/bin/python" -m pip install -q --upgrade pip "pytest>=6"
    "$dir/bin/python" -m pip install -q --force-reinstall --no-deps --no-index "$wheel"
    (cd "$cache" && "$dir/bin/python" -c "$check_import" &&
        "$dir/bin/python" -m pytest -q -p no:cacheprovider "$here/tests" "$@")
}

run_in_venv python3 host "$@"
for py in ${ABI3_EXTRA_PYTHONS:-}; do
    run_in_venv "$py" "$(basename "$py")" "$@"
done

echo "== CPython 3.9 (Debian 11 chroot, $root)"
if [ ! -e "$root/.complete" ]; then
    if ! command -v debootstrap >/dev/null; then
        echo "debootstrap is missing; installing it" >&2
        as_root apt-get update -qq && as_root apt-get install -y -qq debootstrap >/dev/null
    fi
    as_root rm -rf "$root.tmp"
    as_root debootstrap --variant=minbase --include=python3,python3-pytest bullseye \
        "$root.tmp" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $cache/debootstrap.log"
    # The wheel is linked on this host against its glibc (Debian 12: 2.36, the wheel's tag
    # says manylinux_2_34), newer than bullseye's 2.31: the chroot gets the host's libc6
    # package (glibc is backward compatible: bullseye's python3.9 runs on it unchanged).
    libc_deb="$(cd "$cache" && apt-get download -q "libc6=$(dpkg-query -W -f '${Version}' libc6)" \
        >/dev/null && ls libc6_*.deb)" || fail "cannot download this host's libc6 package"
    as_root cp "$cache/$libc_deb" "$root.tmp/tmp/" && rm -f "$cache/$libc_deb"
    as_root chroot "$root.tmp" dpkg -i "/tmp/$libc_deb" >>"$cache/debootstrap.log" 2>&1 ||
        fail "cannot install $libc_deb in the chroot; see $cache/debootstrap.log"
    as_root rm -f "$root.tmp/tmp/$libc_deb"
    as_root touch "$root.tmp/.complete"
    as_root mv "$root.tmp" "$root"
fi

mounts=()
cleanup() {
    local i
    local i n
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        # A child of the tests (e.g. multiprocessing's resource tracker) may still be exiting.
        for n in 1 2 3 4 5 6 7 8 9 10; do
            as_root umount "${mounts[i]}" 2>/dev/null && continue 2
            sleep 0.5
        done
        echo "test-abi3.sh: ${mounts[i]} is busy; detaching it lazily (umount -l)" >&2
        as_root umount -l "${mounts[i]}" || echo "test-abi3.sh: could not unmount ${mounts[i]}" >&2
    done
}
trap cleanup EXIT
for m in proc dev dev/shm; do
    mountpoint -q "$root/$m" && fail "$root/$m is already mounted (a run still going?)"
    as_root mount --bind "/$m" "$root/$m"
    mounts+=("$root/$m")
done

# The wheel unzipped onto PYTHONPATH (the chroot has no pip), the tests copied in.
as_root rm -rf "$root/opt/dc"
as_root mkdir -p "$root/opt/dc/site"
as_root "$venv/bin/python" -m zipfile -e "$wheel" "$root/opt/dc/site"
as_root cp -r "$here/tests" "$root/opt/dc/tests"
# test_remote.py's gateway, built here (the chroot has no Rust toolchain).
(cd "$here/../.." && cargo build -q -p dragon-channels-gateway --bin dragon-gateway)
as_root cp "$here/../../target/debug/dragon-gateway" "$root/opt/dc/"
as_root find "$root/opt/dc/tests" -name __pycache__ -prune -exec rm -rf {} +
in_chroot() {
    as_root chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PYTHONPATH=/opt/dc/site DRAGON_GATEWAY=/opt/dc/dragon-gateway sh -c 'cd /opt/dc && exec "$@"' sh "$@"
}
in_chroot python3 -c "$check_import"
in_chroot python3 -m pytest -q -p no:cacheprovider tests "$@"
echo "== test-abi3.sh: all passed"
