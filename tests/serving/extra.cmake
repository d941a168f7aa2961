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
