# Makefile: the front door. CMake does the building underneath; see README.md.
#   make          build build/sd-worker and build/sd-worker-engine
#   make check    install missing Debian packages, build, run the whole test suite (incl. ASan/UBSan unit tests)
#   make demo     install missing packages, build, serve the tiny model and generate one image
#   make deb      build the Debian package into ../
#   make bench    run the benchmarks under bench/ (engine speed/memory, then HTTP)
#   make soak     run the soak test (SOAK_SECONDS, default 180; see docs/architecture.md)

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps configure test check asan demo deb bench soak clean

all: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	tools/install-deps.sh

configure:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

asan:
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSDW_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L unit -LE slow --output-on-failure -j $(JOBS)

# the soak test runs for minutes to hours: only `make soak` runs it
test: all
	cd $(BUILD) && ctest -LE soak --output-on-failure

check: deps
	$(MAKE) test
	$(MAKE) asan

demo: deps all
	tools/demo.sh

deb: deps
	dpkg-buildpackage -us -uc -b

bench: all
	BUILD=$(BUILD) bench/run.sh
	bench/http_bench.sh $(BUILD)

soak: all
	cd $(BUILD) && ctest -L soak --output-on-failure -V

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
