# Hardening tests (issue 9): bad input as a table, fault injection, durability under
# SIGKILL. Real child processes (the recpipe binary), real gRPC on loopback.
# Included from tests/CMakeLists.txt.
set(_hard ${CMAKE_CURRENT_LIST_DIR})

add_rp_test(test_bad_input TIMEOUT 120
  SOURCES ${_hard}/test_bad_input.c
  LIBS rp_ranking rp_index rp_common rp_proto PkgConfig::GRPC)
add_dependencies(test_bad_input recpipe)

# Faults: allocation failure in the handlers (in-process, every allocation in turn: the
# wrapped allocators below), LMDB map full under Feedback, Ctrl-C during recpipe build.
add_rp_test(test_faults TIMEOUT 420
  SOURCES ${_hard}/test_faults.c
  LIBS rp_retrieval rp_ranking rp_gateway rp_eval rp_index rp_common rp_proto PkgConfig::GRPC)
target_include_directories(test_faults PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz
  ${PROJECT_SOURCE_DIR}/common/src)
target_link_options(test_faults PRIVATE
  -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=rp_arena_alloc,--wrap=rp_arena_calloc,--wrap=rp_arena_strdup)
add_dependencies(test_faults recpipe)

# Durability: Feedback streamed to a real gateway killed with SIGKILL at random moments,
# 20 rounds on the same state directory.
add_rp_test(test_durability TIMEOUT 180
  SOURCES ${_hard}/test_durability.c
  LIBS rp_gateway rp_ranking rp_index rp_common rp_proto PkgConfig::GRPC Threads::Threads)
add_dependencies(test_durability recpipe)
