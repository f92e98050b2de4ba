#!/usr/bin/env bash
# Headless Debian Chromium for the dashboard report tests (render the static HTML report,
# take a screenshot, dump the DOM). Idempotent: installs only when `chromium` is missing.
# Without root it only reports; the Chromium tests then skip with a reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "30-chromium: $(chromium --version 2>/dev/null || echo present)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "30-chromium: not root and chromium missing; skipping (report tests will skip)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "30-chromium: installed $(chromium --version 2>/dev/null || echo chromium)"
