#!/usr/bin/python3
"""Hostile clients against both daemons, on loopback only: floods that are
never read, connection storms, half-sent requests, oversized and malformed
input, misbehaving workers behind the gateway, lease and namespace hoarding.

Each case is bounded in count and time, checks that the daemon keeps
serving and that its memory stays bounded (RSS before/after is printed).

Usage: test_hostile.py --node PATH --router PATH --proto-dir DIR [unittest args]
"""
import argparse
import os
import resource
import select
import socket
import sys
import tempfile
import unittest

import grpc

import rmtest

ARGS = None
pb = pb_grpc = health_pb = health_grpc = None


def report(case, before_kib, after_kib):
    print(f"{case}: RSS {before_kib} KiB -> {after_kib} KiB", file=sys.stderr)


def flood(addr, request, total):
    """Sends `total` bytes of pipelined copies of `request` on one new
    connection and reads nothing. Returns (socket, bytes sent) once all is
    sent or the server has stopped taking more (no progress for 2 s; small
    socket buffers make that show early)."""
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.connect((host, int(port)))
    s.setblocking(False)
    data = request * -(-total // len(request))
    sent, stalled = 0, 0
    while sent < len(data) and stalled < rmtest.deadline_s(2) / 0.05:
        if not select.select([], [s], [], 0.05)[1]:
            stalled += 1
            continue
        try:
            sent += s.send(data[sent:sent + (64 << 10)])
            stalled = 0
        except BlockingIOError:
            stalled += 1
    return s, sent


def status(addr, path):
    """The HTTP status of GET path, or None if the connection failed."""
    try:
        return rmtest.http_request(addr, "GET", path)[0]
    except (OSError, rmtest.http.client.HTTPException):
        return None


def accept_queue(addr):
    """Connections waiting in the accept queue of the listener at addr
    (the rx_queue of its LISTEN line in /proc/net/tcp)."""
    port = int(addr.rsplit(":", 1)[1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                return int(cols[4].split(":")[1], 16)
    return 0


def limit_fds(n):
    """preexec_fn: the child's RLIMIT_NOFILE, soft and hard, is n."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class HttpHostile(unittest.TestCase):
    """Hostile clients of --http (both daemons): pipelined requests whose
    replies are never read, connection storms past the cap and past the
    open-files limit, stalled request heads, oversized URIs."""

    def node(self, *extra, preexec_fn=None):
        d = rmtest.Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                           "--node-id", "hh", "--shutdown-delay-ms", "0", *extra],
                          until="HTTP", preexec_fn=preexec_fn)
        self.addCleanup(lambda: self.assertEqual(d.stop(), 0))
        return d

    def grpc_serves(self, d):
        """A health check answered over a new connection (gRPC accepts)."""
        ch = grpc.insecure_channel(d.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            health_grpc.HealthStub(ch).Check(health_pb.HealthCheckRequest(),
                                             timeout=rmtest.deadline_s(10))
            return True
        finally:
            ch.close()

    def check_flood(self, d, request, total, case):
        self.assertEqual(rmtest.http_request(d.http, "GET", request.split()[1].decode())[0], 200)
        before = rmtest.rss_kib(d.pid)
        s, sent = flood(d.http, request, total)
        # Answered once the HTTP thread is through what it had read.
        self.assertEqual(rmtest.http_request(d.http, "GET", "/healthz")[0], 200)
        after = rmtest.rss_kib(d.pid)
        report(f"{case} ({sent} of {total} bytes taken)", before, after)
        s.close()
        # Release builds grow ~5 MiB; a sanitizer's quarantine of freed
        # replies adds some; unbounded, this was hundreds of MiB.
        self.assertLess(after - before, 64 << 10)
        self.assertLess(sent, total, "the server read every request without its replies read")

    def test_pipelined_metrics_never_read(self):
        d = self.node()
        self.check_flood(d, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 2 << 20,
                         "node: 2 MiB of pipelined GET /metrics, replies never read")

    def test_pipelined_cluster_json_never_read(self):
        nodes = ",".join(f"n{i}=127.0.0.1:{i + 1}" for i in range(32))  # a sizeable document
        r = rmtest.Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                           "--nodes", nodes, "--shutdown-delay-ms", "0"], until="HTTP")
        self.addCleanup(lambda: self.assertEqual(r.stop(), 0))
        rmtest.poll("/api/cluster published",
                    lambda: rmtest.http_request(r.http, "GET", "/api/cluster")[0] == 200)
        self.check_flood(r, b"GET /api/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 1 << 20,
                         "router: 1 MiB of pipelined GET /api/cluster, replies never read")

    def test_connection_storm_past_the_cap(self):
        d = self.node("--http-max-connections", "32")
        before = rmtest.rss_kib(d.pid)
        socks = [rmtest.connect(d.http) for _ in range(64)]
        refused = {}
        def answered():
            for s in select.select(socks, [], [], 0.05)[0]:
                if s not in refused:
                    refused[s] = s.recv(4096)
            return len(refused) >= 32
        rmtest.poll("32 connections past the cap answered", answered)
        self.assertTrue(all(b.startswith(b"HTTP/1.1 503") for b in refused.values()))
        self.assertEqual(select.select([s for s in socks if s not in refused], [], [], 0)[0], [])
        self.assertTrue(self.grpc_serves(d))
        after = rmtest.rss_kib(d.pid)
        report("node: 64 idle --http connections, cap 32", before, after)
        for s in socks:
            s.close()
        late = []  # refused too, until the server has seen the closes
        def room():
            st = status(d.http, "/healthz")
            late.extend([st] if st == 503 else [])
            return st == 200
        rmtest.poll("the cap's room back", room)
        rmtest.poll("the refusals counted", lambda: rmtest.metric(
            d.http, "radixmesh_http_refused_connections_total") == 32 + len(late))

    def test_fd_limit_leaves_grpc_room(self):
        """Under RLIMIT_NOFILE 256 the --http cap fits the fd budget: more
        idle connections than the budget are refused and gRPC still
        accepts new connections."""
        d = self.node(preexec_fn=limit_fds(256))
        before, fds_before = rmtest.rss_kib(d.pid), rmtest.open_fds(d.pid)
        socks = [rmtest.connect(d.http) for _ in range(300)]
        rmtest.poll("the HTTP server through the storm", lambda: accept_queue(d.http) == 0)
        fds_storm = rmtest.open_fds(d.pid)
        self.assertTrue(self.grpc_serves(d), "gRPC stopped accepting")
        refused = sum(1 for s in socks if select.select([s], [], [], 0)[0])
        for s in socks:
            s.close()
        rmtest.poll("/readyz", lambda: status(d.http, "/readyz") == 200)
        self.assertTrue(self.grpc_serves(d))
        print(f"fd limit 256: {fds_before} fds idle, {fds_storm} with 300 connections "
              f"({refused} refused at the --http cap of 128), "
              f"{rmtest.open_fds(d.pid)} after", file=sys.stderr)
        report("node: 300 idle --http connections under RLIMIT_NOFILE 256", before,
               rmtest.rss_kib(d.pid))
        self.assertGreaterEqual(refused, 300 - 128)
        self.assertTrue(d.logged("file descriptors: limit 256"))

    def test_gateway_cap_fits_fd_budget(self):
        """The gateway's --gateway-max-connections (4,096 by default) is
        clamped to its share of RLIMIT_NOFILE 512: 600 idle connections
        to it leave gRPC able to accept."""
        r = rmtest.Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--gateway", "127.0.0.1:0",
                           "--nodes", "n1=127.0.0.1:1", "--shutdown-delay-ms", "0"],
                          until="GATEWAY", preexec_fn=limit_fds(512))
        self.addCleanup(lambda: self.assertEqual(r.stop(), 0))
        before, fds_before = rmtest.rss_kib(r.pid), rmtest.open_fds(r.pid)
        socks = [rmtest.connect(r.gateway) for _ in range(600)]
        rmtest.poll("the gateway through the storm", lambda: accept_queue(r.gateway) == 0)
        fds_storm = rmtest.open_fds(r.pid)
        self.assertTrue(self.grpc_serves(r), "gRPC stopped accepting")
        for s in socks:
            s.close()
        print(f"router, fd limit 512: {fds_before} fds idle, {fds_storm} with 600 gateway "
              f"connections", file=sys.stderr)
        report("router: 600 idle gateway connections under RLIMIT_NOFILE 512", before,
               rmtest.rss_kib(r.pid))
        self.assertTrue(r.logged("--gateway-max-connections 4096 lowered to 96"))

    def test_grpc_that_stopped_accepting_fails_readiness(self):
        """gRPC 1.51 never accepts again after EMFILE (raw connections can
        exhaust the fds: gRPC has no connection cap). /readyz says so."""
        d = self.node(preexec_fn=limit_fds(256))
        self.assertEqual(rmtest.http_request(d.http, "GET", "/readyz")[0], 200)
        before = rmtest.rss_kib(d.pid)
        socks = [rmtest.connect(d.addr) for _ in range(300)]
        d.wait_log("gRPC running out of descriptors", "Failed accept4")
        for s in socks:
            s.close()
        rmtest.poll("/readyz 503", lambda: status(d.http, "/readyz") == 503, timeout=30)
        self.assertTrue(d.logged("gRPC is not accepting connections"))
        report("node: 300 raw gRPC connections under RLIMIT_NOFILE 256", before,
               rmtest.rss_kib(d.pid))

    def test_stalled_head_is_closed(self):
        d = self.node("--http-header-timeout-ms", "300", "--http-idle-timeout-ms", "3600000")
        before = rmtest.rss_kib(d.pid)
        s = rmtest.connect(d.http, timeout=30)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        self.assertTrue(got.startswith(b"HTTP/1.1 408"), got)
        report("node: stalled request head", before, rmtest.rss_kib(d.pid))
        s.close()

    def test_idle_connection_is_closed(self):
        d = self.node("--http-header-timeout-ms", "3600000", "--http-idle-timeout-ms", "300")
        s = rmtest.connect(d.http, timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))
        self.assertEqual(s.recv(4096), b"")  # then closed, nothing more said
        s.close()

    def test_414_closes_the_connection(self):
        d = self.node()
        s = rmtest.connect(d.http, timeout=30)
        s.sendall(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 414"), head)
        self.assertIn(b"Connection: close", head)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            rest = s.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            rest = b""
        self.assertEqual(rest, b"", "a request after the 414 was answered")
        s.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--proto-dir", required=True)
    ARGS, rest = ap.parse_known_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc, health_pb, health_grpc = rmtest.grpc_modules(ARGS.proto_dir, out)
        prog = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False)
        res = prog.result
        failed = len(res.failures) + len(res.errors)
        print(f"{res.testsRun - failed} passed, {failed} failed")
        sys.exit(1 if failed or res.testsRun == 0 else 0)
