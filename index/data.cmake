# index/data.cmake: datasets (DATA_DIR), `recpipe import` and `recpipe synth`.
# Included by index/CMakeLists.txt.
target_sources(rp_index PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/src/csv.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/dataset.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/import.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/synth.c)

set(IDX_DATA_TESTS ${PROJECT_SOURCE_DIR}/tests/unit/index)
foreach(t csv import dataset synth)
  if(EXISTS ${IDX_DATA_TESTS}/test_${t}.c)
    add_rp_test(test_${t} SOURCES ${IDX_DATA_TESTS}/test_${t}.c LIBS rp_index TIMEOUT 120)
  endif()
endforeach()
# test_import runs the recpipe binary.
if(TARGET test_import)
  add_dependencies(test_import recpipe)
endif()
# Fault injection: recpipe's own malloc/calloc/realloc calls fail one by one.
add_rp_test(test_data_faults SOURCES ${IDX_DATA_TESTS}/test_data_faults.c LIBS rp_index TIMEOUT 300)
target_link_options(test_data_faults PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
