/* libFuzzer target: Ranking.Rank request decoding + handler, in-process. */
#include "fuzz_service.h"

#include "rank/service.h"

static const rp_method *rank;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rank_service *s;
    rp_error err = {0};
    if (rank_service_create(fz_bundle(), &s, &err)) {
        fprintf(stderr, "fuzz: ranking: %s\n", err.msg);
        abort();
    }
    size_t n;
    const rp_method *ms = rank_service_methods(s, &n); /* before n is read */
    rank = ip_find(ms, n, "/Rank");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ip_result r;
    if (ip_call(rank, data, size, &r) != RP_OK && !r.err.msg[0]) abort();
    return 0;
}
