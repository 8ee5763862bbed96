/* A test helper: `recpipe ranking --bundle` (cli/cmd_ranker.c, cmd_ranking_bundle) as its
 * own binary, so that test_rank_server runs it as a real child process before the
 * subcommand table routes `recpipe ranking` to it. */
int cmd_ranking_bundle(int argc, char **argv);

int main(int argc, char **argv) { return cmd_ranking_bundle(argc, argv); }
