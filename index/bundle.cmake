# index/bundle.cmake: the FAISS C API shim, the ANN wrapper, recall tuning, the item
# store and bundles. Included by index/CMakeLists.txt.
target_sources(rp_index PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/src/faiss_shim.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/ann.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/tune.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/fvecs.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/itemstore.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/bundle.c
  ${CMAKE_CURRENT_SOURCE_DIR}/src/builder.c)
# The shipped CATCH_AND_HANDLE prints every exception unless NDEBUG is set.
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/src/faiss_shim.cpp
  PROPERTIES COMPILE_DEFINITIONS NDEBUG)
# -lfaiss before BLAS; OpenMP and the C++ runtime for the static libfaiss.a.
# SHA-256 of bundle files: OpenSSL's libcrypto (already required by gRPC).
pkg_check_modules(LIBCRYPTO REQUIRED IMPORTED_TARGET libcrypto)
target_link_libraries(rp_index PUBLIC faiss PkgConfig::OPENBLAS OpenMP::OpenMP_CXX stdc++ m
  PRIVATE PkgConfig::LIBCRYPTO)

set(IDX_TESTS ${PROJECT_SOURCE_DIR}/tests/unit/index)
add_rp_test(test_faiss_shim SOURCES ${IDX_TESTS}/test_faiss_shim.c LIBS rp_index TIMEOUT 120)
add_rp_test(test_ann SOURCES ${IDX_TESTS}/test_ann.c LIBS rp_index TIMEOUT 300)
add_rp_test(test_bundle SOURCES ${IDX_TESTS}/test_bundle.c LIBS rp_index TIMEOUT 300)

# The 1M benchmark (bench/index/run.sh; not a test).
add_executable(bench_index ${PROJECT_SOURCE_DIR}/bench/index/bench_index.c
  ${PROJECT_SOURCE_DIR}/bench/index/faiss_direct.cpp)
target_link_libraries(bench_index PRIVATE rp_index)
set_target_properties(bench_index PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
add_rp_test(test_index_cli SOURCES ${IDX_TESTS}/test_index_cli.c LIBS rp_index TIMEOUT 300)
add_dependencies(test_index_cli recpipe)
