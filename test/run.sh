#!/usr/bin/env bash
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
#   MMKV_JOBS=N      programs run N at a time (default: the processors, at most 4); their output
#                    is printed whole, in order, each with how long it took
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export MMKV_EXTENSION="$(pwd)/$BUILD/mmkv"
export MMKV_CRASH_EXTENSION="$(pwd)/$BUILD/failpoint/mmkv"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
jobs=${MMKV_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -le 4 ] || jobs=4

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
names=()

# Starts program $1 (the command after it) in the background, its output and status into $logs.
start() {
    local i=${#names[@]} name=$1
    shift
    names+=("$name")
    # A program named whole runs whole; otherwise it picks the tests matching MMKV_TEST itself.
    local short
    short=$(basename "$name" .py)
    local pick=$selection
    if [ -n "$selection" ] && { [ "$selection" = "$name" ] || [ "$selection" = "$short" ]; }; then
        pick=
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n 2>/dev/null || true
    done
    (
        begin=$(date +%s.%N)
        MMKV_TEST=$pick "$@" >"$logs/$i.out" 2>&1
        echo $? >"$logs/$i.status"
        echo "$begin $(date +%s.%N)" >"$logs/$i.time"
    ) &
}

# Prints program i's output and counts its checks.
report() {
    local i=$1 name=${names[$1]}
    local status p f seconds
    status=$(cat "$logs/$i.status")
    p=$(grep -c '^PASS: ' "$logs/$i.out")
    f=$(grep -c '^FAIL: ' "$logs/$i.out")
    # A program with no test matching the selection runs none, and is not shown.
    if [ -n "$selection" ] && [ "$status" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        return
    fi
    seconds=$(awk '{ printf "%.1f", $2 - $1 }' "$logs/$i.time")
    echo "== $name (${seconds} s)"
    cat "$logs/$i.out"
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

start engine "$BUILD/test_engine"
start failpoints "$BUILD/test_failpoints"
start powerloss "$BUILD/test_powerloss"
start powerloss-sql "$BUILD/test_powerloss_sql"
start integrity-pragma "$BUILD/test_integrity_pragma"
for t in test/sql/test_*.py; do
    start "$t" env LD_PRELOAD="$MMKV_PRELOAD" "$PYTHON" "$t"
done
wait
for i in "${!names[@]}"; do
    report "$i"
done

if [ -n "$selection" ] && [ $((passed + failed)) -eq 0 ]; then
    echo "FAIL: no test matches T=$selection"
    failed=1
fi
echo "# $seed_note; replay one test: ${MMKV_SEED:+MMKV_SEED=$MMKV_SEED }make test T=name"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
