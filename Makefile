# recpipe — the commands a user types. Everything builds into $(BUILD) with CMake.
BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECPIPE_WERROR=ON

.PHONY: all deps configure build test demo bench clean fuzz

all: build

deps:
	@scripts/setup-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	@$(BUILD)/recpipe demo

bench: build
	@scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD)
