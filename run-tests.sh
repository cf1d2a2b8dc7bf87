#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds sidebus twice — plain, and with AddressSanitizer + UBSan — and runs
# the whole test suite in both; then builds the fuzz targets with clang and
# libFuzzer (-Dfuzzing=true, build-test-fuzz) and runs each for a few seconds
# (the "fuzz" suite, docs/testing.md). Ends with one line: "N passed, N
# failed, N skipped".
# Needs root (FUSE mounts of the document portal, a guest running as another
# uid) and installs missing Debian packages first.
set -eu
cd "$(dirname "$0")"
.ci/install-deps

status=0
for variant in plain sanitize; do
  dir="build-test-$variant"
  case "$variant" in
    plain) opts="" ;;
    sanitize) opts="-Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false" ;;
  esac
  [ -f "$dir/build.ninja" ] || { rm -rf "$dir" && meson setup "$dir" $opts; }
  meson compile -C "$dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
done
# Only the fuzzers are built here, so only the fuzz suite runs (--no-rebuild).
dir=build-test-fuzz
[ -f "$dir/build.ninja" ] || { rm -rf "$dir" && CC=clang CXX=clang++ meson setup "$dir" -Dfuzzing=true; }
meson compile -C "$dir" fuzzers
meson test -C "$dir" --no-rebuild --suite fuzz --print-errorlogs --num-processes 2 || status=1
python3 .ci/summarize-tests build-test-plain/meson-logs/testlog.json build-test-sanitize/meson-logs/testlog.json \
  build-test-fuzz/meson-logs/testlog.json
exit $status
