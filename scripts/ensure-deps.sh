#!/usr/bin/env bash
# Checks (and, where it can, installs) what building the project needs beyond Rust:
# cmake and a C++ compiler, for the Arcade Learning Environment that ale-sys builds from source.
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get (needed to build ALE)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
    exit 0
fi
echo "error: ${missing[*]} not found; ALE is built from source and needs them." >&2
echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
echo "  Fedora:        sudo dnf install ${missing[*]/g++/gcc-c++}" >&2
echo "  macOS:         brew install cmake (and Xcode command line tools)" >&2
exit 1
