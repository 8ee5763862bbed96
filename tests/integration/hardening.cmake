# Hardening tests (issue 9): bad input as a table, fault injection, durability under
# SIGKILL. Real child processes (the recpipe binary), real gRPC on loopback.
# Included from tests/CMakeLists.txt.
set(_hard ${CMAKE_CURRENT_LIST_DIR})

add_rp_test(test_bad_input TIMEOUT 120
  SOURCES ${_hard}/test_bad_input.c
  LIBS rp_ranking rp_index rp_common rp_proto PkgConfig::GRPC)
add_dependencies(test_bad_input recpipe)
# `recpipe ranking --bundle` until the subcommand table routes it (hc_spawn_ranking).
target_compile_definitions(test_bad_input PRIVATE RANK_SERVER_HELPER="$<TARGET_FILE:rank_server_helper>")
add_dependencies(test_bad_input rank_server_helper)
