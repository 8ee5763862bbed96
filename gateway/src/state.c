/* The gateway's user state store: LMDB, one durable transaction per write. */
#include "gw/state.h"

#include "rp/log.h"

#include <errno.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define GW__HISTORY_DEFAULT 200
#define GW__HISTORY_MAX 10000
#define GW__MAP_DEFAULT ((size_t)1 << 30)
#define GW__REC_MAGIC 0x31535747u /* "GWS1" */

/* On disk, a user record is this header followed by `count` packed events in ring
 * order: while count < cap they are slots 0..count-1 oldest first; once full, the
 * oldest is at `head`. Values are memcpy'd in and out (LMDB data is not aligned). */
typedef struct user_hdr {
    uint32_t magic;
    uint32_t count;
    uint32_t head;
    uint32_t cap;
    uint64_t version;
} user_hdr;

/* Less free space than this on the state's file system after a failed write: full. */
#define GW__DISK_FULL_BYTES (1024 * 1024)

#define EV_SIZE 24 /* item u64, ts i64, value f32, type u8, 3 pad */

struct gw_state {
    MDB_env *env;
    MDB_dbi users, items, meta;
    uint32_t history_len;
    char *dir;
};

/* An LMDB failure, the state directory named. A full map or a full disk is RP_EFULL
 * (RESOURCE_EXHAUSTED): the write transaction was aborted whole. */
static int lmdb_err(const gw_state *st, rp_error *err, int rc, const char *what)
{
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
        return rp_errorf(err, RP_EFULL,
                         "user state %s: %s: %s (raise --state-map-size; nothing of this "
                         "batch was stored)",
                         st->dir, what, mdb_strerror(rc));
    /* LMDB reports a write cut short by a full disk as EIO: the free space tells. */
    struct statvfs v;
    bool disk_full = rc == ENOSPC || rc == EDQUOT ||
                     (rc == EIO && statvfs(st->dir, &v) == 0 &&
                      (uint64_t)v.f_bavail * v.f_frsize < GW__DISK_FULL_BYTES);
    if (disk_full)
        return rp_errorf(err, RP_EFULL,
                         "user state %s: %s: %s (the disk is full: free some space; nothing "
                         "of this batch was stored)",
                         st->dir, what, mdb_strerror(rc));
    return rp_errorf(err, RP_ELMDB, "user state %s: %s: %s", st->dir, what, mdb_strerror(rc));
}

static void pack_event(unsigned char *p, const gw_event *e)
{
    memset(p, 0, EV_SIZE);
    memcpy(p, &e->item_id, 8);
    memcpy(p + 8, &e->ts, 8);
    memcpy(p + 16, &e->value, 4);
    p[20] = e->type;
}

static void unpack_event(const unsigned char *p, gw_event *e)
{
    memcpy(&e->item_id, p, 8);
    memcpy(&e->ts, p + 8, 8);
    memcpy(&e->value, p + 16, 4);
    e->type = p[20];
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v, int *found)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(txn, dbi, &k, &d);
    *found = 0;
    *v = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (d.mv_size != 8) return MDB_CORRUPTED;
    memcpy(v, d.mv_data, 8);
    *found = 1;
    return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
    MDB_val k = {strlen(name), (void *)name}, d = {8, &v};
    return mdb_put(txn, dbi, &k, &d, 0);
}

