#!/usr/bin/python3
"""A router's unconfirmed charges on a live cluster (router/charges.h).

Each Route charges the chosen node the request's cost until the node's
request count shows it; a client that Routes and never calls the node
leaves its charge behind. Such charges used to stay forever: the node
looked loaded to that router with no traffic at all. Now they expire after
--charge-ttl-ms:

  - Routes that no Match follows load the nodes in the router's view
    (/api/cluster "load"), then leave it: the load returns to exactly 0 and
    /api/cluster and /metrics count every abandoned Route as expired;
  - so do they with --load-unit requests, where they count in what each
    node has served;
  - a forwarded Match the node refused confirms nothing: Routes followed
    by their Match are confirmed, none expires.

(How the nodes' counts confirm charges, and expiry's timing, are
tests/unit/test_charges.c's; gateway requests' charges, test_gateway.py's.)

Usage: test_route_charges.py --node PATH --router PATH --proto-dir DIR

Every daemon binds 127.0.0.1 on a free port and is stopped at the end;
waits poll with a deadline.
"""
import json
import sys
import time
import tempfile
import unittest

import grpc

import rmtest
from rmtest import Daemon, grpc_modules, http_request, poll, required_args, run_tests

ARGS = None
pb = pb_grpc = None
ROUTES = 20
# The shortest ttl the router takes with these intervals: 4 x (1000 + 100).
TTL_MS = 4400


class Cluster(unittest.TestCase):
    """Two fresh nodes and a router polling their Stats every STATS_MS;
    no test of its own."""
    TTL_MS = TTL_MS
    STATS_MS = 100
    NODE_FLAGS = ()
    ROUTER_FLAGS = ()

    def setUp(self):
        self.daemons, members = [], []
        for i in range(2):
            d = Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--node-id", f"c{i}",
                        "--log-level", "warn", "--shutdown-delay-ms", "0", *self.NODE_FLAGS])
            self.daemons.append(d)
            members.append(f"c{i}={d.addr}")
        self.router = Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                              "--nodes", ",".join(members), "--stats-interval",
                              str(self.STATS_MS),
                              "--call-timeout-ms", "1000", "--charge-ttl-ms", str(self.TTL_MS),
                              "--decode-weight", "1",
                              "--eject-after-failures", "1000", "--log-level", "warn",
                              "--shutdown-delay-ms", "0", *self.ROUTER_FLAGS], until="HTTP")
        self.daemons.append(self.router)
        poll("both nodes healthy", lambda: self.api()["healthy_nodes"] == 2, timeout=30)
        self.channel = grpc.insecure_channel(self.router.addr)
        self.route = pb_grpc.RouterStub(self.channel).Route

    def tearDown(self):
        self.channel.close()
        for d in reversed(self.daemons):
            self.assertEqual(d.stop(), 0)

    def api(self):
        status, _, body = http_request(self.router.http, "GET", "/api/cluster")
        self.assertEqual(status, 200)
        return json.loads(body)

    def nodes(self):
        return {n["id"]: n for n in self.api()["nodes"]}

    def routes(self, seed):
        """ROUTES Routes of distinct 2,000-token prompts; the replies."""
        return [self.route(pb.RouteRequest(namespace="abandon", output_tokens=100,
                                           tokens=[(seed * 1000003 + i * 7919 + j) % 128000
                                                   for j in range(2000)]))
                for i in range(ROUTES)]


