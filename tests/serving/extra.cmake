# extra.cmake: programs the serving tests run (included by tests/serving/CMakeLists.txt).
# sdw-fake-worker: a protocol test double for sd-worker-engine's worker command (tests/serving/fake_worker.c).
add_executable(sdw-fake-worker ${CMAKE_CURRENT_LIST_DIR}/fake_worker.c)
target_link_libraries(sdw-fake-worker PRIVATE sdwcommon)
if(TARGET test_pool)
  # test_pool forks both the fake and the real worker program; build them with it and tell it where they are.
  add_dependencies(test_pool sdw-fake-worker sd-worker-engine)
  target_compile_definitions(test_pool PRIVATE SDW_FAKE_WORKER="$<TARGET_FILE:sdw-fake-worker>"
                                               SDW_ENGINE_PROGRAM="$<TARGET_FILE:sd-worker-engine>")
endif()
# test_pool_cuda: test_pool.c's tests of cuda workers against the pool's sources compiled as a -DSDW_CUDA=ON
# build compiles them (kind cuda accepted: --backend cuda, CUDA_VISIBLE_DEVICES, the cuda threads default, two
# workers on one GPU), with the fake worker: no GPU, no CUDA toolkit. A CUDA build's test_pool runs them itself.
if(TARGET test_pool AND NOT SDW_CUDA)
  pkg_check_modules(SDW_TEST_H2O REQUIRED IMPORTED_TARGET libh2o-evloop)
  add_executable(test_pool_cuda ${CMAKE_CURRENT_LIST_DIR}/test_pool.c ${CMAKE_SOURCE_DIR}/supervisor/pool.c
                                ${CMAKE_SOURCE_DIR}/supervisor/pool_proc.c)
  target_include_directories(test_pool_cuda PRIVATE ${CMAKE_SOURCE_DIR}/supervisor)
  target_compile_definitions(test_pool_cuda PRIVATE SDW_CUDA=1 SDW_POOL_TEST_CUDA_ONLY=1 H2O_USE_LIBUV=0
                                                    SDW_FAKE_WORKER="$<TARGET_FILE:sdw-fake-worker>")
  # most of test_pool.c's tests are left out of this build of it
  target_compile_options(test_pool_cuda PRIVATE -Wno-unused-function)
  target_link_libraries(test_pool_cuda PRIVATE sdwconfig sdwcommon PkgConfig::SDW_TEST_H2O PkgConfig::CMOCKA)
  add_dependencies(test_pool_cuda sdw-fake-worker)
  add_test(NAME test_pool_cuda COMMAND test_pool_cuda)
  set_tests_properties(test_pool_cuda PROPERTIES LABELS unit TIMEOUT 600
    ENVIRONMENT "SDW_TESTDATA_DIR=${SDW_TESTDATA_DIR};SDW_SOURCE_DIR=${CMAKE_SOURCE_DIR};SDW_BUILD_DIR=${CMAKE_BINARY_DIR};SDW_TMPDIR=${CMAKE_BINARY_DIR}/tmp")
endif()
