#!/usr/bin/python3
"""What the hit budget's estimators cost the daemons (issue 16): CPU time
per request of the nodes and of the router with --hit-budget on against
off, in one run, and the estimators' memory.

Two clusters run side by side, identical but for --hit-budget: N nodes and
a router each. The same workload is replayed through both at the same time
(one client each, in order; whatever else loads the machine loads both),
several rounds; each daemon's CPU time (utime + stime, /proc/PID/stat) is
read before and after the round. Per request: the nodes' summed CPU time / requests, and
the router's. Clock ticks are 10 ms, so a round should cost each side a
second or more (--requests). On a busy machine the rounds' ratios scatter
by tens of percent, far more than the estimators cost; the daemons also
time their own estimator calls (radixmesh_hit_budget_seconds_total), whose
share of the measured CPU gives the ratio to a fraction of a percent.

Usage: bench_hit_budget.py --bin BUILD_DIR [--trace builtin|chat|agentic|FILE]
         [--requests N] [--block-tokens 64] [--rounds 3] [--nodes 4]
         [--pool-tokens N | --share 0.1]

--pool-tokens gives each node a pool (default: the node's default, 1 Mi
tokens, whose sampling rate is the 1/32 cap); --share sizes the pools to
that share of the workload's distinct pages over all nodes (small pools
sample faster, see BENCHMARKS.md table S3).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../integration"))
from rmtest import Daemon, http_request, poll  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def cli(args, *rest):
    out = subprocess.run([os.path.join(args.bin, "radixmesh"), *rest], capture_output=True,
                         text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"radixmesh {' '.join(rest)}: {out.stderr[-2000:]}")
    return out.stdout


class Cluster:
    def __init__(self, args, budget, pool_tokens):
        self.budget = budget
        self.nodes, members = [], []
        for i in range(args.nodes):
            flags = [os.path.join(args.bin, "radixmesh-node"), "--listen", "127.0.0.1:0",
                     "--http", "127.0.0.1:0", "--node-id", f"n{i}", "--hit-budget", budget,
                     "--log-level", "warn", "--shutdown-delay-ms", "0"]
            if pool_tokens:
                flags += ["--pool-tokens", str(pool_tokens)]
            d = Daemon(flags, until="HTTP")
            self.nodes.append(d)
            members.append(f"n{i}={d.addr}")
        self.router = Daemon([os.path.join(args.bin, "radixmesh-router"), "--listen",
                              "127.0.0.1:0", "--http", "127.0.0.1:0", "--nodes", ",".join(members),
                              "--hit-budget", budget, "--log-level", "warn",
                              "--shutdown-delay-ms", "0"], until="HTTP")
        poll("the router's ring", lambda: self.api()["healthy_nodes"] == args.nodes, timeout=60)
        self.node_cpu = self.router_cpu = 0.0
        self.requests = self.errors = 0
        self.rounds = []

    def api(self):
        return json.loads(http_request(self.router.http, "GET", "/api/cluster")[2])

    def cpu(self):
        return sum(cpu_seconds(d.pid) for d in self.nodes), cpu_seconds(self.router.pid)

    def replay(self, args, path, ns):
        """Starts a replay (a process; finish it with done())."""
        self.before = self.cpu()
        return subprocess.Popen([os.path.join(args.bin, "radixmesh"), "replay", "--router",
                                 self.router.addr, "--trace", path, "--block-tokens",
                                 str(args.block_tokens), "--namespace", ns, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def done(self, proc):
        out, _ = proc.communicate(timeout=3600)
        rep = json.loads(out.strip().splitlines()[-1])
        # Errors (a request larger than a node's pool at small pools) cost
        # both clusters alike; they are reported, not fatal.
        self.errors += rep["errors"]
        nodes, router = self.cpu()
        self.rounds.append((nodes - self.before[0], router - self.before[1]))
        self.node_cpu += nodes - self.before[0]
        self.router_cpu += router - self.before[1]
        self.requests += rep["requests"]

    def metric_sum(self, daemons, name):
        total = 0.0
        for d in daemons:
            text = http_request(d.http, "GET", "/metrics")[2].decode()
            total += sum(float(m) for m in re.findall(r"^%s(?:\{[^}]*\})? (\S+)$" % name, text,
                                                        re.M))
        return total

    def estimator_seconds(self):
        """The nodes' and the router's time in the estimators (their own
        counters), once their published figures cover every request."""
        poll("the published figures of every request", lambda: self.metric_sum(
            self.nodes, "radixmesh_match_requests_total") == self.requests and self.metric_sum(
            [self.router], "radixmesh_router_routed_requests_total") == self.requests, timeout=30)
        return (self.metric_sum(self.nodes, "radixmesh_hit_budget_seconds_total"),
                self.metric_sum([self.router], "radixmesh_router_hit_budget_seconds_total"))

    def memory(self):
        c = self.api()
        nodes = []
        for d in self.nodes:
            text = http_request(d.http, "GET", "/metrics")[2].decode()
            m = re.search(r"^radixmesh_hit_budget_memory_bytes\{[^}]*\} (\S+)", text, re.M)
            nodes.append(float(m.group(1)) if m else 0)
            r = re.search(r"^radixmesh_hit_budget_sampling_rate\{[^}]*\} (\S+)", text, re.M)
            self.rate = float(r.group(1)) if r else 0
        return max(nodes), c["hit_budget"]["memory_bytes"], c["hit_budget"]["sampling_rate"]

    def stop(self):
        for d in [self.router, *self.nodes]:
            d.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--trace", default="builtin")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--block-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--pool-tokens", type=int, default=0)
    ap.add_argument("--share", type=float, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.trace
        if args.trace in ("builtin", "chat", "agentic"):
            path = os.path.join(tmp, "trace.jsonl")
            cli(args, "workload", args.trace, "--seed", str(args.seed), "--requests",
                str(args.requests), "--out", path)
        elif args.requests:
            with open(args.trace) as src, open(os.path.join(tmp, "trace.jsonl"), "w") as dst:
                for i, line in enumerate(src):
                    if i == args.requests:
                        break
                    dst.write(line)
            path = os.path.join(tmp, "trace.jsonl")
        pool = args.pool_tokens
        if args.share:
            out = cli(args, "analyze", path, "--block-tokens", str(args.block_tokens))
            distinct = int(re.search(r"prompt tokens, (\d+) unique", out).group(1))
            pool = int(args.share * distinct / args.nodes)
        on, off = Cluster(args, "on", pool), Cluster(args, "off", pool)
        try:
            for r in range(args.rounds):
                # Both at once: whatever else loads the machine loads both.
                procs = [(c, c.replay(args, path, f"round-{r}")) for c in (off, on)]
                for c, p in procs:
                    c.done(p)
            node_mem, router_mem, router_rate = on.memory()
            est = on.estimator_seconds()
        finally:
            on.stop()
            off.stop()
    us = lambda cpu, c: 1e6 * cpu / c.requests  # noqa: E731
    n_on, n_off = us(on.node_cpu, on), us(off.node_cpu, off)
    r_on, r_off = us(on.router_cpu, on), us(off.router_cpu, off)
    print(f"{args.trace} ({on.requests // args.rounds} requests x {args.rounds} rounds, "
          f"{args.nodes} nodes, pool {pool or 'default'} tokens/node, node R {on.rate:.4g}, "
          f"router R {router_rate:.4g}{f', {on.errors} errors' if on.errors else ''})")
    per = [(a[0] / b[0], a[1] / b[1]) for a, b in zip(on.rounds, off.rounds) if b[0] and b[1]]
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    for k, name, a, b, cpu in ((0, "nodes'", n_on, n_off, on.node_cpu),
                               (1, "router", r_on, r_off, on.router_cpu)):
        print(f"  {name} CPU per request: off {b:.1f} us, on {a:.1f} us, ratio {a / b:.3f} "
              f"(rounds: median {med([p[k] for p in per]):.3f}, "
              f"{min(p[k] for p in per):.3f}-{max(p[k] for p in per):.3f}); "
              f"in the estimators {1e6 * est[k] / on.requests:.2f} us/request, "
              f"{100 * est[k] / cpu:.2f}% of the CPU with them on, "
              f"ratio on/off from that {cpu / (cpu - est[k]):.3f}")
    print(f"  estimator memory: node {node_mem / 1024:.0f} KiB (max), router "
          f"{router_mem / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
