#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# run-fuzzers.sh [SECONDS] — the long fuzzing runs (docs/testing.md,
# "Fuzzing"): configures build-fuzz with clang and -Dfuzzing=true (once),
# builds the libFuzzer targets, and runs each in turn for SECONDS (default
# 10) from its corpus in tests/fuzz/<name>/. The tree is only read: new
# inputs, crash reproducers and logs go to build-fuzz/tests/fuzz/<name>/,
# and the next run starts from them too. Prints the executions of each
# target; exits non-zero if one crashed. Installs nothing: it stops with a
# message if clang or libFuzzer is missing.
set -eu
cd "$(dirname "$0")/../.."
seconds=${1:-10}
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

missing() {
  echo "run-fuzzers: $1 — on Debian: apt-get install clang libfuzzer-14-dev libclang-rt-14-dev (or .ci/install-deps)" >&2
  exit 2
}
command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1 || missing "clang/clang++ not found"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/probe.cpp"
clang++ -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" 2>"$probe/log" ||
  { cat "$probe/log" >&2; missing "clang++ cannot link a libFuzzer program (-fsanitize=fuzzer,address,undefined)"; }

dir=build-fuzz
[ -f "$dir/build.ninja" ] || { rm -rf "$dir" && CC=clang CXX=clang++ meson setup "$dir" -Dfuzzing=true; }
meson compile -C "$dir" fuzzers ||
  { echo "run-fuzzers: could not build the fuzzers in $dir (configured without -Dfuzzing=true? remove $dir)" >&2; exit 1; }

status=0
summary=""
for corpus in tests/fuzz/*/; do
  name=$(basename "$corpus")
  fuzzer="$dir/tests/fuzz/fuzz-$name"
  [ -x "$fuzzer" ] || { echo "run-fuzzers: $corpus has no fuzz target fuzz-$name" >&2; status=1; continue; }
  echo "run-fuzzers: fuzz-$name for $seconds s"
  tap="$dir/tests/fuzz/$name.tap"
  tests/fuzz/fuzz-one.sh "$fuzzer" "$corpus" "$dir/tests/fuzz/$name" "$seconds" >"$tap" || status=1
  grep -v '^1\.\.1$' "$tap" || true
  summary="$summary$(grep '^\(not \)\?ok 1 ' "$tap" || true)
"
done
echo
echo "run-fuzzers: ${seconds} s per target"
printf '%s' "$summary" | sed 's/^ok 1 /  /; s/^not ok 1 /  CRASH /'
[ "$status" = 0 ] || echo "run-fuzzers: a target crashed: fix the bug, then keep its reproducer as tests/fuzz/<name>/crash-<hash>"
echo "New inputs are in $dir/tests/fuzz/<name>/corpus; to keep those that add coverage:"
echo "  $dir/tests/fuzz/fuzz-<name> -merge=1 tests/fuzz/<name> $dir/tests/fuzz/<name>/corpus"
exit $status
