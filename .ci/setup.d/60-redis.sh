#!/usr/bin/env bash
# redis-server for the RedisDataBackend tests (Debian's `redis-server` package). Idempotent:
# installs only when the binary is missing. The package's own service is not needed (each
# RedisDataBackend starts its own private server), so it is stopped if the install started
# one. Without root it only reports; the Redis tests then skip with a reason.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  echo "60-redis: $(redis-server --version | head -1)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "60-redis: not root and redis-server missing; skipping (Redis tests will skip)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# other setup scripts may hold the dpkg lock: wait for it instead of failing
apt_opts=(-o DPkg::Lock::Timeout=600 -qq)
apt-get "${apt_opts[@]}" update
# policy-rc.d exit 101: dpkg must not start the packaged service (no systemd here anyway)
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
fi
apt-get "${apt_opts[@]}" install -y --no-install-recommends redis-server >/dev/null
[ "$made_policy" = 1 ] && rm -f "$policy"
echo "60-redis: installed $(redis-server --version | head -1)"
