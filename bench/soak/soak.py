#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Soak and failure load against a running demo server (bench/soak/run.sh
# starts one): for a bounded time, client threads on 127.0.0.1 mix what
# real clients do to background deliveries -- full and ranged downloads
# checked byte for byte, aborts at random points (FIN and RST), slow
# readers, pipelined keep-alive requests, conditional requests, chunked CGI
# output, paced (dial-up) downloads, the status pages, downloads of a file
# that is truncated or replaced under them -- over HTTP and HTTPS, while
# the server is gracefully restarted now and then.  Then it
# lets the server go idle and checks what must hold afterwards: no client
# saw a wrong byte or an unexpected answer, no delivery is left in flight,
# the delivery counters add up, no socket waits in CLOSE-WAIT, the
# children that served the last part hold no more descriptors than when it
# started, and the error log has no crash and no sanitizer report.
#
#   soak.py --pid PID --demo DIR --port P --https-port Q [--seconds N]
#           [--threads N] [--restarts N] [--seed N] [--mpm NAME]
#           [--only BEHAVIOUR]...
#
# --only narrows the clients to some behaviours (the names in BEHAVIOURS):
# `--only churn_download --restarts 12` finds what a changing file does
# around graceful restarts far sooner than the mix.
#
# Exit status 0 when every check passed.  Prints one line per check.

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


class Failure(Exception):
    pass


class KeptAliveClosed(Exception):
    """A kept-alive connection closed before any byte of the next answer:
    what a server may do between requests (RFC 9112, 9.3.1), and what the
    event MPM does to idle connections at a graceful restart.  A client
    retries on a new connection."""


