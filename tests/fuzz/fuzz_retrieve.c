/* libFuzzer target: Retrieval.Retrieve request decoding + handler, in-process. */
#include "fuzz_service.h"

#include "ret/service.h"

static const rp_method *retrieve;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ret_service_opts o = {.bundle_path = fz_bundle()};
    ret_service *s;
    rp_error err = {0};
    if (ret_service_create(&o, &s, &err)) {
        fprintf(stderr, "fuzz: retrieval: %s\n", err.msg);
        abort();
    }
    size_t n;
    const rp_method *ms = ret_service_methods(s, &n); /* before n is read */
    retrieve = ip_find(ms, n, "/Retrieve");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ip_result r;
    if (ip_call(retrieve, data, size, &r) != RP_OK && !r.err.msg[0]) abort(); /* no message */
    return 0;
}
