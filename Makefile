# Developer loop for loom. `make` builds build/loom/core.so with the warnings
# CI insists on; `make test` runs the specs against it.
LUA       ?= lua5.4
PKGS      := lua5.4 libuv openssl zlib libpq
CC        ?= gcc
OPT       ?= -O2 -g
WARN      := -Wall -Wextra -Werror
CFLAGS_ALL = $(OPT) $(WARN) -fPIC -std=gnu11 $(shell pkg-config --cflags $(PKGS))
LIBS       = $(shell pkg-config --libs libuv openssl zlib libpq) -lhttp_parser
SRC       := $(wildcard src/*.c)
HDR       := $(wildcard src/*.h)
BUSTED    := $(LUA) /usr/bin/busted
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all test asan bench demo clean fuzz docs stress

all: build/loom/core.so

build/loom/core.so: $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(SRC) $(LIBS)

build-asan/loom/core.so: $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(WARN) $(SAN) -DLOOM_CHECKS -fPIC -std=gnu11 $(shell pkg-config --cflags $(PKGS)) -shared -o $@ $(SRC) $(LIBS)

test: build/loom/core.so
	$(BUSTED) $(BUSTED_ARGS)

asan: build-asan/loom/core.so
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(BUSTED) --cpath='build-asan/?.so' $(BUSTED_ARGS)

# The stress tier at ten times its suite size (minutes, not in CI), plain
# and under ASan + UBSan.
STRESS ?= 10
stress: build/loom/core.so build-asan/loom/core.so
	LOOM_STRESS=$(STRESS) $(BUSTED) spec/stress_spec.lua
	LOOM_STRESS=$(STRESS) $(MAKE) -s asan BUSTED_ARGS="spec/stress_spec.lua"

bench: build/loom/core.so
	bash bench/all.sh

# The API reference from the doc comments (config.ld; Debian's lua-ldoc).
# Any LDoc warning fails the build.
docs:
	ldoc --fatalwarnings .

demo: build/loom/core.so
	LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' $(LUA) examples/fetch.lua

clean:
	rm -rf build build-asan build-fuzz

# libFuzzer over the HTTP request parsing (tools/fuzz/http_fuzz.c) and the
# WebSocket frame parser (tools/fuzz/ws_fuzz.c), with ASan and UBSan, for
# FUZZ_SECONDS each; findings go to build-fuzz/, not the corpus.
FUZZ_SECONDS ?= 60
FUZZ_CC = clang -O1 -g -fsanitize=fuzzer,address,undefined -std=gnu11 $(WARN) -Wno-unused-function \
	  $(shell pkg-config --cflags $(PKGS))
fuzz: $(SRC) $(HDR) tools/fuzz/http_fuzz.c tools/fuzz/ws_fuzz.c
	@mkdir -p build-fuzz/corpus build-fuzz/ws-corpus
	$(FUZZ_CC) -o build-fuzz/http_fuzz tools/fuzz/http_fuzz.c \
	  $(filter-out src/http_parse.c,$(SRC)) $(LIBS) $(shell pkg-config --libs lua5.4)
	$(FUZZ_CC) -o build-fuzz/ws_fuzz tools/fuzz/ws_fuzz.c \
	  $(filter-out src/ws.c,$(SRC)) $(LIBS) $(shell pkg-config --libs lua5.4)
	cd build-fuzz && ./http_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	  -artifact_prefix=./ corpus ../tools/fuzz/corpus
	cd build-fuzz && ./ws_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=./ws- ws-corpus
