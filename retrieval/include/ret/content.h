/*
 * ret/content.h — content cold start: an embedding for an item that has none, from its
 * categories. A ridge regression from one-hot categories (plus a bias) to the item
 * factor space, fitted when a bundle is loaded from the bundle's own items (the item
 * store holds every item's categories and factors, so nothing extra is stored).
 */
#ifndef RET_CONTENT_H
#define RET_CONTENT_H

#include "ret/catalog.h"
#include "rp/err.h"

#include <stdint.h>

typedef struct ret_content ret_content;

/* Categories above which no model is fitted (the solve is cubic in their number). */
#define RET_CONTENT_MAX_CATEGORIES 1024u

/*
 * quantile (0..1, e.g. 0.95) sets the length of predicted vectors: that quantile of
 * the lengths of the catalog's items in the same categories (see ret_content_embed).
 * Fits W minimising |XW − Y|² + lambda |W|² over the catalog's items (X: bias + one-hot
 * categories, Y: item vectors) by a Cholesky solve of (XᵀX + λI) W = XᵀY. RP_EINVAL
 * when the catalog has no categories or more than RET_CONTENT_MAX_CATEGORIES; RP_ENOMEM.
 * *out is owned by the caller (ret_content_free).
 */
int ret_content_fit(const ret_catalog *c, float lambda, double quantile, ret_content **out,
                    rp_error *err);
void ret_content_free(ret_content *m);
/* The embedding for an item with these category indices (of the fitted catalog) into
 * out (dim floats): the regression's direction, scaled to the mean over its categories
 * of the fitted length quantile. Cannot fail; no categories gives the mean item. */
void ret_content_embed(const ret_content *m, const uint16_t *cats, uint32_t n, float *out);

#endif
