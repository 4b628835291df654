# mmkv: a memory-mapped key-value virtual table for SQLite.
#
#   make            build/mmkv.so (loadable) and build/libmmkv.a (static, for embedding)
#   make test       every test; ends with "N passed, N failed"
#   make test T=name        only the tests whose name contains name (test/run.sh says more);
#                           MMKV_SEED=N make test ... replays the seed N (README, "Tests")
#   make test-sqlite AMALGAMATION=dir   the suite on another SQLite (see below)
#   make demo       sql/demo.sql in the sqlite3 shell
#   make bench      the benchmark harness against native tables (BENCH_ARGS="--n 10000000")
#   make SANITIZE=1 test   the same suite under AddressSanitizer and UBSan (in build/asan)

CC      ?= cc
SQLITE3 ?= sqlite3
PYTHON  ?= /usr/bin/python3
OPT     ?= -O2
WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
SQLITE_LIB ?= -lsqlite3
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -Iext $(CFLAGS)

ifeq ($(SANITIZE),1)
BUILD   ?= build/asan
OPT      = -O1
CFLAGS_ALL += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN    = -fsanitize=address,undefined
else
BUILD   ?= build
LDSAN    =
endif

ENGINE_SRC = ext/crc32c.c ext/keyhash.c ext/error.c ext/file.c ext/log.c ext/index.c \
             ext/engine.c ext/commit.c ext/writer.c ext/txn.c ext/recovery.c ext/open.c \
             ext/names.c ext/check.c ext/copy.c ext/compact.c ext/failpoint.c \
             ext/stats.c
SQL_SRC    = ext/args.c ext/commit_record.c ext/tables.c ext/pending.c ext/placement.c ext/vtab.c \
             ext/backup.c ext/compaction.c ext/worker.c ext/connections.c ext/stats_vtab.c \
             ext/extension.c

