#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# fuzz-one.sh FUZZER CORPUS WORKDIR SECONDS — runs one libFuzzer target for
# SECONDS (SIDEBUS_FUZZ_SECONDS overrides) starting from CORPUS, the tree's
# corpus, which it only reads: new inputs go to WORKDIR/corpus, crash
# reproducers to WORKDIR/crash-*, libFuzzer's output to WORKDIR/log.
# Prints TAP: "ok" with the number of executions, or "not ok" and the end of
# the log. Used by the "fuzz" test suite (-Dfuzzing=true) and run-fuzzers.sh.
set -u
fuzzer=$1 corpus=$2 workdir=$3 seconds=${SIDEBUS_FUZZ_SECONDS:-$4}
name=$(basename "$fuzzer")
mkdir -p "$workdir/corpus"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
echo "1..1"
"$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -timeout=25 -rss_limit_mb=2048 \
  -artifact_prefix="$workdir/" "$workdir/corpus" "$corpus" >"$workdir/log" 2>&1
status=$?
executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$workdir/log" | tail -n 1)
if [ "$status" -eq 0 ]; then
  echo "ok 1 $name: ${executions:-?} executions in $seconds s, no crash"
  exit 0
fi
echo "not ok 1 $name: exit status $status after ${executions:-?} executions (reproducer and log in $workdir)"
tail -n 60 "$workdir/log" | sed 's/^/# /'
exit 1
