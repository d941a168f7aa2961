# sdw_add_unit_tests(DIR LIBS...): every DIR/test_*.c is one cmocka executable and one ctest (label unit).
# Tests find ../shared through the SDW_SHARED_DIR environment variable and scratch space in SDW_TMPDIR.
function(sdw_add_unit_tests dir)
  file(GLOB tests CONFIGURE_DEPENDS ${dir}/test_*.c)
  foreach(src ${tests})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE ${ARGN} PkgConfig::CMOCKA)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 600
      ENVIRONMENT "SDW_SHARED_DIR=${SDW_SHARED_DIR};SDW_BUILD_DIR=${CMAKE_BINARY_DIR};SDW_TMPDIR=${CMAKE_BINARY_DIR}/tmp")
  endforeach()
endfunction()
