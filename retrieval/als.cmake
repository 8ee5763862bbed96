# Implicit ALS and fold-in (ret/als.h). Creates rp_retrieval; the service part adds its
# sources to it with target_sources.
add_library(rp_retrieval STATIC src/als.c)
target_include_directories(rp_retrieval PUBLIC include PRIVATE src)
target_link_libraries(rp_retrieval PUBLIC rp_index rp_common PkgConfig::OPENBLAS OpenMP::OpenMP_C m)
# The row solves are short float loops: -O3 lets the compiler vectorize them.
set_source_files_properties(src/als.c PROPERTIES COMPILE_OPTIONS "-O3")

add_rp_test(test_als SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/retrieval/test_als.c
  LIBS rp_retrieval TIMEOUT 120)

# bench/als: iALS training time on ml-latest-small (bench/als/run.sh runs it).
add_executable(bench_als ${PROJECT_SOURCE_DIR}/bench/als/bench_als.c)
target_link_libraries(bench_als PRIVATE rp_retrieval)
set_target_properties(bench_als PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