int gw_state_open(const char *dir, const gw_state_opts *opts, gw_state **out, rp_error *err)
{
    gw_state *st = NULL;
    MDB_txn *txn = NULL;
    int rc, code;
    *out = NULL;
    size_t map_size = opts && opts->map_size ? opts->map_size : GW__MAP_DEFAULT;
    uint32_t hl = opts && opts->history_len ? opts->history_len : GW__HISTORY_DEFAULT;
    if (hl > GW__HISTORY_MAX)
        return rp_errorf(err, RP_EINVAL, "history length: %u is above the maximum %u", hl,
                         GW__HISTORY_MAX);
    if (mkdir(dir, 0775) != 0 && errno != EEXIST)
        return rp_errorf(err, RP_EIO, "user state: cannot create %s: %s", dir, strerror(errno));

    st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(dir))) {
        free(st);
        return rp_errorf(err, RP_ENOMEM, "user state: out of memory");
    }
    if ((rc = mdb_env_create(&st->env))) {
        code = lmdb_err(st, err, rc, "mdb_env_create");
        goto err;
    }
    mdb_env_set_maxdbs(st->env, 4);
    mdb_env_set_maxreaders(st->env, 512);
    if ((rc = mdb_env_set_mapsize(st->env, map_size))) {
        code = lmdb_err(st, err, rc, "map size");
        goto err;
    }
    /* NOTLS: read transactions are short and may run on any request thread. */
    if ((rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0664))) {
        code = rp_errorf(err, RP_ELMDB, "user state: cannot open %s: %s", dir, mdb_strerror(rc));
        goto err;
    }
    if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn))) {
        code = lmdb_err(st, err, rc, "begin");
        goto err;
    }
    if ((rc = mdb_dbi_open(txn, "users", MDB_CREATE | MDB_INTEGERKEY, &st->users)) ||
        (rc = mdb_dbi_open(txn, "items", MDB_CREATE | MDB_INTEGERKEY, &st->items)) ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta))) {
        code = lmdb_err(st, err, rc, "open tables");
        goto txn_abort;
    }
    uint64_t stored_hl;
    int found;
    if ((rc = meta_get_u64(txn, st->meta, "history_len", &stored_hl, &found))) {
        code = lmdb_err(st, err, rc, "read history_len");
        goto txn_abort;
    }
    if (found) {
        if (stored_hl == 0 || stored_hl > GW__HISTORY_MAX) {
            code = rp_errorf(err, RP_ECORRUPT, "user state %s: history_len %llu is corrupt", dir,
                             (unsigned long long)stored_hl);
            goto txn_abort;
        }
        if (stored_hl != hl)
            rp_warn("gateway", "user state %s keeps its history length %llu (asked %u)", dir,
                    (unsigned long long)stored_hl, hl);
        hl = (uint32_t)stored_hl;
    } else if ((rc = meta_put_u64(txn, st->meta, "history_len", hl))) {
        code = lmdb_err(st, err, rc, "write history_len");
        goto txn_abort;
    }
    if ((rc = mdb_txn_commit(txn))) {
        txn = NULL;
        code = lmdb_err(st, err, rc, "commit");
        goto err;
    }
    st->history_len = hl;
    *out = st;
    return RP_OK;

txn_abort:
    mdb_txn_abort(txn);
err:
    if (st->env) mdb_env_close(st->env);
    free(st->dir);
    free(st);
    return code;
}

void gw_state_close(gw_state *st)
{
    if (!st) return;
    mdb_env_close(st->env);
    free(st->dir);
    free(st);
}

uint32_t gw_state_history_len(const gw_state *st)
{
    return st->history_len;
}

static int read_hdr(const MDB_val *d, user_hdr *h)
{
    if (d->mv_size < sizeof *h) return MDB_CORRUPTED;
    memcpy(h, d->mv_data, sizeof *h);
    if (h->magic != GW__REC_MAGIC || h->cap == 0 || h->count > h->cap || h->head >= h->cap ||
        d->mv_size != sizeof *h + (size_t)h->count * EV_SIZE)
        return MDB_CORRUPTED;
    return 0;
}

