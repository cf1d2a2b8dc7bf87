#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The README's first command: installs what sidebus needs (Debian 12, as
# root), builds it, and runs the demo — the broker in --debug-access mode and
# a guest-side example application that opens a host file through it.
# No VM and no desktop needed (tests/demo/demo.cpp says how).
set -eu
cd "$(dirname "$0")"
.ci/install-deps
# A build dir without build.ninja is a failed setup: start it again.
[ -f build/build.ninja ] || { rm -rf build && meson setup build; }
meson compile -C build
export SIDEBUS_SOURCE_ROOT="$PWD"
export SIDEBUS_BROKER="$PWD/build/core/broker/sidebus-broker"
export SIDEBUS_AGENT="$PWD/build/core/agent/sidebus-agent"
export SIDEBUS_PLUGIN_DIR="$PWD/build/plugins"
export SIDEBUS_TEST_BACKEND="$PWD/build/tests/backend/sidebus-test-backend"
export SIDEBUS_EXAMPLE_APP="$PWD/build/tests/demo/sidebus-example-app"
exec build/tests/demo/sidebus-demo
