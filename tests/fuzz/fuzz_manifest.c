/* libFuzzer target: the bundle manifest reader (idx_bundle_read_manifest) over a
 * manifest.json holding the input. */
#include "fuzz_service.h"

#include "idx/bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[400], path[450];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/b", fz_tmpdir());
        mkdir(dir, 0755);
        snprintf(path, sizeof path, "%s/manifest.json", dir);
        rp_log_set_level(RP_LOG_ERROR);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    idx_bundle *b = NULL;
    rp_error err = {0};
    int rc = idx_bundle_read_manifest(dir, &b, &err);
    if (rc == RP_OK) {
        const idx_manifest *m = idx_bundle_manifest(b);
        if (!m) abort();
        idx_bundle_release(b);
    } else if (!err.msg[0] || b) {
        abort();
    }
    return 0;
}
