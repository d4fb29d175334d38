#!/usr/bin/env bash
# Headless Chromium (Debian package) for the report's rendering test.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo_if_needed=""
[ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
$sudo_if_needed apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq chromium > /dev/null
