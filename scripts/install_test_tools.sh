#!/usr/bin/env bash
# System tools the tests need: Prometheus (prometheus, promtool) to scrape the services and
# check the alert rules, docker-compose to validate docker-compose.yml without a Docker
# engine, and Chromium for the web page's browser test. Idempotent: installs only what is missing. Python tools are in
# pyproject.toml's `test` extra.
set -euo pipefail

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# Chromium for the web page's browser test (driven by Playwright, tests/e2e/test_web_page.py)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# libmagic for AugLy's python-magic (the accuracy benchmark's query transforms)
ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || missing+=(libmagic1)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install_test_tools: need root (or sudo) to install: ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The tests run their own prometheus on a loopback port with a temporary database: keep the
# package from starting a system-wide daemon (policy-rc.d exit 101 = "do not start").
policy=/usr/sbin/policy-rc.d
if [ ! -e "${policy}" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "${policy}" >/dev/null
  "${sudo[@]}" chmod 755 "${policy}"
  trap '"${sudo[@]}" rm -f "${policy}"' EXIT
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
