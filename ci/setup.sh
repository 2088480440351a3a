#!/usr/bin/env bash
# Installs what sockmatrix needs on a Debian machine: QEMU (x86 system emulator),
# a Rust toolchain if there is none, and Chromium for the HTML report test.
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
# tests/report_html.rs renders the HTML report in headless Chromium (with a font).
[ -x /usr/bin/chromium ] || apt_install chromium fonts-liberation
echo "setup: $(qemu-system-x86_64 --version | head -n1); $(cargo --version)"
