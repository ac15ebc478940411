"""Shared harness of the Python integration tests: daemons on free loopback
ports, waits that poll with a deadline, and process figures (RSS, open
files) for the bounded-memory checks.

Every daemon binds 127.0.0.1 with port 0 and announces its ports on stdout
("LISTENING host:port", "HTTP host:port", "GATEWAY host:port"); Daemon
reads them. Nothing here sleeps for a fixed time: poll() waits in short
steps until a condition holds, and fails with the condition's name when its
deadline passes (deadlines are generous: the suite also runs under valgrind
and on machines busy with other work).
"""
import http.client
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

# Under valgrind or TSan every step is tens of times slower.
SLOW = os.environ.get("RM_TEST_SLOW") == "1"


def deadline_s(seconds):
    return seconds * (10 if SLOW else 1)


def poll(what, fn, timeout=15.0):
    """fn()'s first truthy value, polled every 50 ms; AssertionError naming
    `what` once timeout seconds (x10 when RM_TEST_SLOW=1) have passed."""
    deadline = time.monotonic() + deadline_s(timeout)
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.05)  # a poll step, bounded by the deadline


def dump_stacks(pid):
    """A daemon that ignores SIGTERM is a bug seen once in many runs: its
    threads' stacks (gdb, where installed) go to stderr before the SIGKILL
    destroys the evidence."""
    if not os.access("/usr/bin/gdb", os.X_OK):
        return
    sys.stderr.write(f"process {pid} did not stop; its threads:\n")
    subprocess.run(["/usr/bin/gdb", "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"],
                   stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, check=False)


_daemons = []  # every Daemon started, for run_tests' failure report


