# retrieval/service.cmake — candidate sources, filters, side index and the Retrieval
# service; included by retrieval/CMakeLists.txt after als.cmake (which creates rp_retrieval).
if(NOT TARGET rp_retrieval)
  add_library(rp_retrieval STATIC)
  target_include_directories(rp_retrieval PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(rp_retrieval PUBLIC rp_index rp_common)
endif()
target_sources(rp_retrieval PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/src/catalog.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/filter.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/side_index.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/search.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/sources.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/source_ann.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/source_popular.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/source_fresh.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/source_similar.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/content.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/request.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/service.c)
target_link_libraries(rp_retrieval PUBLIC rp_proto PkgConfig::JSONC)

add_rp_test(test_ret_sources TIMEOUT 120
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_sources.c LIBS rp_retrieval rp_proto)
add_rp_test(test_ret_filter TIMEOUT 60
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_filter.c LIBS rp_retrieval rp_proto)
# Includes service.c itself (to reach its statics): built from the library's other files.
add_rp_test(test_ret_service TIMEOUT 60
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_service.c LIBS rp_retrieval rp_proto)
set_source_files_properties(${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_service.c PROPERTIES
  COMPILE_OPTIONS "-Wno-unused-function")
target_include_directories(test_ret_service PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
add_rp_test(test_ret_filter_recall TIMEOUT 300
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_filter_recall.c LIBS rp_retrieval rp_proto)

# Integration: real `recpipe retrieval` processes over real bundles (tests/integration).
add_rp_test(test_retrieval TIMEOUT 300
  SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/test_retrieval.c
  LIBS rp_testhelpers rp_index rp_common rp_proto)
add_dependencies(test_retrieval recpipe)

# bench/retrieval: Retrieve over gRPC against in-process searches (bench/retrieval/run.sh).
add_executable(bench_retrieval ${PROJECT_SOURCE_DIR}/bench/retrieval/bench_retrieval.c)
# Includes service.c (the in-process path reaches its statics): built from the library's other files.
target_link_libraries(bench_retrieval PRIVATE rp_retrieval rp_index rp_common rp_proto)
target_include_directories(bench_retrieval PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_options(bench_retrieval PRIVATE -Wno-unused-function)
set_target_properties(bench_retrieval PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