class Soak:
    def __init__(self, args):
        self.a = args
        self.big_path = os.path.join(args.demo, "big", "big.bin")
        self.big_size = os.path.getsize(self.big_path)
        with open(self.big_path, "rb") as f:
            self.big = f.read()
        self.big_sha = hashlib.sha256(self.big).hexdigest()
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.stop_at = 0.0
        self.etag = None
        self.round = 0
        self.churn_path = os.path.join(args.demo, "big", "churn.bin")
        self.churn_version = 0
        self.churned = {"replaced": 0, "truncated": 0}
        self.churn_outcome = {"complete": 0, "stopped": 0}
        self.churn_stops = []   # (client port, what the client saw)
        self.kept_alive_closed = {1: 0, 2: 0}

    # ------------------------------------------------------------ sockets

    def connect(self, https, rcvbuf=0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(30)
        s.connect((HOST, self.a.https_port if https else self.a.port))
        if https:
            s = self.tls.wrap_socket(s, server_hostname=HOST)
        return s

    @staticmethod
    def reset(s):
        """Close with a RST instead of a FIN."""
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        s.close()

    @staticmethod
    def request(path, method="GET", headers=(), close=False):
        h = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % HOST,
             "User-Agent: bgd-soak"]
        h.extend(headers)
        if close:
            h.append("Connection: close")
        return ("\r\n".join(h) + "\r\n\r\n").encode()

    # ------------------------------------------------------------ responses

    class Reader:
        def __init__(self, s):
            self.s = s
            self.buf = b""

        def fill(self):
            d = self.s.recv(65536)
            if not d:
                raise Failure("connection closed early")
            self.buf += d

        def line(self):
            while b"\r\n" not in self.buf:
                self.fill()
            l, self.buf = self.buf.split(b"\r\n", 1)
            return l.decode("latin-1")

        def take(self, n, sink=None):
            """n bytes of body; into sink (a hash) when given, else returned."""
            out = []
            while n > 0:
                if not self.buf:
                    self.fill()
                d, self.buf = self.buf[:n], self.buf[n:]
                n -= len(d)
                if sink is not None:
                    sink.update(d)
                else:
                    out.append(d)
            return b"".join(out)

        def head(self):
            status = self.line()
            m = re.match(r"HTTP/1\.[01] (\d{3})", status)
            if not m:
                raise Failure("bad status line %r" % status)
            hdrs = {}
            while True:
                l = self.line()
                if not l:
                    break
                k, _, v = l.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            return int(m.group(1)), hdrs

        def body(self, hdrs, method="GET", status=200, sink=None):
            if method == "HEAD" or status in (204, 304):
                return b""
            if "content-length" in hdrs:
                return self.take(int(hdrs["content-length"]), sink)
            if hdrs.get("transfer-encoding", "").lower() == "chunked":
                out = []
                while True:
                    size = int(self.line().split(";")[0], 16)
                    if size == 0:
                        while self.line():
                            pass
                        return b"".join(out)
                    d = self.take(size, sink)
                    if sink is None:
                        out.append(d)
                    self.take(2)
            raise Failure("response without a length")

    def get(self, s, path, method="GET", headers=(), sink=None, reused=False):
        r = self.Reader(s)
        try:
            s.sendall(self.request(path, method, headers))
            r.fill()
        except (Failure, ConnectionResetError, BrokenPipeError, ssl.SSLError):
            if reused:
                raise KeptAliveClosed()
            raise
        status, hdrs = r.head()
        return status, hdrs, r.body(hdrs, method, status, sink), r

    def get_kept_alive(self, s, https, path, headers=(), sink=None):
        """get() on a connection that has answered before: on a close
        between requests, once more on a new one (returned as well)."""
        try:
            return s, self.get(s, path, headers=headers, sink=sink, reused=True)
        except KeptAliveClosed:
            with self.lock:
                self.kept_alive_closed[self.round] += 1
            s.close()
            s = self.connect(https)
            return s, self.get(s, path, headers=headers, sink=sink)

    # ------------------------------------------------------------ behaviours

    def big_full(self, rng, https):
        s = self.connect(https)
        try:
            h = hashlib.sha256()
            status, hdrs, _, _ = self.get(s, "/big/big.bin", sink=h)
            if status != 200 or h.hexdigest() != self.big_sha:
                raise Failure("full download: status %d, wrong bytes" % status)
            self.etag = hdrs.get("etag", self.etag)
        finally:
            s.close()

    def big_ranges(self, rng, https):
        """Several ranges on one kept-alive connection, each checked."""
        s = self.connect(https)
        try:
            for i in range(rng.randint(1, 4)):
                first = rng.randrange(self.big_size)
                last = min(self.big_size - 1, first + rng.randint(0, 3 << 20))
                rh = ["Range: bytes=%d-%d" % (first, last)]
                if i:
                    s, (status, _, body, _) = self.get_kept_alive(
                        s, https, "/big/big.bin", rh)
                else:
                    status, _, body, _ = self.get(s, "/big/big.bin", headers=rh)
                if status != 206 or body != self.big[first:last + 1]:
                    raise Failure("range %d-%d: status %d, %s" % (
                        first, last, status,
                        "wrong bytes" if status == 206 else "not partial"))
        finally:
            s.close()

    def big_abort(self, rng, https):
        s = self.connect(https)
        s.sendall(self.request("/big/big.bin"))
        want, got = rng.randint(0, 8 << 20), 0
        while got < want:
            d = s.recv(min(65536, want - got))
            if not d:
                break
            got += len(d)
        if rng.random() < 0.5:
            self.reset(s)
        else:
            s.close()

    def slow_reader(self, rng, https):
        s = self.connect(https, rcvbuf=4096)
        s.sendall(self.request("/big/big.bin"))
        until = time.time() + rng.uniform(0.5, 3.0)
        while time.time() < until and time.time() < self.stop_at:
            if not s.recv(4096):
                raise Failure("slow reader: connection closed early")
            time.sleep(rng.uniform(0.01, 0.05))
        s.close()

    def closed_between(self, r):
        """Whether the connection closed before the next answer: prefork
        and worker do so between two requests at a graceful restart,
        pipelined ones included (a client sends those again)."""
        try:
            if not r.buf:
                r.fill()
            return False
        except (Failure, ConnectionResetError, ssl.SSLError):
            with self.lock:
                self.kept_alive_closed[self.round] += 1
            return True

    def pipeline(self, rng, https):
        """Three requests in one write, answered in order on one connection."""
        s = self.connect(https)
        try:
            first = rng.randrange(self.big_size - 100000)
            s.sendall(self.request("/big/big.bin", headers=[
                          "Range: bytes=%d-%d" % (first, first + 99999)])
                      + self.request("/big/big.bin", "HEAD")
                      + self.request("/index.html", close=True))
            r = self.Reader(s)
            status, hdrs = r.head()
            if status != 206 or r.body(hdrs) != self.big[first:first + 100000]:
                raise Failure("pipeline: first answer wrong (%d)" % status)
            if self.closed_between(r):
                return
            status, hdrs = r.head()
            if status != 200 or int(hdrs.get("content-length", -1)) != self.big_size:
                raise Failure("pipeline: HEAD answer wrong (%d)" % status)
            r.body(hdrs, "HEAD")
            if self.closed_between(r):
                return
            status, hdrs = r.head()
            if status != 200 or b"<" not in r.body(hdrs):
                raise Failure("pipeline: third answer wrong (%d)" % status)
        finally:
            s.close()

    def conditional(self, rng, https):
        if not self.etag:
            return
        s = self.connect(https)
        try:
            status, _, body, _ = self.get(
                s, "/big/big.bin", headers=["If-None-Match: %s" % self.etag])
            if status != 304 or body:
                raise Failure("conditional: status %d" % status)
        finally:
            s.close()

    @staticmethod
    def cgi_expected(mb):
        pad = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01"
        h = hashlib.sha256()
        for i in range(1, mb * 1024 * 1024 // 64 + 1):
            h.update(b"%08d %s\n" % (i, pad))
        return h.hexdigest()

    def cgi(self, rng, https):
        mb = rng.randint(1, 3)
        s = self.connect(https)
        try:
            if rng.random() < 0.3:
                s.sendall(self.request("/cgi-bin/stream.cgi?mb=%d" % mb))
                s.recv(rng.randint(1, 200000))
                self.reset(s)
                return
            h = hashlib.sha256()
            status, _, _, _ = self.get(s, "/cgi-bin/stream.cgi?mb=%d" % mb, sink=h)
            if status != 200 or h.hexdigest() != self.cgi_sha[mb]:
                raise Failure("CGI %d MB: status %d, wrong bytes" % (mb, status))
        finally:
            s.close()

    def dialup(self, rng, https):
        s = self.connect(https)
        s.sendall(self.request("/dialup/modem.png"))
        got, want = 0, rng.randint(1, 6000)
        while got < want:
            d = s.recv(4096)
            if not d:
                raise Failure("dial-up: connection closed early")
            got += len(d)
        s.close()

    def status(self, rng, https):
        s = self.connect(https)
        try:
            st, _, body, _ = self.get(s, "/bgdeliver-status?json")
            if st != 200:
                raise Failure("/bgdeliver-status?json: status %d" % st)
            json.loads(body)
            s, (st, _, body, _) = self.get_kept_alive(
                s, https, "/conntimes-status?json")
            if st != 200:
                raise Failure("/conntimes-status?json: status %d" % st)
            json.loads(body)
            s, (st, _, body, _) = self.get_kept_alive(
                s, https, "/server-status?auto")
            if st != 200 or b"BusyWorkers" not in body:
                raise Failure("/server-status?auto: status %d" % st)
        finally:
            s.close()

    # A file that changes under its deliveries.  Version k is made of
    # 16-byte units "kkkkk:jjjjjjjjj\n", j the unit's index in the file, so
    # any byte that a client gets tells which version and which offset it
    # comes from.  A version is replaced by a rename (the deliveries under
    # way keep the old file and must finish it) or truncated in place (they
    # must stop: the connection is closed before the announced length).
    UNIT = 16

    def churn_write(self):
        self.churn_version += 1
        units = random.Random(self.churn_version).randint(1 << 16, 3 << 16)
        tmp = self.churn_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(b"%05d:%09d\n" % (self.churn_version % 100000, j)
                             for j in range(units)))
        os.rename(tmp, self.churn_path)

    def churn(self):
        rng = random.Random(self.a.seed)
        while time.time() < self.stop_at:
            time.sleep(rng.uniform(0.05, 0.2))
            if rng.random() < 0.5:
                self.churn_write()
                self.churned["replaced"] += 1
            else:
                size = os.path.getsize(self.churn_path)
                os.truncate(self.churn_path, rng.randrange(size))
                self.churned["truncated"] += 1

    def churn_check(self, data, offset):
        """The bytes got from `offset` on must all come from one version,
        each at its own offset."""
        u = self.UNIT
        skip = -offset % u
        data, first = data[skip:], (offset + skip) // u
        version = None
        for i in range(0, len(data), u):
            unit = data[i:i + u]
            if version is None:
                version = unit[:5]
            want = b"%s:%09d\n" % (version, first + i // u)
            if unit != want[:len(unit)]:
                raise Failure("changing file: got %r at offset %d, expected %r"
                              % (unit, offset + skip + i, want[:len(unit)]))

    def churn_download(self, rng, https):
        # A small receive buffer, and the server's send buffer is bounded
        # (run.sh): the delivery lasts as long as the client reads.
        s = self.connect(https, rcvbuf=16384)
        port = s.getsockname()[1]
        try:
            offset, headers = 0, []
            if rng.random() < 0.3:
                offset = rng.randrange(1 << 20)
                headers = ["Range: bytes=%d-" % offset]
            s.sendall(self.request("/big/churn.bin", headers=headers))
            r = self.Reader(s)
            try:
                status, hdrs = r.head()
            except (Failure, ConnectionResetError, ssl.SSLError) as e:
                # Changed before the first byte of the answer went out:
                # the server closes without one (and logs BGD007).
                with self.lock:
                    self.churn_outcome["stopped"] += 1
                    self.churn_stops.append((port, "no answer (%s)" % e))
                return
            if status == 416:
                return
            if status not in (200, 206):
                raise Failure("changing file: status %d" % status)
            length, got = int(hdrs["content-length"]), []
            n, end = 0, "end of stream"
            while n < length:
                if not r.buf:
                    try:
                        d = s.recv(65536)
                    except (ConnectionResetError, ssl.SSLError) as e:
                        d, end = b"", str(e)
                    if not d:
                        break           # stopped: the file changed
                    r.buf = d
                d, r.buf = r.buf[:length - n], r.buf[length - n:]
                got.append(d)
                n += len(d)
                if rng.random() < 0.3:
                    time.sleep(0.002)
            self.churn_check(b"".join(got), offset)
            with self.lock:
                self.churn_outcome["complete" if n == length else "stopped"] += 1
                if n < length:
                    self.churn_stops.append(
                        (port, "%d %d of %d bytes, then %s"
                         % (status, n, length, end)))
        finally:
            s.close()

    BEHAVIOURS = [("big_full", 1), ("big_ranges", 6), ("big_abort", 6),
                  ("slow_reader", 4), ("pipeline", 4), ("conditional", 2),
                  ("cgi", 3), ("dialup", 2), ("status", 1),
                  ("churn_download", 4)]

    # ------------------------------------------------------------ driver

    def client(self, n):
        rng = random.Random((self.a.seed * 100 + self.round) * 1000 + n)
        names = [b for b, w in self.BEHAVIOURS for _ in range(w)
                 if not self.a.only or b in self.a.only]
        while time.time() < self.stop_at:
            name = rng.choice(names)
            https = rng.random() < 0.4
            key = "%s/%s" % (name, "https" if https else "http")
            try:
                getattr(self, name)(rng, https)
                ok = True
            except (Failure, OSError, ValueError) as e:
                ok = False
                with self.lock:
                    self.failures.append("%s: %s" % (key, e))
            with self.lock:
                c = self.counts.setdefault(key, [0, 0])
                c[0 if ok else 1] += 1

    def fetch(self, path):
        s = self.connect(False)
        try:
            return self.get(s, path)[2]
        finally:
            s.close()

    def bgd_totals(self):
        return json.loads(self.fetch("/bgdeliver-status?json"))["totals"]

    def children(self):
        out = subprocess.run(["pgrep", "-P", str(self.a.pid)],
                             capture_output=True, text=True).stdout.split()
        return {int(p) for p in out}

    @staticmethod
    def fds(pid):
        try:
            return len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            return None

    def close_wait(self):
        out = subprocess.run(["ss", "-Htan", "state", "close-wait"],
                             capture_output=True, text=True).stdout
        ports = {":%d" % self.a.port, ":%d" % self.a.https_port}
        return [l for l in out.splitlines()
                if any(l.split()[2].endswith(p) for p in ports)]

    def load(self, seconds, restarts):
        """Clients for `seconds`, with `restarts` graceful restarts spread
        over the time; returns once every client has finished."""
        self.round += 1
        start = time.time()
        self.stop_at = start + seconds
        restart_at = [start + seconds * (i + 1) / (restarts + 1)
                      for i in range(restarts)]
        threads = [threading.Thread(target=self.client, args=(n,), daemon=True)
                   for n in range(self.a.threads)]
        threads.append(threading.Thread(target=self.churn, daemon=True))
        for t in threads:
            t.start()
        while time.time() < self.stop_at:
            if restart_at and time.time() >= restart_at[0]:
                restart_at.pop(0)
                os.kill(self.a.pid, signal.SIGUSR1)
            time.sleep(0.2)
        for t in threads:
            t.join(90)

    def quiesce(self):
        """Waits (bounded) until no delivery is in flight and the children's
        descriptor counts stay the same for two seconds; returns them and
        the last status totals."""
        deadline = time.time() + 60
        while True:
            t = self.bgd_totals()
            if t["in_flight"] == 0 or time.time() > deadline:
                break
            time.sleep(0.5)
        last = None
        while time.time() < deadline:
            now = {p: self.fds(p) for p in self.children()}
            if now == last:
                break
            last = now
            time.sleep(2)
        return now, t

    def run(self):
        a = self.a
        self.cgi_sha = {mb: self.cgi_expected(mb) for mb in (1, 2, 3)}
        log = os.path.join(a.demo, "logs", "error_log")
        log_start = os.path.getsize(log)
        access = os.path.join(a.demo, "logs", "access_log")
        access_start = os.path.getsize(access)
        totals0 = self.bgd_totals()
        self.churn_write()
        ok = True

        def check(what, good, detail=""):
            nonlocal ok
            ok = ok and good
            print("%-4s %s%s" % ("ok" if good else "FAIL", what,
                                 (": " + detail) if detail else ""))

        # First 60 %: load and graceful restarts.  Then, idle, the
        # descriptors of the children of the last generation; the last
        # 40 % of the load goes to those children alone, and once idle
        # again they must hold no more.
        self.load(a.seconds * 0.6, a.restarts)
        baseline, _ = self.quiesce()
        self.load(a.seconds * 0.4, 0)
        now, t = self.quiesce()

        total = sum(c[0] + c[1] for c in self.counts.values())
        check("client operations without a wrong byte or answer",
              not self.failures,
              "%d operations, %d failed%s" % (
                  total, len(self.failures),
                  "; first: " + "; ".join(self.failures[:5]) if self.failures else ""))
        for key in sorted(self.counts):
            print("     %-22s %6d ok %4d failed" % (key, *self.counts[key]))
        print("     changing file: %d replaced, %d truncated; downloads of it "
              "%d complete, %d stopped short, all bytes from one version"
              % (self.churned["replaced"], self.churned["truncated"],
                 self.churn_outcome["complete"], self.churn_outcome["stopped"]))

        check("no background delivery left in flight", t["in_flight"] == 0,
              "%d" % t["in_flight"])
        d = {k: t[k] - totals0[k] for k in
             ("started", "completed", "aborted", "dropped", "fallbacks",
              "rejected")}
        check("deliveries add up (started = completed + aborted + dropped)",
              d["started"] == d["completed"] + d["aborted"] + d["dropped"],
              ", ".join("%s %d" % kv for kv in d.items()))

        check("kept-alive connections closed between requests only in the "
              "part with graceful restarts",
              self.kept_alive_closed[2] == 0,
              "%d with restarts, %d without" % (self.kept_alive_closed[1],
                                                self.kept_alive_closed[2]))

        cw = self.close_wait()
        check("no server socket in CLOSE-WAIT", not cw, "%d" % len(cw))

        same = sorted(set(baseline) & set(now))
        grown = [p for p in same if (now[p] or 0) > (baseline[p] or 0)]
        check("children hold no more descriptors once idle again",
              bool(same) and not grown,
              ", ".join("pid %d: %s -> %s" % (p, baseline[p], now[p])
                        for p in same) or "no child served both parts")

        with open(log, "rb") as f:
            f.seek(log_start)
            text = f.read().decode("latin-1")
        bad = [l for l in text.splitlines()
               if re.search(r"exit signal|AddressSanitizer|LeakSanitizer|"
                            r"runtime error|:emerg\]|:alert\]|:crit\]|"
                            r"double free|corrupted", l)]
        check("error log: no crash, no sanitizer report", not bad,
              "; ".join(bad[:3]))
        tags = {}
        for m in re.finditer(r"\b(BGD\d{3}|DLP\d{3}|CT\d{4})\b", text):
            tags[m.group(1)] = tags.get(m.group(1), 0) + 1
        print("     log tags seen: %s" % (", ".join(
            "%s %d" % kv for kv in sorted(tags.items())) or "none"))
        # Only the changing file makes the server stop a response, and
        # the clients never leave one of its downloads early: each stop is
        # logged as changed and as an aborted connection (%X of the demo's
        # LogFormat): BGD007 in the background, BGD026/BGD027 in the foreground
        # (worker, prefork: mod_bgdeliver checks the fallback's file reads,
        # as the demo does not use sendfile).
        with open(access, "rb") as f:
            f.seek(access_start)
            lines = f.read().decode("latin-1").splitlines()
        aborted = sum(1 for l in lines
                      if "/big/churn.bin " in l and l.endswith(" X"))
        stopped = self.churn_outcome["stopped"]
        changed = sum(tags.get(t, 0) for t in ("BGD007", "BGD026", "BGD027"))
        check("every download of the changing file that stopped short "
              "is logged as changed (BGD007, BGD026, BGD027) and aborted (X), "
              "no other", stopped == changed == aborted,
              "%d stopped, %d BGD007/026/027, %d X" % (stopped, changed,
                                                      aborted))
        # run.sh logs the client's port (%{remote}p): a stop without an
        # aborted line from its port is shown with that port's lines (a
        # port is used again in a long run), or their lack.
        by_port = {}
        for l in lines:
            m = re.match(r"\S+:(\d+) ", l)
            if m and "/big/churn.bin " in l:
                by_port.setdefault(int(m.group(1)), []).append(l)
        if by_port:
            odd = ["client port %d got %s; logged: %s"
                   % (port, saw, " | ".join(by_port.get(port, ["nothing"])))
                   for port, saw in self.churn_stops
                   if not any(l.endswith(" X")
                              for l in by_port.get(port, []))]
            for o in odd[:5]:
                print("     stopped, not logged aborted: " + o)
        return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--demo", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--https-port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mpm", default="event")
    p.add_argument("--only", action="append",
                   choices=[b for b, _ in Soak.BEHAVIOURS])
    sys.exit(0 if Soak(p.parse_args()).run() else 1)


if __name__ == "__main__":
    main()
