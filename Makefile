# corral - one Makefile, one binary.  Variants: make [BUILD=release|debug|asan]
# Targets: all test unit integration fuzz format format-check clean run
BUILD   ?= release
CC      ?= cc
O       := build/$(BUILD)

# Python: Debian's CPython by default; `make PYTHON=/path/to/python3.X` embeds another.
# The interpreter's path is compiled in, so sys.prefix and site-packages are that python's.
# Debian's default is linked statically, the way Debian links /usr/bin/python3: libpython.a is
# built without -fPIC, and that code runs Python ~20% faster than the PIC shared library (Flask:
# 124 vs 150 us per request, docs/performance.md). -Wl,-E exports the C API to extension modules.
ifeq ($(origin PYTHON),undefined)
PY_VER    := $(shell pkg-config --modversion python3-embed)
PY_CFLAGS := $(shell pkg-config --cflags python3-embed)
PY_EXE    := /usr/bin/python$(PY_VER)
PY_LIBS   := -no-pie -Wl,-E $(shell $(PY_EXE) -c 'import sysconfig as s; v = s.get_config_var; \
               print(v("LIBPL") + "/" + v("LIBRARY"), v("LIBS"), v("SYSLIBS"), v("MODLIBS"))')
else
PY_INC    := $(shell $(PYTHON) -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
PY_LIBDIR := $(shell $(PYTHON) -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))')
PY_CFLAGS := -I$(PY_INC)
PY_LIBS   := $(shell $(PYTHON)-config --ldflags --embed) -Wl,-rpath,$(PY_LIBDIR)
PY_EXE    := $(shell $(PYTHON) -c 'import sys;print(sys.executable)')
endif
PY_CFLAGS += -DCORRAL_PYTHON_EXE='"$(PY_EXE)"'
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
           -Wno-missing-field-initializers
ifdef CI
WARN    += -Werror
endif
OPT_release := -O2 -g
OPT_debug   := -O0 -g3 -DCORRAL_DEBUG
OPT_asan    := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
CFLAGS  += -std=c11 -D_GNU_SOURCE -pthread -Isrc $(WARN) $(OPT_$(BUILD)) -MMD -MP
LDFLAGS += -pthread $(filter -fsanitize=%,$(OPT_$(BUILD)))

# Layers, bottom first; a unit test links its layer and the ones below only.
UTIL    := src/util/log.c src/util/buf.c src/util/xalloc.c src/util/spool.c
CONFIG  := src/config/config.c src/config/ini.c
PARSERS := src/http/http_parser.c src/http/http_response.c src/http/forwarded.c \
           src/uwsgi/uwsgi_proto.c src/uwsgi/uwsgi_request.c
NET     := src/net/loop.c src/net/sock.c src/net/out.c src/stats/scoreboard.c
PYSRC   := src/python/py.c src/python/wsgi.c src/python/py_input.c
WORKER  := src/worker/conn.c src/worker/conn_state.c src/worker/balance.c src/worker/pool.c \
           src/worker/worker.c
MASTER  := src/master/master.c src/master/signals.c src/master/decide.c
SRCS    := $(UTIL) $(CONFIG) $(PARSERS) $(NET) $(PYSRC) $(WORKER) $(MASTER) src/main.c
obj      = $(patsubst src/%.c,$(O)/obj/%.o,$(1))

UNIT_TESTS := http_parser uwsgi_proto ini config buf loop out conn_state uwsgi_request balance \
              forwarded master
UNIT_DEPS_buf         := $(UTIL)
UNIT_DEPS_http_parser := $(UTIL) src/http/http_parser.c src/http/http_response.c
UNIT_DEPS_uwsgi_proto := $(UTIL) src/uwsgi/uwsgi_proto.c
UNIT_DEPS_config      := $(UTIL) $(CONFIG) src/net/sock.c src/http/forwarded.c
UNIT_DEPS_forwarded   := $(UTIL) src/http/forwarded.c
UNIT_DEPS_ini         := $(UTIL) $(CONFIG) src/http/forwarded.c
UNIT_DEPS_loop        := $(UTIL) src/net/loop.c
UNIT_DEPS_out         := $(UTIL) src/net/out.c
UNIT_DEPS_conn_state  := $(UTIL) src/worker/conn_state.c
UNIT_DEPS_balance     := $(UTIL) src/worker/balance.c
UNIT_DEPS_master      := $(UTIL) src/master/decide.c
UNIT_DEPS_uwsgi_request := $(UTIL) src/uwsgi/uwsgi_proto.c src/uwsgi/uwsgi_request.c \
                           src/http/http_parser.c

