# sdw_add_unit_tests(DIR LIBS...): every DIR/test_*.c is one cmocka executable and one ctest (label unit).
# Tests find tests/data through SDW_TESTDATA_DIR, the source tree (data/clip) through SDW_SOURCE_DIR and
# scratch space in SDW_TMPDIR.
function(sdw_add_unit_tests dir)
  file(GLOB tests CONFIGURE_DEPENDS ${dir}/test_*.c)
  foreach(src ${tests})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE ${ARGN} PkgConfig::CMOCKA)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 600
      ENVIRONMENT "SDW_TESTDATA_DIR=${SDW_TESTDATA_DIR};SDW_SOURCE_DIR=${CMAKE_SOURCE_DIR};SDW_BUILD_DIR=${CMAKE_BINARY_DIR};SDW_TMPDIR=${CMAKE_BINARY_DIR}/tmp")
  endforeach()
endfunction()
