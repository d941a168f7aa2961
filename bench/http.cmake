# http.cmake: the HTTP benchmark's baseline server (included from bench/CMakeLists.txt).
# sdw-h2o-hello: a minimal libh2o-evloop server that bench/http_bench.sh compares sd-worker's GET /health with.
pkg_check_modules(SDW_BENCH_H2O REQUIRED IMPORTED_TARGET libh2o-evloop)
find_package(OpenSSL REQUIRED)
add_executable(sdw-h2o-hello ${CMAKE_CURRENT_LIST_DIR}/h2o_hello.c)
target_compile_definitions(sdw-h2o-hello PRIVATE H2O_USE_LIBUV=0)
target_link_libraries(sdw-h2o-hello PRIVATE PkgConfig::SDW_BENCH_H2O OpenSSL::SSL OpenSSL::Crypto)
