#!/usr/bin/env bash
# System tools the deployment tests need: Prometheus (prometheus, promtool) to scrape the
# services and check the alert rules, and docker-compose to validate docker-compose.yml
# without a Docker engine. Idempotent: installs only what is missing. Python tools are in
# pyproject.toml's `test` extra.
set -euo pipefail

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
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
"${sudo[@]}" apt-get update -qq
# --no-install-recommends: the prometheus package alone; no service is started by the tests'
# use of it (each test runs its own prometheus on a temporary port and data folder).
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