class Daemon:
    """A radixmesh daemon (or fake_worker.py) started with args; waits, at
    most timeout seconds (x10 when RM_TEST_SLOW=1), for its `until` line
    (LISTENING, HTTP or GATEWAY) and keeps every "WORD value" line it
    announces in .addrs. stderr (the log) is collected in .log, and printed
    when stop() sees a bad exit code (a sanitizer's or valgrind's report is
    there)."""

    def __init__(self, args, until="LISTENING", env=None, preexec_fn=None, timeout=30.0):
        self.args = list(args)
        self.log = []
        _daemons.append(self)
        self.addrs = {}
        self._termed = False
        self._announced = threading.Event()
        self._out_done = threading.Event()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, preexec_fn=preexec_fn)
        self._readers = [threading.Thread(target=self._read_out, args=(until,), daemon=True),
                         threading.Thread(target=self._read_log, daemon=True)]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + deadline_s(timeout)
        while not self._announced.wait(0.05):
            if self._out_done.is_set() or time.monotonic() > deadline:
                if self._announced.is_set():
                    break
                why = (f"exited ({self.proc.poll()}) before printing {until}"
                       if self._out_done.is_set() else
                       f"did not print {until} within {deadline_s(timeout):.0f} s")
                self.kill()
                raise RuntimeError(f"{self.args[0]} {why}: {''.join(self.log).strip()[-2000:]}")

    def _read_out(self, until):
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            self.addrs.setdefault(word, rest)
            if word == until:
                self._announced.set()
        self._out_done.set()

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return self.addrs.get("LISTENING")

    @property
    def http(self):
        return self.addrs.get("HTTP")

    @property
    def gateway(self):
        return self.addrs.get("GATEWAY")

    def alive(self):
        return self.proc.poll() is None

    def logged(self, text):
        return any(text in line for line in self.log)

    def wait_log(self, what, text, timeout=15.0, since=0):
        poll(what, lambda: any(text in line for line in self.log[since:]), timeout)

    def signal_until(self, sig, what, text, timeout=15.0):
        """Sends sig (e.g. SIGHUP: reload) and waits for a new log line
        containing text."""
        seen = len(self.log)
        self.proc.send_signal(sig)
        self.wait_log(what, text, timeout, since=seen)

    def terminate(self):
        """SIGTERM, once (a second one may cut the drain short)."""
        if not self._termed and self.proc.poll() is None:
            self._termed = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=60):
        """SIGTERM (the daemon drains and exits 0); the exit code. Past
        timeout seconds (x10 when RM_TEST_SLOW=1) it is SIGKILLed."""
        self.terminate()
        try:
            self.proc.wait(timeout=deadline_s(timeout))
        except subprocess.TimeoutExpired:
            dump_stacks(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        self._close()
        # A process without a SIGTERM handler (fake_worker.py) dies of it:
        # nothing to report. Anything else but 0 comes with its log.
        if self.proc.returncode not in (0, -signal.SIGTERM):
            sys.stderr.write(f"{self.args[0]} exited {self.proc.returncode}; its log:\n"
                             f"{''.join(self.log)[-20000:]}\n")
        return self.proc.returncode

    def kill(self):
        """SIGKILL (a crash, as far as its peers can tell); the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()
        return self.proc.returncode

    def _close(self):
        for t in self._readers:
            t.join(timeout=10)  # both pipes end with the process
        self.proc.stdout.close()
        self.proc.stderr.close()


def stop_all(daemons, timeout=60):
    """Stops daemons together (SIGTERM to all, then waits for each: their
    drains overlap); their exit codes, in order."""
    for d in daemons:
        d.terminate()
    return [d.stop(timeout) for d in daemons]


def rss_kib(pid):
    """Resident set size of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def http_request(addr, method, path, body=None, headers=None, timeout=10):
    """(status, lower-cased headers, body bytes) of one request on a new
    connection."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metric(addr, name, headers=None, label=""):
    """Sum of every sample of `name` on addr's /metrics (with label, e.g.
    'code="2xx"', those that carry it)."""
    status, _, body = http_request(addr, "GET", "/metrics", headers=headers)
    if status != 200:
        raise AssertionError(f"/metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            total += float(line.split()[-1])
    return total


def dashboard_dom(http_addr):
    """The router's dashboard at http_addr as headless Chromium renders it
    (its script has fetched /api/cluster), or None without chromium."""
    browser = shutil.which("chromium")
    if not browser:
        return None
    import tempfile
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=4000",
             "--dump-dom", f"http://{http_addr}/"],
            capture_output=True, text=True, timeout=120).stdout


def connect(addr, timeout=10):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def raw_exchange(addr, payload, until=b"", timeout=10):
    """Sends payload on a new connection and returns what comes back until
    `until` is in it (b"": until the server closes)."""
    s = connect(addr, timeout=timeout)
    s.sendall(payload)
    got = b""
    while until not in got or not until:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


def head_then_get(addr, head_path, get_path, headers=b""):
    """HEAD head_path, then GET get_path pipelined on the same kept-alive
    connection (Connection: close on the second; headers, b"Name: value\r\n"
    lines, on both). Returns the HEAD reply's head and what follows it: the
    GET's reply, if the HEAD reply had no body (RFC 9110 9.3.2), else that
    body first."""
    raw = raw_exchange(addr, b"HEAD %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                       b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                       % (head_path.encode(), headers, get_path.encode(), headers))
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


def grpc_modules(proto_dir, out_dir):
    """Generates the Python stubs of proto/ into out_dir and returns
    (pb, pb_grpc, health_pb, health_grpc)."""
    from grpc_tools import protoc
    # The health proto is compiled from a flat copy: a generated package
    # named grpc.health.v1 would shadow the installed grpc module. Wire
    # names come from the proto's package line, so they are unchanged.
    health_dir = os.path.join(out_dir, "health_src")
    os.makedirs(health_dir, exist_ok=True)
    with open(os.path.join(proto_dir, "grpc/health/v1/health.proto")) as src, \
            open(os.path.join(health_dir, "health.proto"), "w") as dst:
        dst.write(src.read())
    for inc, rel in ((proto_dir, "radixmesh.proto"), (health_dir, "health.proto")):
        rc = protoc.main(["protoc", f"-I{inc}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", os.path.join(inc, rel)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel}")
    sys.path.insert(0, out_dir)
    return tuple(importlib.import_module(m) for m in
                 ("radixmesh_pb2", "radixmesh_pb2_grpc", "health_pb2", "health_pb2_grpc"))


def required_args(*flags):
    """The calling script's flags, each required and given a value
    ("--node" -> ARGS.node), and the argv left for unittest."""
    import argparse
    ap = argparse.ArgumentParser()
    for f in flags:
        ap.add_argument(f, required=True)
    return ap.parse_known_args()


def run_tests(rest):
    """Runs the calling script's unittest cases (-v, with the argv left
    after its own flags), prints "N passed, M failed" and returns the exit
    code: 1 when one failed or none ran."""
    import unittest

    class Result(unittest.TextTestResult):
        """A failed test shows the log tails of the daemons it started and
        of those still running (the cause is often there, and a daemon
        that exits 0 never prints its log)."""

        def startTest(self, test):
            self._first = len(_daemons)
            super().startTest(test)

        def _daemon_logs(self):
            for i, d in enumerate(list(_daemons)):
                if i >= getattr(self, "_first", 0) or d.alive():
                    tail = "".join(d.log[-30:])
                    sys.stderr.write(f"--- {os.path.basename(d.args[0])} (pid {d.pid}), "
                                     f"its last log lines:\n{tail}")

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._daemon_logs()

        def addError(self, test, err):
            super().addError(test, err)
            self._daemon_logs()

    runner = unittest.TextTestRunner(resultclass=Result, verbosity=2)
    res = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False, testRunner=runner).result
    failed = len(res.failures) + len(res.errors)
    print(f"{res.testsRun - failed} passed, {failed} failed")
    return 1 if failed or res.testsRun == 0 else 0
