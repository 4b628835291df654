# mmkv: a memory-mapped key-value virtual table for SQLite.
#
#   make            build/mmkv.so (loadable) and build/libmmkv.a (static, for embedding)
#   make test       every test; ends with "N passed, N failed"
#   make demo       sql/demo.sql in the sqlite3 shell
#   make bench      the benchmark harness against native tables (BENCH_ARGS="--n 10000000")
#   make SANITIZE=1 test   the same suite under AddressSanitizer and UBSan (in build/asan)

CC      ?= cc
SQLITE3 ?= sqlite3
PYTHON  ?= /usr/bin/python3
OPT     ?= -O2
WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
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
             ext/engine.c ext/txn.c ext/check.c ext/failpoint.c
SQL_SRC    = ext/args.c ext/commit_record.c ext/vtab.c ext/extension.c

ENGINE_OBJ = $(ENGINE_SRC:ext/%.c=$(BUILD)/obj/%.o)
SHARED_OBJ = $(SQL_SRC:ext/%.c=$(BUILD)/obj/shared/%.o)
STATIC_OBJ = $(SQL_SRC:ext/%.c=$(BUILD)/obj/static/%.o)
HEADERS    = $(wildcard ext/*.h)

.PHONY: all test demo bench clean format

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
	$(CC) -shared $(LDSAN) -o $@ $^ -lpthread

$(BUILD)/libmmkv.a: $(ENGINE_OBJ) $(STATIC_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/test_engine: test/engine_test.c $(ENGINE_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -o $@ test/engine_test.c $(ENGINE_OBJ) $(LDSAN) -lpthread

# The engine again with its named failpoints compiled in (ext/failpoint.h), for their test only.
FAILPOINT_OBJ = $(ENGINE_SRC:ext/%.c=$(BUILD)/obj/failpoint/%.o)

$(BUILD)/obj/failpoint/%.o: ext/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -c $< -o $@

$(BUILD)/test_failpoints: test/failpoint_test.c $(FAILPOINT_OBJ) $(HEADERS)
	$(CC) $(CFLAGS_ALL) -DMMKV_FAILPOINTS -o $@ test/failpoint_test.c $(FAILPOINT_OBJ) $(LDSAN) -lpthread

$(BUILD)/bench: test/bench.c $(BUILD)/libmmkv.a
	$(CC) $(CFLAGS_ALL) -o $@ test/bench.c $(BUILD)/libmmkv.a $(LDSAN) -lsqlite3 -lpthread -lm

test: all $(BUILD)/test_engine $(BUILD)/test_failpoints
	@BUILD=$(BUILD) PYTHON=$(PYTHON) SANITIZE=$(SANITIZE) CC=$(CC) sh test/run.sh

demo: build/mmkv.so
	@rm -f build/demo.db build/demo.db-kv.mmkv build/demo.db-kv.mmkv-index
	$(SQLITE3) -bail build/demo.db < sql/demo.sql

bench: $(BUILD)/bench
	$(BUILD)/bench $(BENCH_ARGS)

format:
	clang-format -i ext/*.c ext/*.h test/*.c

clean:
	rm -rf build
