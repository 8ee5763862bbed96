#!/usr/bin/python3
"""Wire compatibility with a gRPC client nobody here wrote.

Generates Python stubs from protos/ with Debian's python3-grpc-tools at test time,
starts `recpipe retrieval` and `recpipe ranking` (no bundle) on ephemeral ports and calls
Health/Check, Health/Watch, Admin/Status and the business methods with python3-grpcio.
Run by ctest with /usr/bin/python3; RECPIPE_BIN and RECPIPE_SOURCE_DIR come from ctest.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
from grpc_tools import protoc

SRC = os.environ.get("RECPIPE_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
BIN = os.environ.get("RECPIPE_BIN", os.path.join(SRC, "build", "recpipe"))
GEN = tempfile.mkdtemp(prefix="rp-pystubs-")


def generate_stubs():
    protos = os.path.join(SRC, "protos")
    files = [os.path.join("recpipe/v1", f) for f in sorted(os.listdir(os.path.join(protos, "recpipe/v1")))
             if f.endswith(".proto")]
    args = ["protoc", "-I" + protos, "--python_out=" + GEN, "--grpc_python_out=" + GEN] + files
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + " ".join(files))
    # grpc/health/v1 would shadow the installed `grpc` package: generate it under another
    # Python module name (the proto package, hence the wire names, stay grpc.health.v1).
    hdir = os.path.join(GEN, "_hsrc", "rphealth")
    os.makedirs(hdir)
    shutil.copy(os.path.join(protos, "grpc/health/v1/health.proto"), hdir)
    if protoc.main(["protoc", "-I" + os.path.join(GEN, "_hsrc"), "--python_out=" + GEN,
                    "--grpc_python_out=" + GEN, "rphealth/health.proto"]) != 0:
        raise RuntimeError("grpc_tools.protoc failed on health.proto")
    sys.path.insert(0, GEN)


generate_stubs()
from recpipe.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from recpipe.v1 import ranking_pb2, retrieval_pb2, retrieval_pb2_grpc  # noqa: E402
from rphealth import health_pb2, health_pb2_grpc  # noqa: E402

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Service:
    """A recpipe service as a child process on an ephemeral port."""

    def __init__(self, name, *extra):
        self.dir = tempfile.mkdtemp(prefix="rp-py-")
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "stderr.log"), "w+")
        self.proc = subprocess.Popen([BIN, name, "--listen", "127.0.0.1:0", "--threads", "2",
                                      "--port-file", port_file] + list(extra),
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 15
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not start: %s" % (name, self.read_log()))
            time.sleep(0.01)
        with open(port_file) as f:
            self.port = int(f.read())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)

    def read_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class InteropTest(unittest.TestCase):
    def check_basics(self, name):
        s = Service(name)
        try:
            health = health_pb2_grpc.HealthStub(s.channel)
            r = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            self.assertEqual(r.status, NOT_SERVING)
            admin = admin_pb2_grpc.AdminStub(s.channel)
            admin.Status(admin_pb2.StatusRequest(), timeout=5)
            # Counters move a moment after the caller has its answer: ask twice.
            st = admin.Status(admin_pb2.StatusRequest(), timeout=5)
            self.assertEqual(st.service, name)
            self.assertFalse(st.serving)
            self.assertGreaterEqual(st.calls_total, 1)
            self.assertGreater(st.uptime_seconds, 0)
        finally:
            self.assertEqual(s.stop(), 0)

    def test_ranking_health_and_status(self):
        self.check_basics("ranking")

    def test_retrieval(self):
        s = Service("retrieval", "--max-message-bytes", "1024")
        try:
            ch = s.channel
            # Business call without a bundle: UNAVAILABLE, saying why.
            with self.assertRaises(grpc.RpcError) as cm:
                retrieval_pb2_grpc.RetrievalStub(ch).Retrieve(
                    retrieval_pb2.RetrieveRequest(), timeout=5,
                    metadata=(("x-request-id", "py-interop-1"),))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("no bundle is loaded", cm.exception.details())
            self.assertIn(("x-request-id", "py-interop-1"), cm.exception.initial_metadata())

            # Unknown method: UNIMPLEMENTED at once.
            t0 = time.monotonic()
            with self.assertRaises(grpc.RpcError) as cm:
                ch.unary_unary("/recpipe.v1.Nope/Nothing")(b"", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            self.assertLess(time.monotonic() - t0, 0.5)

            # Bytes that are not a RetrieveRequest: INVALID_ARGUMENT naming the method.
            with self.assertRaises(grpc.RpcError) as cm:
                ch.unary_unary("/recpipe.v1.Retrieval/Retrieve")(b"\x0a\x7f\x01", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("/recpipe.v1.Retrieval/Retrieve", cm.exception.details())

            # Over --max-message-bytes: RESOURCE_EXHAUSTED.
            with self.assertRaises(grpc.RpcError) as cm:
                admin_pb2_grpc.AdminStub(ch).Reload(
                    admin_pb2.ReloadRequest(bundle_path="x" * 4096), timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

            st = admin_pb2_grpc.AdminStub(ch).Status(admin_pb2.StatusRequest(), timeout=5)
            self.assertEqual(st.service, "retrieval")
            self.assertGreaterEqual(st.calls_failed, 3)

            # Watch streams the current status, and ends cleanly when the server stops.
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(),
                                                         timeout=20)
            first = next(watch)
            self.assertEqual(first.status, NOT_SERVING)
            s.proc.send_signal(signal.SIGTERM)
            rest = list(watch)  # the stream ends with status OK, no exception
            self.assertTrue(all(m.status == NOT_SERVING for m in rest))
            self.assertEqual(s.proc.wait(timeout=15), 0)
            log = s.read_log()
            self.assertIn('"request_id":"py-interop-1"', log)
        finally:
            s.stop()


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2)
    finally:
        shutil.rmtree(GEN, ignore_errors=True)