class ChargesTest(Cluster):
    def test_abandoned_routes_expire(self):
        began = time.monotonic()
        self.routes(1)
        # No node counted anything: a node's load is its unexpired charges
        # alone, each Route's 2,000 prompt + 100 reply tokens (decode weight
        # 1), and what is not there any more expired (one snapshot).
        def with_every_route():
            nodes = self.nodes()
            return nodes if sum(n["routed_requests"] for n in nodes.values()) == ROUTES else None
        nodes = poll("a view of the cluster with every Route in it", with_every_route)
        seen = time.monotonic() - began
        held = sum(n["load"] for n in nodes.values()) / 2100
        gone = sum(n["expired_charges_total"] for n in nodes.values())
        self.assertAlmostEqual(held + gone, ROUTES, delta=1e-6)
        # A charge lives half a ttl at least: a snapshot from within that
        # (the usual case; a slow run may read later) holds every one.
        if seen < self.TTL_MS / 2000:
            self.assertEqual(gone, 0)
        else:
            sys.stderr.write(f"snapshot {seen:.1f} s after the first Route: not checked whole\n")

        def all_expired():
            nodes = self.nodes().values()
            return (all(n["load"] == 0 for n in nodes) and
                    sum(n["expired_charges_total"] for n in nodes) == ROUTES)
        poll("the abandoned Routes' charges to expire", all_expired, timeout=60)
        shown = sum(rmtest.metric(self.router.http, "radixmesh_node_expired_charges_total",
                                  label=f'node="{i}"') for i in nodes)
        self.assertEqual(shown, ROUTES)


class RequestUnitTest(Cluster):
    """--load-unit requests places new conversations by what each node
    has served, counting this router's requests the node has not counted
    yet: abandoned Routes expire there too (they used to skew placement
    for good)."""
    ROUTER_FLAGS = ("--load-unit", "requests")

    def test_abandoned_routes_expire(self):
        self.routes(3)
        poll("the abandoned Routes' charges to expire", lambda: (
            lambda nodes: sum(n["expired_charges_total"] for n in nodes) == ROUTES and all(
                n["unconfirmed_requests"] == 0 for n in nodes))(self.nodes().values()),
             timeout=60)


class RefusedMatchTest(Cluster):
    """A forwarded Match the node refuses (a lease past its --max-leases)
    was not counted by it: its charge must not stand in for a Route's
    the node did count. Routes followed by their Match are confirmed, and
    none expires. A refusal settled as counted takes a Route's place in
    the report that counts both, and that Route's charge expires: Stats
    every 5 s put most of the ten in one report. The ttl (the least these
    intervals allow, 24 s) is long enough that only a missing
    confirmation, not a slow machine, lets one expire."""
    TTL_MS = 24000
    STATS_MS = 5000
    NODE_FLAGS = ("--max-leases", "1")

    def test_refused_matches_confirm_nothing(self):
        # A router's first report of a node has no earlier count to tell
        # what it confirms: the requests go after it.
        poll("a first report of each node", lambda: all(
            n["pool_pages"] > 0 for n in self.nodes().values()), timeout=60)
        match = pb_grpc.RouterStub(self.channel).Match
        stubs = {d.addr: grpc.insecure_channel(d.addr) for d in self.daemons[:2]}
        for ch in stubs.values():  # each node's one lease, held: the router's are refused
            pb_grpc.CacheNodeStub(ch).Match(pb.MatchRequest(namespace="r", tokens=[1], lease=True))
        for i in range(10):
            toks = [(777 * i + j) % 128000 for j in range(500)]
            rep = self.route(pb.RouteRequest(namespace="r", tokens=toks))
            pb_grpc.CacheNodeStub(stubs[rep.address]).Match(
                pb.MatchRequest(namespace="r", tokens=toks))
            with self.assertRaises(grpc.RpcError) as e:
                match(pb.MatchRequest(namespace="r", tokens=toks, lease=True))
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        for ch in stubs.values():
            ch.close()
        # Each charge goes when a report confirms it, or, unconfirmed, when
        # it expires: all gone, then, with none expired (in a view with the
        # 10 Routes and 10 Matches in it: the view is republished).
        poll("every charge confirmed or expired", lambda: (lambda nodes: sum(
            n["routed_requests"] for n in nodes) == 20 and all(
            n["unconfirmed_requests"] < 1e-6 for n in nodes))(self.nodes().values()), timeout=90)
        self.assertEqual(sum(n["expired_charges_total"] for n in self.nodes().values()), 0)

if __name__ == "__main__":
    ARGS, rest = required_args("--node", "--router", "--proto-dir")
    pb, pb_grpc, _, _ = grpc_modules(ARGS.proto_dir, tempfile.mkdtemp())
    sys.exit(run_tests(rest))
