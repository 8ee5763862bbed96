# recpipe — the commands a user types. Everything builds into $(BUILD) with CMake.
BUILD      ?= build
SAN_BUILD  ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECPIPE_WERROR=ON
# Sanitizer pass: ASan + UBSan, LeakSanitizer on (ASan's default on Linux).
SAN_ENV    := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
FUZZ_SECONDS ?= 10

.PHONY: all deps configure build test test-unit test-sanitize demo bench fuzz fuzz-smoke clean

all: build

deps:
	@scripts/setup-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# Every test, then the suite again under ASan + UBSan (the tests labelled "heavy" are
# left out of the second pass: see CMakeLists.txt), then each fuzz target briefly.
test: test-unit test-sanitize fuzz-smoke

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) $(CMAKE_FLAGS) -DRECPIPE_SANITIZE=address,undefined >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)
	@cd $(SAN_BUILD) && $(SAN_ENV) ctest --output-on-failure -j$(JOBS) -LE heavy

# libFuzzer targets (clang): `make fuzz FUZZ_SECONDS=300` for a real campaign.
fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke: deps
	@scripts/fuzz.sh 5

demo: build
	@$(BUILD)/recpipe demo

bench: build
	@scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(SAN_BUILD) build-fuzz