ENGINE_OBJ = $(ENGINE_SRC:ext/%.c=$(BUILD)/obj/%.o)
SHARED_OBJ = $(SQL_SRC:ext/%.c=$(BUILD)/obj/shared/%.o)
STATIC_OBJ = $(SQL_SRC:ext/%.c=$(BUILD)/obj/static/%.o)
HEADERS    = $(wildcard ext/*.h)

.PHONY: all test test-sqlite demo bench clean format

all: $(BUILD)/mmkv.so $(BUILD)/libmmkv.a

$(BUILD)/obj/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -c $< -o $@

$(BUILD)/obj/shared/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -c $< -o $@

$(BUILD)/obj/static/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DSQLITE_CORE -c $< -o $@

$(BUILD)/mmkv.so: $(ENGINE_OBJ) $(SHARED_OBJ)
	$(CC) -shared $(LDSAN) -o $@ $^ -lpthread -ldl

$(BUILD)/libmmkv.a: $(ENGINE_OBJ) $(STATIC_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/test_engine: test/engine_test.c $(ENGINE_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -o $@ test/engine_test.c $(ENGINE_OBJ) $(LDSAN) -lpthread

# The engine again with its named failpoints compiled in (ext/failpoint.h), for their test only.
FAILPOINT_OBJ = $(ENGINE_SRC:ext/%.c=$(BUILD)/obj/failpoint/%.o)

$(BUILD)/obj/failpoint/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -fPIC -c $< -o $@

# The loadable extension over that engine, its SQL face with the crash points compiled in too, for
# the tests that stop a process between SQLite's commit and mmkv's file work.
FAILPOINT_SQL_OBJ = $(SQL_SRC:ext/%.c=$(BUILD)/obj/failpoint/shared/%.o)

$(BUILD)/obj/failpoint/shared/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -fPIC -c $< -o $@

$(BUILD)/failpoint/mmkv.so: $(FAILPOINT_OBJ) $(FAILPOINT_SQL_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDSAN) -o $@ $^ -lpthread -ldl

$(BUILD)/test_powerloss: test/powerloss_test.c $(FAILPOINT_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -o $@ test/powerloss_test.c $(FAILPOINT_OBJ) $(LDSAN) -lpthread

# The SQL face over the engine with its sync hook: a power cut taking SQLite's and mmkv's files at
# once. The SQL face's objects do not depend on MMKV_FAILPOINTS.
$(BUILD)/test_powerloss_sql: test/powerloss_sql_test.c $(FAILPOINT_OBJ) $(STATIC_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -o $@ test/powerloss_sql_test.c $(FAILPOINT_OBJ) \
	    $(STATIC_OBJ) $(LDSAN) $(SQLITE_LIB) -lpthread

$(BUILD)/test_integrity_pragma: test/integrity_pragma_test.c $(ENGINE_OBJ) $(STATIC_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -o $@ test/integrity_pragma_test.c $(STATIC_OBJ) $(ENGINE_OBJ) $(LDSAN) \
	    $(SQLITE_LIB) -lpthread

$(BUILD)/test_failpoints: test/failpoint_test.c $(FAILPOINT_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -o $@ test/failpoint_test.c $(FAILPOINT_OBJ) $(LDSAN) -lpthread

# LMDB for the bench's comparison where its header is (Debian: liblmdb-dev); without it, bench is
# built without that part (BENCH_NO_LMDB) and says so.
LMDB_HEADER = $(wildcard /usr/include/lmdb.h)
BENCH_LMDB  = $(if $(LMDB_HEADER),-llmdb,-DBENCH_NO_LMDB)

$(BUILD)/bench: test/bench.c $(BUILD)/libmmkv.a
	@$(if $(LMDB_HEADER),:,echo "LMDB: not built (install liblmdb-dev)")
	$(CC) $(CFLAGS_ALL) -o $@ test/bench.c $(BUILD)/libmmkv.a $(LDSAN) -lsqlite3 $(BENCH_LMDB) \
	    -lpthread -lm

test: all $(BUILD)/test_engine $(BUILD)/test_failpoints $(BUILD)/test_powerloss \
      $(BUILD)/test_powerloss_sql $(BUILD)/test_integrity_pragma $(BUILD)/failpoint/mmkv.so
	@BUILD=$(BUILD) PYTHON=$(PYTHON) SANITIZE=$(SANITIZE) CC=$(CC) MMKV_TEST="$(or $(T),$(MMKV_TEST))" \
	    bash test/run.sh

demo: build/mmkv.so
	@rm -f build/demo.db build/demo.db-kv.mmkv build/demo.db-kv.mmkv-index
	$(SQLITE3) -bail build/demo.db < sql/demo.sql

bench: $(BUILD)/bench
	$(BUILD)/bench $(BENCH_ARGS)

# The whole suite on another SQLite: its amalgamation (a directory with sqlite3.c, sqlite3.h and
# sqlite3ext.h, such as the one .ci/fetch-sqlite prints) is built into a shared libsqlite3.so.0, the
# extension and the C tests are compiled against its headers (so that version-guarded code such as
# xIntegrity for 3.44+ is in) into build/sqlite-VERSION, and test/run.sh runs with the library on
# LD_LIBRARY_PATH, so that python3's sqlite3 module loads it too; run.sh checks that every program
# really runs on that version (MMKV_EXPECT_SQLITE), so a fallback to the system's SQLite fails.
#   make test-sqlite AMALGAMATION=path/to/sqlite-amalgamation [T=name]
#   make test-sqlite AMALGAMATION="$$(.ci/fetch-sqlite)"
AMALGAMATION_VERSION = $(shell sed -n 's/^\#define SQLITE_VERSION  *"\(.*\)"$$/\1/p' "$(AMALGAMATION)/sqlite3.h" 2>/dev/null)
AMALGAMATION_NUMBER  = $(shell sed -n 's/^\#define SQLITE_VERSION_NUMBER  *\([0-9]*\)$$/\1/p' "$(AMALGAMATION)/sqlite3.h" 2>/dev/null)
SQLITE_BUILD = build/sqlite-$(AMALGAMATION_VERSION)
# What Debian's libsqlite3 enables, so that its python3 and anything else built for it find every
# function they link to; DESERIALIZE is built in from 3.36 on, JSON1 from 3.38 on.
SQLITE_OPTIONS = -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS \
                 -DSQLITE_ENABLE_FTS4 -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_JSON1 \
                 -DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_COLUMN_METADATA -DSQLITE_ENABLE_DBSTAT_VTAB \
                 -DSQLITE_ENABLE_MATH_FUNCTIONS -DSQLITE_ENABLE_PREUPDATE_HOOK \
                 -DSQLITE_ENABLE_SESSION -DSQLITE_ENABLE_STMTVTAB -DSQLITE_ENABLE_UNLOCK_NOTIFY \
                 -DSQLITE_ENABLE_UPDATE_DELETE_LIMIT -DSQLITE_SOUNDEX -DSQLITE_USE_URI=1 \
                 $(if $(filter 1,$(shell test "0$(AMALGAMATION_NUMBER)" -lt 3036000 && echo 1)),-DSQLITE_ENABLE_DESERIALIZE)

$(SQLITE_BUILD)/lib/libsqlite3.so.0: $(AMALGAMATION)/sqlite3.c $(AMALGAMATION)/sqlite3.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -fPIC -shared -Wl,-soname,libsqlite3.so.0 $(SQLITE_OPTIONS) -o $@ \
	    "$(AMALGAMATION)/sqlite3.c" -lpthread -ldl -lm
	ln -sf libsqlite3.so.0 $(SQLITE_BUILD)/lib/libsqlite3.so

test-sqlite:
	@test -f "$(AMALGAMATION)/sqlite3.c" && test -f "$(AMALGAMATION)/sqlite3.h" && \
	    test -f "$(AMALGAMATION)/sqlite3ext.h" && test -n "$(AMALGAMATION_VERSION)" || { \
	    echo "make test-sqlite: set AMALGAMATION to a directory holding sqlite3.c, sqlite3.h and" \
	         "sqlite3ext.h (.ci/fetch-sqlite fetches one)" >&2; exit 1; }
	@echo "make test-sqlite: SQLite $(AMALGAMATION_VERSION) from $(AMALGAMATION), in $(SQLITE_BUILD)"
	$(MAKE) --no-print-directory $(SQLITE_BUILD)/lib/libsqlite3.so.0
	LD_LIBRARY_PATH="$(abspath $(SQLITE_BUILD)/lib)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" \
	MMKV_EXPECT_SQLITE=$(AMALGAMATION_VERSION) \
	$(MAKE) --no-print-directory BUILD=$(SQLITE_BUILD) CFLAGS="-I$(abspath $(AMALGAMATION)) $(CFLAGS)" \
	    SQLITE_LIB="-L$(SQLITE_BUILD)/lib -Wl,-rpath,$(abspath $(SQLITE_BUILD)/lib) -lsqlite3" test

format:
	clang-format -i ext/*.c ext/*.h test/*.c

clean:
	rm -rf build

# ---- fuzzing: a libFuzzer target for the engine (test/fuzz.c) -------------------------------------
#
#   make fuzz         builds build/fuzz/mmkv_fuzz (clang, libFuzzer, ASan, UBSan) and runs it on a
#                     copy of the seed corpus test/fuzz-corpus for FUZZ_SECONDS seconds (default 60),
#                     each input at most FUZZ_TIMEOUT seconds; any crash, failed check or hang fails
#                     the target, leaving the input in build/fuzz/ (crash-*, timeout-*, leak-*)
#   make fuzz-seeds   remakes the seed corpus with the real engine (test/fuzz-seeds.c)
#
# Replay one input: build/fuzz/mmkv_fuzz build/fuzz/crash-<hash>. Go on past crashes, collecting
# them: make fuzz FUZZ_ARGS="-fork=2 -ignore_crashes=1 -ignore_timeouts=1". What is checked is
# described at the top of test/fuzz.c.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 10
FUZZ_MAX_LEN ?= 65536
FUZZ_ARGS    ?=
FUZZ_DIR      = build/fuzz
FUZZ_SAN      = -fsanitize=fuzzer,address,undefined
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -g -O1 -Iext -fno-omit-frame-pointer $(FUZZ_SAN) \
                -fno-sanitize-recover=undefined

.PHONY: fuzz fuzz-seeds

$(FUZZ_DIR)/mmkv_fuzz: test/fuzz.c test/fuzz.h $(ENGINE_SRC) $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { \
	    echo "make fuzz: '$(FUZZ_CC)' not found: the fuzz target needs clang with libFuzzer" \
	         "(Debian: apt-get install clang; or FUZZ_CC=clang-NN)" >&2; exit 1; }
	@printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' \
	    > $(FUZZ_DIR)/toolchain-probe.c
	@$(FUZZ_CC) $(FUZZ_SAN) -o $(FUZZ_DIR)/toolchain-probe $(FUZZ_DIR)/toolchain-probe.c \
	    > $(FUZZ_DIR)/toolchain-probe.log 2>&1 || { cat $(FUZZ_DIR)/toolchain-probe.log >&2; \
	    echo "make fuzz: '$(FUZZ_CC)' cannot build with $(FUZZ_SAN): libFuzzer or the sanitizer" \
	         "runtimes are missing (Debian: apt-get install clang, which brings libclang-rt-dev" \
	         "or libclang-common-NN-dev)" >&2; exit 1; }
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ test/fuzz.c $(ENGINE_SRC) -lpthread

fuzz: $(FUZZ_DIR)/mmkv_fuzz
	@rm -rf $(FUZZ_DIR)/corpus && mkdir -p $(FUZZ_DIR)/corpus && cp test/fuzz-corpus/* $(FUZZ_DIR)/corpus/
	$(FUZZ_DIR)/mmkv_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
	    -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/ \
	    $(FUZZ_ARGS) $(FUZZ_DIR)/corpus

$(FUZZ_DIR)/fuzz-seeds: test/fuzz-seeds.c test/fuzz.h $(ENGINE_SRC) $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	$(CC) -std=c11 -D_GNU_SOURCE -g -O1 $(WARN) -Iext -o $@ test/fuzz-seeds.c $(ENGINE_SRC) -lpthread

fuzz-seeds: $(FUZZ_DIR)/fuzz-seeds
	$(FUZZ_DIR)/fuzz-seeds test/fuzz-corpus