int gw_state_history(gw_state *st, uint64_t user_id, gw_event *out, size_t cap, size_t *n,
                     uint64_t *version, rp_error *err)
{
    MDB_txn *txn;
    size_t key = (size_t)user_id;
    MDB_val k = {sizeof key, &key}, d;
    int rc;
    *n = 0;
    *version = 0;
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn))) return lmdb_err(st, err, rc, "begin");
    rc = mdb_get(txn, st->users, &k, &d);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return RP_OK;
    }
    user_hdr h;
    if (rc || (rc = read_hdr(&d, &h))) {
        mdb_txn_abort(txn);
        return lmdb_err(st, err, rc, "read user");
    }
    const unsigned char *ev = (const unsigned char *)d.mv_data + sizeof h;
    /* Oldest first: slot (start + i) % count, start = head when the ring is full. */
    uint32_t start = h.count == h.cap ? h.head : 0;
    size_t skip = h.count > cap ? h.count - cap : 0;
    for (size_t i = skip; i < h.count; i++)
        unpack_event(ev + (size_t)((start + i) % h.count) * EV_SIZE, &out[(*n)++]);
    *version = h.version;
    mdb_txn_abort(txn);
    return RP_OK;
}

/* Appends one event to a user's record inside txn; buf is scratch of the full record
 * size. *new_events is 1 when the ring grew (0 when an old event fell out). */
static int append_one(gw_state *st, MDB_txn *txn, const gw_user_event *ue, uint64_t version,
                      unsigned char *buf, int *grew)
{
    size_t key = (size_t)ue->user_id;
    MDB_val k = {sizeof key, &key}, d;
    user_hdr h;
    int rc = mdb_get(txn, st->users, &k, &d);
    if (rc == MDB_NOTFOUND) {
        h = (user_hdr){.magic = GW__REC_MAGIC, .cap = st->history_len};
    } else if (rc) {
        return rc;
    } else {
        if ((rc = read_hdr(&d, &h))) return rc;
        memcpy(buf, d.mv_data, d.mv_size);
    }
    unsigned char *ev = buf + sizeof h;
    if (h.count < h.cap) {
        pack_event(ev + (size_t)h.count * EV_SIZE, &ue->ev);
        h.count++;
        h.head = h.count % h.cap;
        *grew = 1;
    } else {
        pack_event(ev + (size_t)h.head * EV_SIZE, &ue->ev);
        h.head = (h.head + 1) % h.cap;
        *grew = 0;
    }
    h.version = version;
    memcpy(buf, &h, sizeof h);
    MDB_val nd = {sizeof h + (size_t)h.count * EV_SIZE, buf};
    return mdb_put(txn, st->users, &k, &nd, 0);
}

static int bump_item(gw_state *st, MDB_txn *txn, const gw_event *e)
{
    size_t key = (size_t)e->item_id;
    MDB_val k = {sizeof key, &key}, d;
    gw_item_counts c;
    int rc = mdb_get(txn, st->items, &k, &d);
    if (rc == MDB_NOTFOUND) {
        memset(&c, 0, sizeof c);
    } else if (rc) {
        return rc;
    } else {
        if (d.mv_size != sizeof c) return MDB_CORRUPTED;
        memcpy(&c, d.mv_data, sizeof c);
    }
    if (e->type <= GW_EVENT_TYPE_MAX) c.by_type[e->type]++;
    if (e->type != GW_EVENT_TYPE_DISMISS) c.events++;
    if (e->ts > c.last_ts) c.last_ts = e->ts;
    MDB_val nd = {sizeof c, &c};
    return mdb_put(txn, st->items, &k, &nd, 0);
}

