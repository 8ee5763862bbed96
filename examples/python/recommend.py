#!/usr/bin/python3
"""recpipe example client in Python: Recommend and Feedback against a running gateway.

Uses Debian's python3-grpcio and python3-grpc-tools (run it with /usr/bin/python3). The
stubs are generated from the project's protos/ at run time into a temporary directory,
so nothing generated is ever committed.

    /usr/bin/python3 examples/python/recommend.py --target 127.0.0.1:50050 --user 1
    /usr/bin/python3 examples/python/recommend.py --user 1 --feedback 1,2,3 --type click
"""
import argparse
import importlib
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = os.path.normpath(os.path.join(HERE, "..", "..", "protos"))


def load_stubs(protos_dir):
    """Generates the recpipe.v1 Python stubs with grpc_tools and imports them."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="recpipe-py-")
    files = ["recpipe/v1/common.proto", "recpipe/v1/recommender.proto"]
    rc = protoc.main(["protoc", "-I" + protos_dir, "--python_out=" + out,
                      "--grpc_python_out=" + out] + files)
    if rc != 0:
        sys.exit("recommend.py: protoc failed on %s (exit %d)" % (protos_dir, rc))
    sys.path.insert(0, out)
    importlib.invalidate_caches()
    pb = importlib.import_module("recpipe.v1.recommender_pb2")
    common = importlib.import_module("recpipe.v1.common_pb2")
    rpc = importlib.import_module("recpipe.v1.recommender_pb2_grpc")
    return pb, common, rpc


EVENT_TYPES = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4, "rating": 5, "dismiss": 6}


def main():
    ap = argparse.ArgumentParser(description="Call a recpipe gateway: Recommend, Feedback.")
    ap.add_argument("--target", default="127.0.0.1:50050", help="gateway address")
    ap.add_argument("--user", type=int, required=True, help="user id")
    ap.add_argument("--count", type=int, default=10, help="items to recommend")
    ap.add_argument("--feedback", default="", help="comma-separated item ids to send first")
    ap.add_argument("--type", default="click", choices=sorted(EVENT_TYPES), help="event type")
    ap.add_argument("--value", type=float, default=0.0, help="event value (rating)")
    ap.add_argument("--timeout", type=float, default=2.0, help="deadline per call, seconds")
    ap.add_argument("--protos", default=PROTOS, help="the protos/ directory")
    args = ap.parse_args()

    import grpc

    pb, common, rpc = load_stubs(args.protos)
    stub = rpc.RecommenderStub(grpc.insecure_channel(args.target))
    try:
        if args.feedback:
            now = int(time.time())
            events = [pb.FeedbackEvent(user_id=args.user, item_id=int(i), type=EVENT_TYPES[args.type],
                                       value=args.value, timestamp=now)
                      for i in args.feedback.split(",") if i.strip()]
            r = stub.Feedback(pb.FeedbackRequest(events=events), timeout=args.timeout)
            print("feedback: stored %d event(s), %d for items not in the bundle"
                  % (r.stored, r.unknown_items))
        r = stub.Recommend(pb.RecommendRequest(user_id=args.user, count=args.count, debug=True),
                           timeout=args.timeout)
    except grpc.RpcError as e:
        sys.exit("recommend.py: %s: %s" % (e.code().name, e.details()))
    flags = [pb.Degradation.Name(d) for d in r.degraded]
    print("user %d: %d item(s), request %s, %s%s" % (
        args.user, len(r.items), r.request_id, "cache hit" if r.cache_hit else
        "%d us" % r.timings.total_us, (" degraded: " + ", ".join(flags)) if flags else ""))
    for n, it in enumerate(r.items, 1):
        print("%3d. %-60s %-28s %.3f %s" % (n, it.title[:60], "|".join(it.categories)[:28], it.score,
                                            it.explanation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
