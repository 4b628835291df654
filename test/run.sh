#!/bin/sh
# Runs every test program and sums their results.
#
# Each program prints one line per check: "PASS: name" or "FAIL: name: why".
# A program that exits non-zero without reporting a failure counts as one failure,
# so a crash can never pass silently. The last line is "N passed, N failed".
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export MMKV_EXTENSION="$(pwd)/$BUILD/mmkv"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ "$SANITIZE" = 1 ]; then
    # The host programs (python3, sqlite3) are not instrumented: preload the runtime.
    CC=${CC:-cc}
    MMKV_PRELOAD="$($CC -print-file-name=libasan.so) $($CC -print-file-name=libubsan.so)"
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
    MMKV_PRELOAD=
fi

passed=0
failed=0
run() {
    name=$1
    shift
    echo "== $name"
    "$@" >"$log" 2>&1
    status=$?
    cat "$log"
    p=$(grep -c '^PASS: ' "$log")
    f=$(grep -c '^FAIL: ' "$log")
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL: $name exited with status $status"
        f=1
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL: $name ran no check"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

run engine "$BUILD/test_engine"
run failpoints "$BUILD/test_failpoints"
run powerloss "$BUILD/test_powerloss"
run powerloss-sql "$BUILD/test_powerloss_sql"
run integrity-pragma "$BUILD/test_integrity_pragma"
for t in test/sql/test_*.py; do
    run "$t" env LD_PRELOAD="$MMKV_PRELOAD" "$PYTHON" "$t"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