int gw_state_append(gw_state *st, const gw_user_event *events, size_t n, rp_error *err)
{
    MDB_txn *txn = NULL;
    unsigned char *buf = NULL;
    int rc, code, found;
    uint64_t seq, total;
    if (n == 0) return RP_OK;
    buf = malloc(sizeof(user_hdr) + (size_t)st->history_len * EV_SIZE);
    if (!buf) return rp_errorf(err, RP_ENOMEM, "user state: out of memory");
    if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn))) {
        code = lmdb_err(st, err, rc, "begin");
        goto out;
    }
    if ((rc = meta_get_u64(txn, st->meta, "seq", &seq, &found)) ||
        (rc = meta_get_u64(txn, st->meta, "events", &total, &found))) {
        code = lmdb_err(st, err, rc, "read sequence");
        goto txn_abort;
    }
    seq++;
    for (size_t i = 0; i < n; i++) {
        int grew = 0;
        if ((rc = append_one(st, txn, &events[i], seq, buf, &grew))) {
            code = lmdb_err(st, err, rc, "store event");
            rp_error_prefix(err, "event %zu", i);
            goto txn_abort;
        }
        total += (uint64_t)grew;
        if ((rc = bump_item(st, txn, &events[i].ev))) {
            code = lmdb_err(st, err, rc, "count item");
            rp_error_prefix(err, "event %zu", i);
            goto txn_abort;
        }
    }
    if ((rc = meta_put_u64(txn, st->meta, "seq", seq)) ||
        (rc = meta_put_u64(txn, st->meta, "events", total))) {
        code = lmdb_err(st, err, rc, "write sequence");
        goto txn_abort;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    code = rc ? lmdb_err(st, err, rc, "commit") : RP_OK;
    goto out;

txn_abort:
    mdb_txn_abort(txn);
out:
    free(buf);
    return code;
}

int gw_state_forget(gw_state *st, uint64_t user_id, bool *existed, uint32_t *events_deleted,
                    rp_error *err)
{
    MDB_txn *txn = NULL;
    size_t key = (size_t)user_id;
    MDB_val k = {sizeof key, &key}, d;
    int rc, code, found;
    user_hdr h = {0};
    uint64_t total;
    if (existed) *existed = false;
    if (events_deleted) *events_deleted = 0;
    if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn))) return lmdb_err(st, err, rc, "begin");
    rc = mdb_get(txn, st->users, &k, &d);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return RP_OK;
    }
    if (rc || (rc = read_hdr(&d, &h))) {
        code = lmdb_err(st, err, rc, "read user");
        goto txn_abort;
    }
    if ((rc = mdb_del(txn, st->users, &k, NULL)) ||
        (rc = meta_get_u64(txn, st->meta, "events", &total, &found)) ||
        (rc = meta_put_u64(txn, st->meta, "events", total >= h.count ? total - h.count : 0))) {
        code = lmdb_err(st, err, rc, "delete user");
        goto txn_abort;
    }
    if ((rc = mdb_txn_commit(txn))) return lmdb_err(st, err, rc, "commit");
    if (existed) *existed = true;
    if (events_deleted) *events_deleted = h.count;
    return RP_OK;

txn_abort:
    mdb_txn_abort(txn);
    return code;
}

int gw_state_item_counts(gw_state *st, uint64_t item_id, gw_item_counts *out, rp_error *err)
{
    MDB_txn *txn;
    size_t key = (size_t)item_id;
    MDB_val k = {sizeof key, &key}, d;
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn))) return lmdb_err(st, err, rc, "begin");
    rc = mdb_get(txn, st->items, &k, &d);
    if (rc == 0 && d.mv_size != sizeof *out) rc = MDB_CORRUPTED;
    if (rc == 0) memcpy(out, d.mv_data, sizeof *out);
    mdb_txn_abort(txn);
    if (rc && rc != MDB_NOTFOUND) return lmdb_err(st, err, rc, "read item");
    return RP_OK;
}

int gw_state_stats(gw_state *st, uint64_t *users, uint64_t *events, rp_error *err)
{
    MDB_txn *txn;
    MDB_stat s;
    int rc, found;
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn))) return lmdb_err(st, err, rc, "begin");
    if ((rc = mdb_stat(txn, st->users, &s)) ||
        (rc = meta_get_u64(txn, st->meta, "events", events, &found))) {
        mdb_txn_abort(txn);
        return lmdb_err(st, err, rc, "stat");
    }
    *users = s.ms_entries;
    mdb_txn_abort(txn);
    return RP_OK;
}
