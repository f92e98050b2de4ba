#!/usr/bin/env bash
# Node.js + npm for building the JupyterLab extension (labextension/) during `pip install`
# (hatch-jupyter-builder runs `npm install` + `npm run build:prod`; only the npm registry is
# needed, downloads cached in ~/.cache/npm by the Makefile). Idempotent: installs only when
# node or npm is missing; without root it only reports (the install would then fail).
set -euo pipefail
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "25-node: node $(node --version), npm $(npm --version 2>/dev/null)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "25-node: not root and node/npm missing; install Node.js >= 18 to build the extension"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
echo "25-node: installed node $(node --version)"
