#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/browser) when it is missing and we are
# root (CI is). Never fails the build: without Chromium the browser tests report loudly that they
# did not run. Called by `make test`.
set -u
for candidate in "${TOWER_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "ensure_chromium: chromium is missing and cannot be installed here (need root and apt-get): browser tests will not run" >&2
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >/tmp/ensure_chromium.log 2>&1; then
  echo "ensure_chromium: apt-get install chromium failed (see /tmp/ensure_chromium.log): browser tests will not run" >&2
fi
exit 0
