#!/bin/sh
# Runs every test program and sums their results.
#
# Each program prints one line per check: "PASS: name" or "FAIL: name: why".
# A program that exits non-zero without reporting a failure counts as one failure,
# so a crash can never pass silently. The last line is "N passed, N failed".
#
#   MMKV_TEST=name   (make test T=name) only the tests whose name contains name: a C check's name
#                    as it prints it, or a Python test function's; or, whole, the program named
#                    so (engine, failpoints, powerloss, powerloss-sql, integrity-pragma, or a
#                    Python file: test_sql or test/sql/test_sql.py). Fails if nothing matches.
#   MMKV_SEED=N      every randomised test derives its seeds from N; unset or 0: each test's own
#                    fixed seeds; random: a new N, drawn here and printed
#   MMKV_EXPECT_SQLITE=V   (make test-sqlite) every program checks that it runs on SQLite V
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export MMKV_EXTENSION="$(pwd)/$BUILD/mmkv"
export MMKV_CRASH_EXTENSION="$(pwd)/$BUILD/failpoint/mmkv"
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

# One seed for every program, so that one number replays the run.
case "${MMKV_SEED:-}" in
random)
    MMKV_SEED=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    [ "$MMKV_SEED" -ne 0 ] || MMKV_SEED=1
    ;;
*[!0-9]*)
    echo "MMKV_SEED=$MMKV_SEED: expected a number from 0 to 4294967295, or random" >&2
    exit 2
    ;;
esac
if [ -n "${MMKV_SEED:-}" ] && [ "$MMKV_SEED" != 0 ]; then
    export MMKV_SEED
    seed_note="MMKV_SEED=$MMKV_SEED"
else
    unset MMKV_SEED
    seed_note="MMKV_SEED unset: each randomised test's own fixed seeds"
fi
selection=${MMKV_TEST:-}
echo "# $seed_note${selection:+; tests matching T=$selection}"
[ -z "${MMKV_EXPECT_SQLITE:-}" ] || echo "# every program must run on SQLite $MMKV_EXPECT_SQLITE"

passed=0
failed=0
run() {
    name=$1
    shift
    # A program named whole runs whole; otherwise it picks the tests matching MMKV_TEST itself.
    short=$(basename "$name" .py)
    [ -n "$selection" ] || echo "== $name"
    if [ -n "$selection" ] && { [ "$selection" = "$name" ] || [ "$selection" = "$short" ]; }; then
        MMKV_TEST= "$@" >"$log" 2>&1
    else
        MMKV_TEST=$selection "$@" >"$log" 2>&1
    fi
    status=$?
    p=$(grep -c '^PASS: ' "$log")
    f=$(grep -c '^FAIL: ' "$log")
    if [ -n "$selection" ]; then
        # A program with no test matching the selection runs none, and is not shown.
        [ "$status" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && return
        echo "== $name"
    fi
    cat "$log"
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

if [ -n "$selection" ] && [ $((passed + failed)) -eq 0 ]; then
    echo "FAIL: no test matches T=$selection"
    failed=1
fi
echo "# $seed_note; replay one test: ${MMKV_SEED:+MMKV_SEED=$MMKV_SEED }make test T=name"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
