#!/bin/sh
# scripts/cluster-local.sh BUNDLE STATE_DIR [N_SHARDS] [M_RANKERS]
#
# The production topology on one machine: one retrieval process per shard of BUNDLE,
# M_RANKERS ranking replicas (the gateway calls them round robin and retries a failed
# call on the next) and the gateway on $RECPIPE_LISTEN (default 127.0.0.1:50050), all
# children of `recpipe serve`; Ctrl-C stops them all.
#
# N_SHARDS is checked against the bundle (the shard count is fixed when the bundle is
# built: `recpipe build --shards N`); it defaults to the bundle's own count. M_RANKERS
# defaults to 2. RECPIPE (default: recpipe on PATH, else ./build/recpipe) picks the binary.
set -eu
if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    echo "usage: $0 BUNDLE STATE_DIR [N_SHARDS] [M_RANKERS]" >&2
    exit 2
fi
bundle=$1
state=$2
shards=${3:-}
rankers=${4:-2}
bin=${RECPIPE:-$(command -v recpipe || echo ./build/recpipe)}
if [ ! -f "$bundle/manifest.json" ]; then
    echo "$0: $bundle/manifest.json: no such file (build one with: recpipe build --shards N)" >&2
    exit 2
fi
if [ -n "$shards" ]; then
    have=$(ls "$bundle" | grep -c '^shard-[0-9]*\.faiss$' || true)
    if [ "$have" != "$shards" ]; then
        echo "$0: $bundle has $have shard(s), not $shards (rebuild with: recpipe build --shards $shards)" >&2
        exit 2
    fi
fi
exec "$bin" serve --bundle "$bundle" --state "$state" \
    --listen "${RECPIPE_LISTEN:-127.0.0.1:50050}" --ranking-replicas "$rankers"