all: $(O)/corral

$(O)/corral: $(call obj,$(SRCS)) Makefile
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(PY_LIBS) -lm

$(O)/obj/python/%.o: src/python/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PY_CFLAGS) -c -o $@ $<
$(O)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<
$(O)/tests/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -c -o $@ $<

define unit_rule
$(O)/tests/test_$(1): $(O)/tests/test_$(1).o $(call obj,$(UNIT_DEPS_$(1)))
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $(CMOCKA_LIBS)
endef
$(foreach t,$(UNIT_TESTS),$(eval $(call unit_rule,$(t))))

# The README's test command: setup, unit tests under ASan+UBSan, integration tests.
test:
	scripts/setup-debian.sh
	$(MAKE) BUILD=asan unit
	$(MAKE) BUILD=release all
	$(MAKE) BUILD=release integration

unit: $(foreach t,$(UNIT_TESTS),$(O)/tests/test_$(t))
	@set -e; for t in $^; do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 $$t; done

PYTEST ?= /usr/bin/python3 -m pytest
integration: $(O)/corral
	CORRAL_BIN=$(abspath $(O)/corral) $(PYTEST) -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

run:
	scripts/setup-debian.sh
	$(MAKE) BUILD=release all
	build/release/corral --ini examples/flaskapp/corral.ini

# Each target runs FUZZ_SECONDS (default 20) from a copy of its committed corpus.
FUZZERS := http_parser uwsgi_proto ini
FUZZ_SRCS := $(UTIL) src/http/http_parser.c src/uwsgi/uwsgi_proto.c src/uwsgi/uwsgi_request.c \
             src/config/ini.c
fuzz:
	@mkdir -p build/fuzz
	@set -e; for f in $(FUZZERS); do \
	  clang -std=c11 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined \
	    -o build/fuzz/fuzz_$$f tests/fuzz/fuzz_$$f.c $(FUZZ_SRCS); \
	  rm -rf build/fuzz/corpus_$$f; cp -r tests/fuzz/corpus/$$f build/fuzz/corpus_$$f; \
	  echo "== fuzz_$$f ($${FUZZ_SECONDS:-20} s)"; \
	  if ! build/fuzz/fuzz_$$f -max_total_time=$${FUZZ_SECONDS:-20} -print_final_stats=1 \
	      -artifact_prefix=build/fuzz/ build/fuzz/corpus_$$f > build/fuzz/fuzz_$$f.log 2>&1; then \
	    tail -n 40 build/fuzz/fuzz_$$f.log; exit 1; fi; \
	  grep -E "number_of_executed_units" build/fuzz/fuzz_$$f.log; \
	done

# Test-only: compare our parser with Debian's llhttp (node-llhttp's C sources).
diff-llhttp:
	@mkdir -p build/fuzz
	cc -std=c11 -D_GNU_SOURCE -O2 -Isrc -I/usr/share/include/llhttp -o build/fuzz/diff_llhttp \
	  tests/fuzz/diff_llhttp.c src/http/http_parser.c \
	  /usr/share/llhttp/llhttp.c /usr/share/llhttp/api.c /usr/share/llhttp/http.c
	build/fuzz/diff_llhttp --mutate tests/fuzz/corpus/http_parser/*

FORMAT_FILES = $(shell git ls-files 'src/*.[ch]' 'tests/unit/*.[ch]' 'tests/fuzz/*.c')
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run -Werror $(FORMAT_FILES)

docs/config.md: $(O)/corral
	$(O)/corral --help-markdown > $@

clean:
	rm -rf build

.PHONY: all test unit integration run fuzz diff-llhttp format format-check clean
-include $(shell find build/$(BUILD) -name '*.d' 2>/dev/null)
