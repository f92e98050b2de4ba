#!/usr/bin/env bash
# Flux backend tests: builds flux-core 0.88.0 from the vendored tarball once and caches the
# install prefix under ~/.cache/rhapsody_lab/flux-0.88.0 (the backend finds it there, or at
# $RHAPSODY_LAB_FLUX_PREFIX). Idempotent: when the cached prefix starts an instance nothing is
# built; the runtime libraries are still apt-installed (a cache restored on a fresh machine).
# The tarball is looked up beside the repo ($(dirname repo)/shared/vendor), then in
# /work/shared/vendor. Without root or tarball the Flux tests skip.
set -euo pipefail
VERSION=0.88.0
PREFIX=${RHAPSODY_LAB_FLUX_PREFIX:-$HOME/.cache/rhapsody_lab/flux-$VERSION}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARBALL=""
for dir in "$(dirname "$REPO")/shared/vendor" /work/shared/vendor; do
  if [ -f "$dir/flux-core-$VERSION.tar.gz" ]; then TARBALL="$dir/flux-core-$VERSION.tar.gz"; break; fi
done

RUNTIME="libzmq5 libjansson4 liblz4-1 libarchive13 libhwloc15 libsqlite3-0 libuuid1 lua5.1
  liblua5.1-0 lua-posix python3 python3-cffi python3-ply python3-yaml jq"
BUILD="autoconf automake libtool make pkg-config libc6-dev libzmq3-dev uuid-dev libjansson-dev
  liblz4-dev libarchive-dev libhwloc-dev libsqlite3-dev liblua5.1-dev python3-dev
  python3-setuptools"

apt_need() {  # installs the named Debian packages that are missing (root only)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "45-flux: not root; cannot install ${missing[*]}"; return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

works() {  # the prefix starts a one-broker instance and runs a job in it
  [ -x "$PREFIX/bin/flux" ] || return 1
  timeout 60 "$PREFIX/bin/flux" start --test-size=1 "$PREFIX/bin/flux" run -n1 true \
    >/dev/null 2>&1
}

# shellcheck disable=SC2086
apt_need $RUNTIME || { echo "45-flux: runtime libraries missing; Flux tests will skip"; exit 0; }
if works; then
  echo "45-flux: flux-core $VERSION ready at $PREFIX"; exit 0
fi
if [ -z "$TARBALL" ]; then
  echo "45-flux: no flux-core-$VERSION.tar.gz beside the repo nor in /work/shared/vendor;" \
    "Flux tests will skip"; exit 0
fi
# shellcheck disable=SC2086
apt_need $BUILD || { echo "45-flux: build dependencies missing; Flux tests will skip"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "45-flux: building flux-core $VERSION from $TARBALL into $PREFIX"
tar -xzf "$TARBALL" -C "$work"
rm -rf "$PREFIX"
(
  cd "$work/flux-core-$VERSION"
  # no git in the tarball: configure takes the version from FLUX_VERSION. The commands
  # written in Python (flux submit, cancel, ...) run on Debian's python3 and its cffi.
  FLUX_VERSION=$VERSION ./autogen.sh >"$work/autogen.log" 2>&1
  PYTHON=/usr/bin/python3 ./configure --prefix="$PREFIX" >"$work/configure.log" 2>&1 \
    || { tail -30 "$work/configure.log"; exit 1; }
  make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
  make install >"$work/install.log" 2>&1 || { tail -30 "$work/install.log"; exit 1; }
)
if works; then
  echo "45-flux: flux-core $VERSION built at $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
else
  echo "45-flux: built flux-core does not start an instance"; exit 1
fi
