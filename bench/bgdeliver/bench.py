#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
"""mod_bgdeliver benchmark driver (called by run.sh; standard library only).

Starts its own servers one at a time on 127.0.0.1 (stock Apache, Apache with
mod_bgdeliver, nginx + fcgiwrap), runs slow readers and a probe against
each, samples the servers from /proc and their status pages, and writes
results.md, the data files and the plot.  Every process it starts is
recorded and stopped by pid at the end, also on an error or Ctrl-C.
"""

import argparse
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")

RATE = 20480            # bytes/s per slow reader
RCVBUF = 4096           # client SO_RCVBUF, set before connect()
FILE_SIZE = 5 * 1024 * 1024
PROBE_TIMEOUT_MS = 3000
CALM_CPU = 0.5          # cores: the server has digested the ramp
THREADS = 25            # ThreadsPerChild = MaxRequestWorkers (one child)
SLOT_HEADROOM = 64      # connections beyond the slow readers (probe, status)
SLOT_RESERVE = 5        # workers assumed busy when sizing the factor

# ramp: new readers per second while they connect (1000 CGI requests are
# 5 GB of CGI output to produce and spool: spread them more).
WORKLOADS = {
    "static": dict(title="5 MB static file over HTTP", path="/bench/file5m.bin",
                   tls=False, ramp=500),
    "tls": dict(title="5 MB static file over HTTPS", path="/bench/file5m.bin",
                tls=True, ramp=500),
    "cgi": dict(title="5 MB of CGI output over HTTP",
                path="/bench/cgi/out5m.cgi", tls=False, ramp=100),
}
SERVERS = ["stock", "ours", "nginx"]
# Optional extra variants for the slow-reader sweeps (--servers).
EXTRA_SERVERS = ["stock-sendfile", "ours-sendfile"]

FULL = dict(points=[0, 10, 50, 100, 250, 500, 1000], window=5.0,
            window_key=10.0,
            probe_rate=40, settle=1.0, ramp_extra=15.0, stall=2.0,
            calm_max=15.0,
            extra={"static": ["ours-sendfile"]},
            big_mb=1024, fast_rounds=8, fast_one_repeat=4,
            fast_many=4, fast_many_repeat=2)
QUICK = dict(points=[0, 1000], cgi_points=[0, 500], window=3.0,
             probe_rate=40, settle=0.5,
             ramp_extra=8.0, stall=1.5, calm_max=8.0, big_mb=256, fast_rounds=2,
             fast_one_repeat=4, fast_many=4, fast_many_repeat=2)


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


# ------------------------------------------------------------ processes

STARTED = []            # every Popen we started, for the final clean-up


def spawn(args, **kw):
    """Start a process in its own process group (pgid = its pid), so that
    stopping it can also reach descendants whose parent has already gone;
    Ctrl-C goes to this script, which stops everything itself."""
    p = subprocess.Popen(args, start_new_session=True, **kw)
    STARTED.append(p)
    return p


def proc_table():
    """pid -> (ppid, fields after the command name) for every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        table[int(d)] = (int(rest[1]), rest)
    return table


def tree(roots, table=None):
    """The given pids and all their descendants that are alive."""
    table = table or proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def stop_pid_tree(p, timeout=15.0):
    """SIGTERM a process we started, wait, then SIGKILL what is left of
    its process group."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # Whatever is left of it (children, CGI processes): its process group,
    # made by spawn(), whose id is the pid we started.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_all():
    for p in reversed(STARTED):
        stop_pid_tree(p, timeout=10.0)
    STARTED.clear()


def tree_cpu(pids, table):
    """CPU seconds of pids, their reaped children included."""
    total = 0
    for pid in pids:
        if pid in table:
            f = table[pid][1]
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def wait_quiet(max_wait, limit=25.0):
    """Wait (at most max_wait s) until the machine is nearly idle: other
    sessions' benchmarks on the same cores would distort ours.  Returns
    the busy percentage last seen."""
    t_end = time.time() + max_wait
    while True:
        b0, t0 = machine_busy()
        time.sleep(2)
        b1, t1 = machine_busy()
        pct = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if pct < limit or time.time() >= t_end:
            return pct
        log("machine %.0f%% busy with other work: waiting (up to %.0f s "
            "more)" % (pct, t_end - time.time()))


def tree_rss(pids):
    """(VmRSS, RssAnon) in KiB summed over pids."""
    rss = anon = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
        except OSError:
            pass
    return rss, anon


def http_get(port, path, timeout=1.0):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.read().decode("latin-1")
    except Exception:
        return None


def parse_kv(text, sep=":"):
    out = {}
    for line in (text or "").splitlines():
        if sep in line:
            k, v = line.split(sep, 1)
            out[k.strip()] = v.strip()
    return out


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def sock_queues(ports):
    """Bytes in the server side's kernel send queues (ss skmem w = wmem
    queued) and receive queues, over established sockets on ports."""
    flt = " or ".join("sport = :%d" % p for p in ports)
    try:
        out = subprocess.run(["ss", "-tmnH", "state", "established",
                              "( %s )" % flt], capture_output=True,
                             text=True, timeout=10).stdout
    except Exception:
        return None
    w = r = n = 0
    for tok in out.split():
        if tok.startswith("skmem:("):
            fields = tok[len("skmem:("):].rstrip(")").split(",")
            for fld in fields:
                if fld.startswith("w") and fld[1:].isdigit():
                    w += int(fld[1:])
                elif fld.startswith("r") and fld[1:].isdigit():
                    r += int(fld[1:])
            n += 1
    return dict(sockets=n, wqueued=w, rmem=r)


# ------------------------------------------------------------- servers

def user_group():
    if os.getuid() == 0:
        return "nobody", "nogroup"
    import grp
    import pwd
    return (pwd.getpwuid(os.getuid()).pw_name,
            grp.getgrgid(os.getgid()).gr_name)


class Server:
    name = "?"
    proc = None

    def __init__(self, env, name):
        self.env = env
        self.name = name
        self.http = env.port
        self.https = env.port + 1
        self.dir = os.path.join(env.work, "srv-" + name)

    def roots(self):
        return [self.proc.pid] if self.proc else []

    def pids(self, table):
        return tree(self.roots(), table)

    def wait_ready(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start-up (see %s)"
                                   % (self.name, self.dir))
            if http_get(self.http, "/tiny.txt") is not None:
                return
            time.sleep(0.1)
        raise RuntimeError("%s did not answer on port %d" % (self.name,
                                                              self.http))

    def stop(self):
        if self.proc:
            stop_pid_tree(self.proc)
            if self.proc in STARTED:
                STARTED.remove(self.proc)
            self.proc = None

    def busy(self):
        return None

    def quiet(self):
        return True


def write_checked_config(name, d, logs, conf, text, check):
    """Start a server's run afresh: remove its old logs (error_summary()
    counts the lines of this run only), write its configuration and have
    the server check it (`check`, a command)."""
    for log in logs:
        try:
            os.unlink(os.path.join(d, "logs", log))
        except FileNotFoundError:
            pass
    with open(conf, "w") as f:
        f.write(text)
    chk = subprocess.run(check, capture_output=True, text=True)
    if chk.returncode != 0:
        raise RuntimeError("%s: config test failed:\n%s" % (name, chk.stderr))


class Apache(Server):
    def __init__(self, env, name, bgdeliver, sendfile=False):
        super().__init__(env, name)
        self.bgdeliver = bgdeliver
        self.sendfile = sendfile

    def config(self):
        e = self.env
        user, group = user_group()
        lib = e.libexecdir
        d = self.dir
        ours = ""
        if self.bgdeliver:
            ours = """
# ---- the only difference from the stock configuration ----
LoadModule bgdeliver_module "%(top)s/build/mod_bgdeliver.so"
<Location /bench/>
    BgDeliver On
</Location>
# The default, stated: 256 B/s average after a 30 s grace (the readers
# read 20 KB/s, far above it).
BgDeliverMinRate 256 30
BgDeliverSpoolDir "%(spool)s"
# One engine thread per core for the one child (the default is one per
# child): fast plain-HTTP clients use both cores, as stock's workers do.
BgDeliverEngineThreads 2
<Location /bgdeliver-status>
    SetHandler bgdeliver-status
</Location>
""" % dict(top=TOP, spool=e.spool)
        return """# Generated by bench/bgdeliver/bench.py: %(name)s
ServerRoot "%(d)s"
ServerName 127.0.0.1
PidFile "%(d)s/run/httpd.pid"
DefaultRuntimeDir "%(d)s/run"
ErrorLog "%(d)s/logs/error_log"
LogLevel warn
Listen 127.0.0.1:%(http)d
Listen 127.0.0.1:%(https)d https

LoadModule mpm_event_module     "%(lib)s/mod_mpm_event.so"
LoadModule authz_core_module    "%(lib)s/mod_authz_core.so"
LoadModule mime_module          "%(lib)s/mod_mime.so"
LoadModule alias_module         "%(lib)s/mod_alias.so"
LoadModule status_module        "%(lib)s/mod_status.so"
LoadModule socache_shmcb_module "%(lib)s/mod_socache_shmcb.so"
LoadModule ssl_module           "%(lib)s/mod_ssl.so"
LoadModule cgid_module          "%(lib)s/mod_cgid.so"
# Enabled by Debian by default; its built-in defaults are Debian's.
LoadModule reqtimeout_module    "%(lib)s/mod_reqtimeout.so"
ScriptSock "%(d)s/run/cgisock"

User %(user)s
Group %(group)s

# Debian's apache2.conf values
Timeout 300
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
HostnameLookups Off
LogFormat "%%h %%l %%u %%t \\"%%r\\" %%>s %%O \\"%%{Referer}i\\" \\"%%{User-Agent}i\\"" combined
CustomLog "%(d)s/logs/access_log" combined
# Debian's defaults (EnableSendfile is commented out there, Off built in)
EnableSendfile %(sendfile)s
EnableMMAP On
%(sndbuf)s
# One child with 25 threads.  A child accepts while
#   connections - lingering < ThreadsPerChild + idle_workers * factor
# so %(nmax)d slow readers + %(headroom)d others with %(reserve)d busy workers need
#   factor >= (%(nmax)d + %(headroom)d - %(threads)d) / (%(threads)d - %(reserve)d) -> %(factor)d
StartServers             1
ServerLimit              1
ThreadsPerChild          %(threads)d
ThreadLimit              %(threads)d
MaxRequestWorkers        %(threads)d
MinSpareThreads          1
MaxSpareThreads          50
AsyncRequestWorkerFactor %(factor)d
MaxConnectionsPerChild   0

TypesConfig "%(d)s/conf/mime.types"
DocumentRoot "%(htdocs)s"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "%(htdocs)s">
    Options None
    Require all granted
</Directory>
<Directory "%(htdocs)s/bench/cgi">
    Options +ExecCGI
    SetHandler cgi-script
</Directory>
<Location /server-status>
    SetHandler server-status
</Location>

SSLSessionCache "shmcb:%(d)s/run/ssl_scache(512000)"
<VirtualHost 127.0.0.1:%(https)d>
    SSLEngine on
    SSLCertificateFile    "%(work)s/ssl/cert.pem"
    SSLCertificateKeyFile "%(work)s/ssl/key.pem"
</VirtualHost>
%(ours)s
%(extra_conf)s""" % dict(name=self.name, d=d, http=self.http, https=self.https,
                   lib=lib, user=user, group=group,
                   sendfile="On" if self.sendfile else "Off",
                   threads=THREADS, factor=e.factor, nmax=e.nmax,
                   headroom=SLOT_HEADROOM, reserve=SLOT_RESERVE,
                   htdocs=e.htdocs, work=e.work, ours=ours,
                   extra_conf=os.environ.get("BENCH_HTTPD_EXTRA", ""),
                   sndbuf=("# Same on all servers: the server, not the "
                           "kernel, holds what a slow\n# reader has not "
                           "taken (see results.md)\nSendBufferSize %d\n"
                           % e.sndbuf) if e.sndbuf else "")

    def start(self):
        d = self.dir
        for sub in ("conf", "logs", "run"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        user, group = user_group()
        if os.getuid() == 0:
            shutil.chown(os.path.join(d, "run"), user, group)
        with open(os.path.join(d, "conf", "mime.types"), "w") as f:
            f.write("text/plain txt\napplication/octet-stream bin\n")
        conf = os.path.join(d, "conf", "httpd.conf")
        write_checked_config(self.name, d, ("error_log", "access_log"), conf,
                             self.config(),
                             [self.env.httpd, "-t", "-f", conf])
        self.proc = spawn([self.env.httpd, "-f", conf, "-DFOREGROUND"],
                          stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(d, "logs", "stderr"), "a"))
        self.wait_ready()
        st = parse_kv(http_get(self.http, "/server-status?auto"))
        if st.get("ServerMPM") != "event":
            raise RuntimeError("%s: not the event MPM: %r" % (self.name, st))
        if self.bgdeliver:
            b = parse_kv(http_get(self.http, "/bgdeliver-status?auto"))
            if b.get("BgDeliverEngine") != "async":
                raise RuntimeError("%s: mod_bgdeliver is not async: %r"
                                   % (self.name, b))

    def status(self):
        return parse_kv(http_get(self.http, "/server-status?auto"))

    def busy(self):
        st = self.status()
        try:
            return int(st["BusyWorkers"])
        except (KeyError, ValueError):
            return None

    def quiet(self):
        st = self.status()
        try:
            busy = int(st["BusyWorkers"])
        except (KeyError, ValueError):
            return False
        if busy > 1:
            return False
        if self.bgdeliver and st.get("BgDeliverInFlight", "0") != "0":
            return False
        return True

    def error_summary(self):
        path = os.path.join(self.dir, "logs", "error_log")
        counts = {}
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    for key in ("MaxRequestWorkers", "scoreboard is full",
                                "keep-alive connections", "BGD0",
                                "Timeout", "segfault", "exit signal"):
                        if key in line:
                            counts[key] = counts.get(key, 0) + 1
        except OSError:
            pass
        return counts


class Nginx(Server):
    def __init__(self, env, name="nginx"):
        super().__init__(env, name)
        self.fcgi = None

    def roots(self):
        r = super().roots()
        if self.fcgi:
            r.append(self.fcgi.pid)
        return r

    def config(self):
        e = self.env
        user, group = user_group()
        d = self.dir
        return """# Generated by bench/bgdeliver/bench.py: nginx reference
# Debian nginx.conf values except: one worker process (as Apache's one
# child), worker_connections raised for 1000 slow readers, private paths.
user %(user)s %(group)s;
worker_processes 1;
worker_rlimit_nofile 8192;
pid %(d)s/run/nginx.pid;
error_log %(d)s/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    types { text/plain txt; application/octet-stream bin; }
    default_type application/octet-stream;
    access_log %(d)s/logs/access.log;
    # Temp files (the buffered CGI output) in the same place as
    # mod_bgdeliver's spool.
    client_body_temp_path %(spool)s/nginx-body;
    proxy_temp_path %(spool)s/nginx-proxy;
    fastcgi_temp_path %(spool)s/nginx-fastcgi;
    uwsgi_temp_path %(spool)s/nginx-uwsgi;
    scgi_temp_path %(spool)s/nginx-scgi;
    server {
        listen 127.0.0.1:%(http)d%(sndbuf)s;
        listen 127.0.0.1:%(https)d ssl%(sndbuf)s;
        ssl_certificate %(work)s/ssl/cert.pem;
        ssl_certificate_key %(work)s/ssl/key.pem;
        root %(htdocs)s;
        # CGI through fcgiwrap (FastCGI -> fork/exec of the same script);
        # nginx buffers the output (fastcgi_buffering on, temp files).
        location /bench/cgi/ {
            fastcgi_pass unix:%(d)s/run/fcgiwrap.sock;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
        }
        location = /nginx-status {
            stub_status;
        }
    }
}
""" % dict(user=user, group=group, d=d, http=self.http, https=self.https,
           work=e.work, htdocs=e.htdocs, spool=e.spool,
           sndbuf=" sndbuf=%d" % e.sndbuf if e.sndbuf else "")

    def start(self):
        d = self.dir
        for sub in ("conf", "logs", "run", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        user, group = user_group()
        sock = os.path.join(d, "run", "fcgiwrap.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        if os.getuid() == 0:
            shutil.chown(os.path.join(d, "run"), user, group)
            shutil.chown(os.path.join(d, "tmp"), user, group)
            pre = ["setpriv", "--reuid=" + user, "--regid=" + group,
                   "--clear-groups"]
        else:
            pre = []
        self.fcgi = spawn(pre + [self.env.fcgiwrap, "-c", "8", "-s",
                                 "unix:" + sock],
                          stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(d, "logs", "fcgiwrap"),
                                      "a"))
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        conf = os.path.join(d, "conf", "nginx.conf")
        write_checked_config("nginx", d, ("error.log", "access.log"), conf,
                             self.config(),
                             [self.env.nginx, "-t", "-q", "-p", d, "-c", conf])
        self.proc = spawn([self.env.nginx, "-p", d, "-c", conf,
                           "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(d, "logs", "stderr"), "a"))
        self.wait_ready()

    def stop(self):
        super().stop()
        if self.fcgi:
            stop_pid_tree(self.fcgi)
            if self.fcgi in STARTED:
                STARTED.remove(self.fcgi)
            self.fcgi = None

    def error_summary(self):
        counts = {}
        try:
            with open(os.path.join(self.dir, "logs", "error.log"),
                      errors="replace") as f:
                for line in f:
                    for key in ("[error]", "[crit]", "[alert]", "[emerg]"):
                        if key in line:
                            counts[key] = counts.get(key, 0) + 1
        except OSError:
            pass
        return counts

    def quiet(self):
        txt = http_get(self.http, "/nginx-status")
        if not txt:
            return False
        try:
            active = int(txt.split("Active connections:")[1].split()[0])
        except (IndexError, ValueError):
            return False
        return active <= 1


# -------------------------------------------------------------- clients

def read_status(path):
    try:
        with open(path) as f:
            return dict(kv.split("=", 1) for kv in f.read().split())
    except (OSError, ValueError):
        return {}


def parse_summary(text):
    for line in (text or "").splitlines():
        if line.startswith("label="):
            return dict(kv.split("=", 1) for kv in line.split())
    return {}


def percentile(values, q):
    """Nearest rank; values may hold math.inf for failed probes."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(math.ceil(q / 100.0 * len(v))) - 1))
    return v[k]


def read_probe_log(path):
    lat, errors = [], {}
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 9:
                    continue
                status, result, total = int(p[6]), p[8], float(p[5])
                if result == "ok" and status == 200:
                    lat.append(total)
                else:
                    key = result if result != "ok" else "status-%d" % status
                    errors[key] = errors.get(key, 0) + 1
                    lat.append(math.inf)
    except OSError:
        pass
    return lat, errors


# ---------------------------------------------------------- experiments

class Env:
    pass


def run_point(env, srv, wl, n, idle_rss):
    w = WORKLOADS[wl]
    P = env.p
    tag = "%s-%s-%04d" % (wl, srv.name, n)
    raw = env.raw
    port = srv.https if w["tls"] else srv.http
    res = dict(workload=wl, server=srv.name, n=n)
    # The idle point and the largest one decide the targets: more probes.
    W = P["window"]
    if n in (0, max(points_for(env, wl))):
        W = P.get("window_key", W)
    slow = None
    st_path = os.path.join(raw, tag + ".slow.status")
    t_begin = time.time()

    if n > 0:
        ramp = max(0.2, n / float(w["ramp"]))
        budget = (ramp + P["ramp_extra"] + P["calm_max"] + P["settle"]
                  + W + 10)
        args = [env.slowread, "--port", str(port), "--path", w["path"],
                "--conns", str(n), "--rate", str(RATE), "--rcvbuf",
                str(RCVBUF), "--chunk", "4096", "--ramp", str(ramp),
                "--duration", str(budget), "--status", st_path,
                "--log", os.path.join(raw, tag + ".slow.log"),
                "--label", tag]
        if w["tls"]:
            args.append("--tls")
        if env.nice_readers:
            args = ["nice", "-n", str(env.nice_readers)] + args
        slow = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
        # Ramp: until every reader has its first byte, or progress stalls
        # (stock Apache serves only as many as it has workers).
        t0 = time.time()
        last_first, last_change = -1, t0
        while True:
            time.sleep(0.2)
            now = time.time()
            st = read_status(st_path)
            first = int(st.get("first", 0))
            if first != last_first:
                last_first, last_change = first, now
            if first >= n:
                break
            # Stalled: stock Apache stops at its 25 workers long before the
            # ramp is over.
            if first > 0 and now - last_change > P["stall"]:
                break
            if now - t0 > ramp + P["ramp_extra"]:
                break
            if slow.poll() is not None:
                break
        res["ramp_s"] = time.time() - t0
        res["ramp_first"] = last_first
        # The ramp's own work may outlast it: 1,000 CGI responses of 5 MB
        # are spooled by whoever started them.  The window measures the
        # readers being served, so it waits (bounded) until the server's
        # CPU is below half a core; a server that stalled is idle already.
        t0 = time.time()
        while time.time() - t0 < P["calm_max"]:
            table = proc_table()
            pids = srv.pids(table)
            c0, s0 = tree_cpu(pids, table), time.time()
            time.sleep(0.5)
            table = proc_table()
            busy = (tree_cpu(srv.pids(table), table) - c0) / (time.time() - s0)
            if busy < CALM_CPU:
                break
        res["calm_s"] = time.time() - t0
    time.sleep(P["settle"])

    # Measurement window.
    nprobe = int(W * P["probe_rate"])
    probe_log = os.path.join(raw, tag + ".probe.log")
    table = proc_table()
    pids = srv.pids(table)
    cpu0 = tree_cpu(pids, table)
    mb0 = machine_busy()
    t0 = time.time()
    probe = spawn([env.slowread, "--port", str(srv.http), "--path",
                   "/tiny.txt", "--conns", str(nprobe), "--ramp",
                   str(W), "--timeout-ms", str(PROBE_TIMEOUT_MS),
                   "--duration", str(W + PROBE_TIMEOUT_MS / 1e3 + 2),
                   "--log", probe_log, "--label", tag + "-probe"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slow_st0 = read_status(st_path) if slow else {}
    rss, anon, busy, busy_fail, recv, inflight = [], [], [], 0, [], []
    queues = None
    k = 0
    while time.time() - t0 < W:
        k += 1
        pids = srv.pids(proc_table())
        r, a = tree_rss(pids)
        rss.append(r)
        anon.append(a)
        # Every server's status page is polled alike (nginx: stub_status).
        if isinstance(srv, Apache):
            st = srv.status()
            if "BusyWorkers" in st:
                busy.append(int(st["BusyWorkers"]))
                if "BgDeliverInFlight" in st:
                    inflight.append(int(st["BgDeliverInFlight"]))
            else:
                busy_fail += 1
        else:
            http_get(srv.http, "/nginx-status")
        if slow:
            recv.append(int(read_status(st_path).get("receiving", 0)))
        time.sleep(max(0, t0 + 0.5 * k - time.time()))
    table = proc_table()
    cpu1 = tree_cpu(srv.pids(table), table)
    mb1 = machine_busy()
    t1 = time.time()
    slow_st1 = read_status(st_path) if slow else {}
    pout, perr = probe.communicate(timeout=PROBE_TIMEOUT_MS / 1e3 + 30)
    STARTED.remove(probe)
    psum = parse_summary(pout)
    lat, errors = read_probe_log(probe_log)
    # Kernel queues once the probe is done (ss walks every socket: not
    # while the probe runs), the readers still connected.
    if slow:
        queues = sock_queues([srv.http, srv.https])

    res.update(window_s=t1 - t0, probes=len(lat),
               p50=percentile(lat, 50), p99=percentile(lat, 99),
               errors=sum(errors.values()), error_kinds=errors,
               probe_cpu=float(psum.get("cpu_user", 0))
               + float(psum.get("cpu_sys", 0)),
               server_cpu_pct=100.0 * (cpu1 - cpu0) / (t1 - t0),
               # all CPUs, in % of one core, like the other CPU figures
               machine_cpu_pct=100.0 * os.cpu_count() * (mb1[0] - mb0[0])
               / max(1, mb1[1] - mb0[1]),
               rss_kb=statistics.median(rss) if rss else None,
               anon_kb=statistics.median(anon) if anon else None,
               idle_rss_kb=idle_rss[0], idle_anon_kb=idle_rss[1],
               busy_samples=len(busy), busy_fail=busy_fail,
               busy_avg=statistics.mean(busy) if busy else None,
               busy_max=max(busy) if busy else None,
               inflight=statistics.median(inflight) if inflight else None,
               receiving=statistics.median(recv) if recv else 0,
               queues=queues)
    # Unreachable status page = every worker busy: count them as all busy.
    if isinstance(srv, Apache):
        s = sum(busy) + busy_fail * THREADS
        cnt = len(busy) + busy_fail
        res["busy_avg_all"] = s / cnt if cnt else None
    if slow_st0 and slow_st1:
        dt = float(slow_st1["t"]) - float(slow_st0["t"])
        if dt > 0:
            res["client_cpu_pct"] = 100.0 * (
                float(slow_st1["cpu_user"]) + float(slow_st1["cpu_sys"])
                - float(slow_st0["cpu_user"]) - float(slow_st0["cpu_sys"])) / dt
            res["client_rate"] = (int(slow_st1["bytes"])
                                  - int(slow_st0["bytes"])) / dt
    if slow:
        slow.send_signal(signal.SIGTERM)
        sout, serr = slow.communicate(timeout=30)
        STARTED.remove(slow)
        ssum = parse_summary(sout)
        res["slow"] = ssum
        if serr.strip():
            res["slow_stderr"] = serr.strip()[:300]
    # Let the server settle before the next point.
    tq = time.time()
    while time.time() - tq < 20 and not srv.quiet():
        time.sleep(0.2)
    res["quiesce_s"] = time.time() - tq
    if isinstance(srv, Apache) and srv.bgdeliver:
        res["bgd"] = parse_kv(http_get(srv.http, "/server-status?auto"))
    res["wall_s"] = time.time() - t_begin
    return res


def warm_up(env, srv, wl):
    w = WORKLOADS[wl]
    port = srv.https if w["tls"] else srv.http
    args = [env.slowread, "--port", str(port), "--path", w["path"],
            "--conns", "2", "--duration", "20", "--discard"]
    if w["tls"]:
        args.append("--tls")
    subprocess.run(args, capture_output=True, timeout=60)
    subprocess.run([env.slowread, "--port", str(srv.http), "--path",
                    "/tiny.txt", "--conns", "20", "--duration", "10"],
                   capture_output=True, timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and not srv.quiet():
        time.sleep(0.2)
    time.sleep(0.5)
    samples = []
    for _ in range(3):
        samples.append(tree_rss(srv.pids(proc_table())))
        time.sleep(0.2)
    return (statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples))


def make_server(env, name, sendfile=False):
    if name.endswith("-sendfile"):
        name, sendfile = name[:-len("-sendfile")], True
    if name == "stock":
        return Apache(env, "stock" + ("-sendfile" if sendfile else ""),
                      False, sendfile)
    if name == "ours":
        return Apache(env, "ours" + ("-sendfile" if sendfile else ""),
                      True, sendfile)
    return Nginx(env)


def quiet_gate(env, what):
    """Bounded wait for other sessions' load to go; the total wait of a
    run is capped by --quiet-wait."""
    left = env.quiet_left
    t = time.time()
    pct = wait_quiet(min(left, 60.0))
    env.quiet_left = max(0.0, left - (time.time() - t))
    env.quiet_log.append((what, pct))
    return pct


def other_cpu(r):
    """Machine CPU not used by the server, the readers or the probe."""
    v = r.get("machine_cpu_pct")
    if v is None:
        return None
    v -= r["server_cpu_pct"] + r.get("client_cpu_pct", 0.0) + \
        100.0 * r.get("probe_cpu", 0.0) / max(1e-9, r["window_s"])
    return max(0.0, v)


def points_for(env, wl):
    return env.p.get(wl + "_points") or env.p["points"]


def servers_for(env, wl):
    return env.servers + [s for s in env.extra.get(wl, [])
                          if s not in env.servers]


def slow_sweeps(env, results):
    for wl in env.workloads:
        for name in servers_for(env, wl):
            quiet_gate(env, "%s/%s" % (wl, name))
            srv = make_server(env, name)
            log("%s / %s: starting" % (wl, srv.name))
            try:
                srv.start()
                idle = warm_up(env, srv, wl)
                for n in points_for(env, wl):
                    r = run_point(env, srv, wl, n, idle)
                    results.append(r)
                    log("  %-5s n=%-4d p50=%s p99=%s err=%d busy=%s recv=%s "
                        "rssΔ/deliv=%s cpu=%.0f%% other=%.0f%% calm=%.1fs (%.0fs)"
                        % (srv.name, n, fmt_ms(r["p50"]), fmt_ms(r["p99"]),
                           r["errors"], fmt_num(r.get("busy_avg_all"), 1),
                           fmt_num(r["receiving"], 0),
                           fmt_kb(mem_per_delivery(r)), r["server_cpu_pct"],
                           other_cpu(r) or 0, r.get("calm_s", 0),
                           r["wall_s"]))
                results.append(dict(workload=wl, server=srv.name,
                                    n=-1, errlog=srv.error_summary()))
            finally:
                srv.stop()


def fast_measure(env, srv, clients, repeat):
    P = env.p
    table = proc_table()
    c0 = tree_cpu(srv.pids(table), table)
    t0 = time.time()
    p = subprocess.run(
        [env.slowread, "--port", str(srv.http), "--path",
         "/bench/big-%dm.bin" % P["big_mb"], "--conns", str(clients),
         "--repeat", str(repeat), "--discard", "--duration", "120"],
        capture_output=True, text=True, timeout=180)
    t1 = time.time()
    table = proc_table()
    c1 = tree_cpu(srv.pids(table), table)
    s = parse_summary(p.stdout)
    elapsed = float(s.get("last_done") or s.get("elapsed") or 1)
    return dict(config=srv.name, clients=clients, repeat=repeat,
                ok=int(s.get("ok", 0)), want=clients * repeat,
                mbs=int(s.get("bytes_ok", 0)) / elapsed / 1e6,
                server_cpu_pct=100.0 * (c1 - c0) / (t1 - t0),
                client_cpu_pct=100.0 * (float(s.get("cpu_user", 0))
                                        + float(s.get("cpu_sys", 0)))
                / elapsed)


def fast_clients(env):
    """Throughput of the large file to 1 and to several fast clients.

    All configurations run at once on their own ports (idle ones cost
    nothing) so that the rounds can interleave them closely: each round
    measures every configuration, in a rotated order, and ratios are
    taken within a round."""
    P = env.p
    configs = [("stock", False), ("stock", True), ("ours", False),
               ("ours", True), ("nginx", True)]
    configs = [c for c in configs if c[0] in env.servers]
    out = {}
    # Fast clients get the kernel's send-buffer autotuning (the Debian
    # default, and the best case for every server) unless --fast-sndbuf.
    slow_sndbuf, env.sndbuf = env.sndbuf, env.fast_sndbuf
    servers = []
    try:
        for i, (name, sf) in enumerate(configs):
            srv = make_server(env, name, sendfile=sf)
            srv.http, srv.https = env.port + 2 + 2 * i, env.port + 3 + 2 * i
            if not (port_free(srv.http) and port_free(srv.https)):
                raise RuntimeError("port %d or %d is busy" % (srv.http,
                                                              srv.https))
            servers.append(srv)
            srv.start()
            # one download first: page cache, worker threads, allocators
            fast_measure(env, srv, 1, 1)
        for rnd in range(P["fast_rounds"]):
            quiet_gate(env, "fast round %d" % (rnd + 1))
            k = rnd % len(servers)
            for srv in servers[k:] + servers[:k]:
                for clients, repeat in ((1, P["fast_one_repeat"]),
                                        (P["fast_many"],
                                         P["fast_many_repeat"])):
                    r = fast_measure(env, srv, clients, repeat)
                    r["round"] = rnd
                    out.setdefault((srv.name, clients), []).append(r)
                    log("  fast round %d %-14s clients=%d %6.0f MB/s "
                        "ok=%d/%d server cpu %.0f%%"
                        % (rnd + 1, srv.name, clients, r["mbs"], r["ok"],
                           r["want"], r["server_cpu_pct"]))
    finally:
        for srv in servers:
            srv.stop()
        env.sndbuf = slow_sndbuf
    return out


def fast_ratio(fast, key, clients, base="stock-sendfile"):
    """Median over the rounds of key / base measured in the same round."""
    a = {r["round"]: r["mbs"] for r in fast.get((key, clients), [])}
    b = {r["round"]: r["mbs"] for r in fast.get((base, clients), [])}
    q = [a[k] / b[k] for k in a if k in b and b[k] > 0]
    return statistics.median(q) if q else None


def fast_median(fast, key, clients):
    v = fast.get((key, clients))
    return statistics.median(x["mbs"] for x in v) if v else None


# --------------------------------------------------------------- report

def fmt_ms(v):
    if v is None:
        return "–"
    if v == math.inf:
        return "timeout"
    return "%.1f" % v if v < 100 else "%.0f" % v


def fmt_num(v, digits=1):
    if v is None:
        return "–"
    return ("%%.%df" % digits) % v


def fmt_kb(v):
    if v is None:
        return "–"
    if abs(v) >= 1024:
        return "%.1f MB" % (v / 1024.0)
    return "%.1f KB" % v


def deliveries(r):
    """Deliveries in flight during the window: connections receiving
    body bytes, as the client saw them."""
    return r.get("receiving") or 0


def mem_per_delivery(r):
    d = deliveries(r)
    if not d or r.get("rss_kb") is None:
        return None
    return (r["rss_kb"] - r["idle_rss_kb"]) / d


def anon_per_delivery(r):
    d = deliveries(r)
    if not d or r.get("anon_kb") is None:
        return None
    return (r["anon_kb"] - r["idle_anon_kb"]) / d


def sndq_per_delivery(r):
    d = deliveries(r)
    q = r.get("queues")
    if not d or not q:
        return None
    return q["wqueued"] / 1024.0 / d


def machine_info(env):
    def cmd(args):
        try:
            return subprocess.run(args, capture_output=True, text=True,
                                  timeout=10).stdout + \
                subprocess.run(args, capture_output=True, text=True,
                               timeout=10).stderr
        except Exception:
            return ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576.0)
    except OSError:
        pass
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", cmd(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"])
         .strip()),
        ("apache2", cmd([env.httpd, "-v"]).splitlines()[0].split(":", 1)[1]
         .strip()),
        ("nginx", cmd([env.nginx, "-v"]).strip().split(":", 1)[-1].strip()),
        ("fcgiwrap", cmd(["dpkg-query", "-W", "-f=${Version}", "fcgiwrap"])
         .strip()),
        ("OpenSSL", cmd(["openssl", "version"]).strip()),
        ("gcc", cmd(["gcc", "-dumpfullversion"]).strip()),
        ("mod_bgdeliver", env.git_rev),
        ("bench/bgdeliver", env.bench_rev),
    ]


STYLE = {
    "stock": ('lw 2 pt 7 lc rgb "#d62728"', "stock Apache"),
    "ours": ('lw 2 pt 5 lc rgb "#1f77b4"', "Apache + mod_bgdeliver"),
    "nginx": ('lw 2 pt 9 lc rgb "#2ca02c"', "nginx"),
    "ours-sendfile": ('lw 1 dt 2 pt 4 lc rgb "#1f77b4"',
                      "mod_bgdeliver, EnableSendfile On"),
    "stock-sendfile": ('lw 1 dt 2 pt 6 lc rgb "#d62728"',
                       "stock, EnableSendfile On"),
}


def write_plot(env, results):
    """probe-p99.png: p99 vs slow readers, one panel per workload."""
    cap = PROBE_TIMEOUT_MS
    panels = []
    for wl in env.workloads:
        points = points_for(env, wl)
        names = servers_for(env, wl)
        dat = os.path.join(env.raw, "p99-%s.dat" % wl)
        with open(dat, "w") as f:
            f.write("# %s: idx readers %s (probe p99 ms; %d = timeout)\n"
                    % (wl, " ".join(names), cap))
            for i, n in enumerate(points):
                row = [str(i), str(n)]
                for name in names:
                    r = find(results, wl, name, n)
                    v = r["p99"] if r else None
                    row.append("NaN" if v is None else
                               "%.3f" % (cap if v == math.inf else v))
                f.write(" ".join(row) + "\n")
        xt = ", ".join('"%d" %d' % (n, i) for i, n in enumerate(points))
        plots = ['"%s" using 1:%d with linespoints %s title "%s"'
                 % (dat, 3 + j, STYLE[name][0], STYLE[name][1])
                 for j, name in enumerate(names)]
        panels.append('set title "%s"\nset xtics (%s)\nplot %s\n'
                      % (WORKLOADS[wl]["title"], xt, ", \\\n     ".join(plots)))
    png = os.path.join(env.out, env.plot_name)
    script = """set terminal pngcairo size %d,480 font "DejaVu Sans,10" noenhanced
set output "%s"
set multiplot layout 1,%d title "Probe p99 latency (512-byte file, fresh connection, %d/s) vs slow readers (4 KB rcvbuf, 20 KB/s each)\\nApache: one child, 25 threads; a p99 at the top line (%d ms) means more than 1%% of the probes timed out"
set logscale y
set yrange [0.1:%d]
set ylabel "probe p99 (ms)"
set xlabel "slow readers"
set key right center
set grid
%s
unset multiplot
""" % (440 * len(env.workloads), png, len(env.workloads),
       env.p["probe_rate"], cap, cap * 3, "".join(panels))
    with open(os.path.join(env.raw, "plot.gp"), "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot"], input=script, text=True,
                       capture_output=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr)


def find(results, wl, server, n):
    for r in results:
        if r["workload"] == wl and r["server"] == server and r["n"] == n:
            return r
    return None


def verdict(ok):
    return "**met**" if ok else "**not met**"


def write_report(env, results, fast, t_start):
    P = env.p
    L = []
    a = L.append
    a("# mod_bgdeliver benchmark results")
    a("")
    a("Generated by `bench/bgdeliver/run.sh%s` on %s in %.0f s (%s run). "
      "Raw data: `%s`." % (" --quick" if env.quick else "",
                           time.strftime("%Y-%m-%d %H:%M"),
                           time.time() - t_start,
                           "quick" if env.quick else "full",
                           os.path.relpath(env.raw, TOP)))
    a("")
    a("## Machine")
    a("")
    a("| | |")
    a("|---|---|")
    for k, v in machine_info(env):
        a("| %s | %s |" % (k, v))
    a("| load average before / after | %s / %s |"
      % (" ".join(env.load_before),
         " ".join(open("/proc/loadavg").read().split(" ", 3)[:3])))
    a("")
    a("Everything runs on this one machine over 127.0.0.1: the servers, "
      "the slow readers and the probe share its %d cores, and other "
      "sessions may run their own benchmarks at the same time (see the "
      "load average)." % os.cpu_count())
    a("")
    a("## Set-up")
    a("")
    a("* **stock**: Apache 2.4 event MPM, one child (StartServers 1, "
      "ServerLimit 1, ThreadsPerChild %d, MaxRequestWorkers %d), "
      "AsyncRequestWorkerFactor %d (the slot formula `connections < "
      "ThreadsPerChild + idle_workers × factor` with %d readers + %d "
      "others and %d busy workers), Debian defaults otherwise: "
      "EnableSendfile Off, EnableMMAP On, Timeout 300, KeepAlive On, "
      "mod_reqtimeout (Debian enables it), mod_cgid for CGI, mod_ssl with "
      "a self-signed RSA-2048 certificate."
      % (THREADS, THREADS, env.factor, env.nmax, SLOT_HEADROOM,
         SLOT_RESERVE))
    a("* **ours**: the same file plus `LoadModule bgdeliver_module "
      "build/mod_bgdeliver.so`, `BgDeliver On` in `<Location /bench/>`, "
      "`BgDeliverMinRate 256 30` (the default, stated), a spool directory, "
      "`BgDeliverEngineThreads 2` (one engine thread per core for the one "
      "child; the default is one per child).")
    a("* **nginx**: Debian's nginx-light, one worker process, "
      "worker_connections 4096, sendfile on, same files and certificate; "
      "the CGI runs under fcgiwrap (8 processes) through "
      "`fastcgi_pass`, with nginx's default FastCGI buffering to temp "
      "files — the closest nginx has to CGI.")
    a("* **send buffers**: all three servers set the socket send buffer "
      "to %s (`SendBufferSize`, nginx `listen … sndbuf=`). On loopback "
      "the kernel's autotuning otherwise grows it to 3–4 MB per "
      "connection, so most of a 5 MB response would sit in the kernel and "
      "the server would have nothing left to do for a slow reader; with a "
      "smaller buffer the server keeps feeding each reader, as it must "
      "over a real network. Fast clients keep the autotuning."
      % ("%d bytes" % env.sndbuf if env.sndbuf else "the kernel default"))
    a("* **spool**: mod_bgdeliver's `BgDeliverSpoolDir` and nginx's temp "
      "paths are both `%s`%s: 1,000 CGI readers are 5 GB of spooled "
      "output, in the page cache, not in any process's RSS."
      % (env.spool, " (tmpfs)" if env.spool.startswith("/dev/shm")
         else ""))
    a("* **slow readers**: `slowread` (C, epoll, OpenSSL), SO_RCVBUF %d "
      "set before connect(), each reading at most %d B/s in 4 KB reads, "
      "fresh connection, `Connection: close`; they connect at %s per "
      "second, then the window starts once all have their first byte (or "
      "progress stalls for %.1f s: stock Apache serves only as many as it "
      "has workers; at most %.0f s after the ramp) and the server's CPU "
      "is below %.0f %% of one core over 0.5 s (at most %.0f s more: "
      "1,000 CGI requests leave 5 GB to be read from their scripts after "
      "the last first byte)."
      % (RCVBUF, RATE, ", ".join("%s %d" % (k, v["ramp"])
                                 for k, v in WORKLOADS.items()),
         P["stall"], P["ramp_extra"], 100 * CALM_CPU, P["calm_max"]))
    a("* **probe**: during a %s s window (%s s at 0 readers and at the "
      "largest count), %d requests/s for a 512-byte "
      "static file over plain HTTP, each on a fresh connection, open loop "
      "(one every %.0f ms whatever happened to the others), %d ms timeout. "
      "p50/p99 count failed probes as infinite: `timeout` means that more "
      "than 50 %% / 1 %% of the probes failed."
      % ("%g" % P["window"], "%g" % P.get("window_key", P["window"]),
         P["probe_rate"], 1000.0 / P["probe_rate"], PROBE_TIMEOUT_MS))
    a("* **BusyWorkers**: `/server-status?auto` every 0.5 s; the status "
      "request itself occupies one worker, so 1 means idle. A sample that "
      "times out (1 s) means every worker is busy and counts as %d (the "
      "column shows how many did)." % THREADS)
    a("* **memory per delivery**: median RSS of all the server's processes "
      "(VmRSS summed over the process tree: parent, child, cgid daemon and "
      "CGI processes; nginx master, worker, fcgiwrap) during the window, "
      "minus the idle RSS after a warm-up, divided by the deliveries in "
      "flight (connections receiving body bytes, as the client counts "
      "them). Kernel socket buffers are not in RSS; the send-queue column "
      "shows them separately (`ss` skmem `w`, server side).")
    a("* **CPU**: utime+stime of the server's process tree (reaped "
      "children included) over the window, in %% of one core; client CPU "
      "is the slow readers' process; *other CPU* is the machine's busy "
      "time (/proc/stat, all %d cores, in %% of one core) minus server, "
      "readers and probe: loopback softirq work not charged to a process, "
      "and other sessions' load on this shared machine (a noise gauge)."
      % os.cpu_count())
    if env.quiet_log:
        a("* Before each server was started the run waited (bounded) for "
          "the machine to be < 25 %% busy; busy %% seen then: %s."
          % ", ".join("%s %.0f" % x for x in env.quiet_log))
    a("")

    # Targets
    a("## Targets (issue 4) at the largest number of slow readers, one "
      "child")
    a("")
    if results and any(max(points_for(env, wl)) < 1000
                       for wl in env.workloads):
        a("_Some workloads of this run stop below 1,000 readers (see the "
          "first column)._")
        a("")
    a("| workload, readers | target | stock | ours | nginx | ours: |")
    a("|---|---|---|---|---|---|")
    for wl in env.workloads:
        nmax = max(points_for(env, wl))
        wlabel = "%s, %d" % (wl, nmax)
        rows = {s: find(results, wl, s, nmax) for s in SERVERS}
        idle = {s: find(results, wl, s, 0) for s in SERVERS}
        if not any(rows.values()):
            continue

        def p99ratio(s):
            r, i = rows.get(s), idle.get(s)
            if not r or not i or i["p99"] in (None, math.inf) or not i["p99"]:
                return None, "–"
            if r["p99"] == math.inf:
                return math.inf, "timeout (idle %s ms)" % fmt_ms(i["p99"])
            q = r["p99"] / i["p99"]
            return q, "%s ms = %.2f× idle %s ms" % (fmt_ms(r["p99"]), q,
                                                   fmt_ms(i["p99"]))
        cells = [p99ratio(s) for s in SERVERS]
        q = cells[1][0]
        a("| %s | probe p99 ≤ 2× idle | %s | %s | %s | %s |"
          % (wlabel, cells[0][1], cells[1][1], cells[2][1],
             verdict(q is not None and q <= 2.0)))
        e = [rows[s]["errors"] if rows.get(s) else None for s in SERVERS]
        pr = [rows[s]["probes"] if rows.get(s) else None for s in SERVERS]
        a("| %s | 0 probe errors | %s | %s | %s | %s |"
          % (wlabel, *["%s / %s" % (x, y) if x is not None else "–"
                   for x, y in zip(e, pr)],
             verdict(e[1] == 0)))
        b = [rows[s].get("busy_avg_all") if rows.get(s) else None
             for s in SERVERS]
        a("| %s | avg BusyWorkers ≤ 2 | %s | %s | n/a | %s |"
          % (wlabel, fmt_num(b[0], 1), fmt_num(b[1], 2),
             verdict(b[1] is not None and b[1] <= 2)))
        m = [mem_per_delivery(rows[s]) if rows.get(s) else None
             for s in SERVERS]
        d = [deliveries(rows[s]) if rows.get(s) else None for s in SERVERS]
        a("| %s | ≤ 32 KB RSS per in-flight delivery | %s (%s) | %s (%s) "
          "| %s (%s) | %s |"
          % (wlabel, fmt_kb(m[0]), fmt_num(d[0], 0), fmt_kb(m[1]),
             fmt_num(d[1], 0), fmt_kb(m[2]), fmt_num(d[2], 0),
             verdict(m[1] is not None and m[1] <= 32)))
    if fast:
        for c in sorted({k[1] for k in fast}):
            base = fast_median(fast, "stock-sendfile", c)
            for key in ("ours", "ours-sendfile"):
                v, q = fast_median(fast, key, c), fast_ratio(fast, key, c)
                if base and v and q:
                    ng = fast_median(fast, "nginx", c)
                    a("| fast, %d client%s | ≥ 0.9× stock sendfile | %.0f "
                      "MB/s | %s: %.0f MB/s, %.2f× | %s | %s |"
                      % (c, "s" if c > 1 else "", base, key, v, q,
                         "%.0f MB/s" % ng if ng else "–",
                         verdict(q >= 0.9)))
    a("")
    a("Memory cells: RSS growth per delivery (deliveries in flight in "
      "parentheses). Stock Apache has only as many deliveries in flight as "
      "it has workers; the other readers wait in the listen queue.")
    a("")

    # Per-workload tables
    for wl in env.workloads:
        pts = points_for(env, wl)
        nmax = max(pts)
        if not any(r["workload"] == wl for r in results):
            continue
        a("## Slow readers: %s" % WORKLOADS[wl]["title"])
        a("")
        a("| readers | server | probe p50 ms | probe p99 ms | probe errors "
          "| avg BusyWorkers (unreachable) | in flight | RSS Δ per delivery "
          "| anon Δ per delivery | kernel send queue per delivery "
          "| server CPU | client CPU | other CPU | client read rate "
          "| reader errors |")
        a("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in pts:
            for s in servers_for(env, wl):
                r = find(results, wl, s, n)
                if not r:
                    continue
                busy = "–"
                if r.get("busy_avg_all") is not None:
                    busy = "%.2f (%d/%d)" % (r["busy_avg_all"], r["busy_fail"],
                                             r["busy_fail"]
                                             + r["busy_samples"])
                errs = str(r["errors"])
                if r["errors"]:
                    errs += " " + ",".join("%s:%d" % kv for kv in
                                           sorted(r["error_kinds"].items()))
                sl = r.get("slow") or {}
                rerr = "–" if not sl else str(int(sl.get("err", 0))
                                              + int(sl.get("timeout", 0)))
                a("| %d | %s | %s | %s | %s / %d | %s | %s | %s | %s | %s "
                  "| %.0f %% | %s | %s | %s | %s |"
                  % (n, s, fmt_ms(r["p50"]), fmt_ms(r["p99"]), errs,
                     r["probes"], busy, fmt_num(deliveries(r), 0),
                     fmt_kb(mem_per_delivery(r)),
                     fmt_kb(anon_per_delivery(r)),
                     fmt_kb(sndq_per_delivery(r)), r["server_cpu_pct"],
                     "%.0f %%" % r["client_cpu_pct"]
                     if "client_cpu_pct" in r else "–",
                     "%.0f %%" % other_cpu(r)
                     if other_cpu(r) is not None else "–",
                     "%.0f KB/s" % (r["client_rate"] / 1024.0)
                     if r.get("client_rate") else "–", rerr))
        a("")
        a("Idle RSS after warm-up: " + ", ".join(
            "%s %s" % (s, fmt_kb(find(results, wl, s, pts[0])["idle_rss_kb"]))
            for s in servers_for(env, wl)
            if find(results, wl, s, pts[0])) + ".")
        notes = []
        for s in servers_for(env, wl):
            e = find(results, wl, s, -1)
            if e and e.get("errlog"):
                notes.append("%s error_log: %s" % (s, ", ".join(
                    "%s ×%d" % kv for kv in sorted(e["errlog"].items()))))
            r = find(results, wl, s, nmax)
            if r and r.get("bgd"):
                b = r["bgd"]
                notes.append(s + " totals after the sweep: started %s, "
                             "completed %s, aborted %s, dropped %s, "
                             "fallbacks %s" % tuple(
                                 b.get("BgDeliver" + k, "?") for k in
                                 ("Started", "Completed", "Aborted",
                                  "Dropped", "Fallbacks")))
        if notes:
            a("")
            for x in notes:
                a("* " + x)
        a("")

    if fast:
        a("## Fast clients: %d MB file over loopback HTTP" % P["big_mb"])
        a("")
        a("`slowread --discard` (body bytes dropped in the kernel with "
          "MSG_TRUNC, so the client costs little), 1 client × %d downloads "
          "and %d clients × %d downloads each; MB/s = body bytes / time to "
          "the last completed download. All five servers run at once on "
          "their own ports (kernel send-buffer autotuning, no "
          "SendBufferSize), each warmed by one download; %d rounds measure "
          "them one after the other in a rotated order. MB/s is the median "
          "of the rounds; the ratio is the median of the per-round ratios "
          "to stock with EnableSendfile On."
          % (P["fast_one_repeat"], P["fast_many"], P["fast_many_repeat"],
             P["fast_rounds"]))
        a("")
        a("| configuration | clients | MB/s median (rounds) | × stock "
          "sendfile | × stock default | server CPU | client CPU | complete |")
        a("|---|---:|---:|---:|---:|---:|---:|---:|")
        order = ["stock", "stock-sendfile", "ours", "ours-sendfile", "nginx"]
        for c in sorted({k[1] for k in fast}):
            for key in order:
                v = fast.get((key, c))
                if not v:
                    continue
                q1 = fast_ratio(fast, key, c)
                q2 = fast_ratio(fast, key, c, base="stock")
                a("| %s | %d | %.0f (%s) | %s | %s | %.0f %% | %.0f %% "
                  "| %d/%d |"
                  % (key, c, fast_median(fast, key, c),
                     ", ".join("%.0f" % x["mbs"] for x in v),
                     "%.2f×" % q1 if q1 else "–",
                     "%.2f×" % q2 if q2 else "–",
                     statistics.mean(x["server_cpu_pct"] for x in v),
                     statistics.mean(x["client_cpu_pct"] for x in v),
                     sum(x["ok"] for x in v), sum(x["want"] for x in v)))
        a("")
        a("`stock`/`ours`: EnableSendfile Off, EnableMMAP On (Debian "
          "defaults, the configuration of the slow-reader runs); "
          "`-sendfile`: EnableSendfile On. nginx: one worker process, "
          "sendfile on.")
        a("")
    a("## Plot")
    a("")
    a("![probe p99 latency vs slow readers](%s)" % env.plot_name)
    a("")
    path = os.path.join(env.out, env.results_name)
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    return path


# ----------------------------------------------------------------- main

def prepare(env):
    w = env.work
    os.makedirs(w, exist_ok=True)
    os.chmod(w, 0o755)
    htdocs = env.htdocs
    os.makedirs(os.path.join(htdocs, "bench", "cgi"), exist_ok=True)
    for d in (htdocs, os.path.join(htdocs, "bench"),
              os.path.join(htdocs, "bench", "cgi")):
        os.chmod(d, 0o755)
    with open(os.path.join(htdocs, "tiny.txt"), "w") as f:
        f.write(("probe " * 86)[:511] + "\n")
    f5 = os.path.join(htdocs, "bench", "file5m.bin")
    if not os.path.exists(f5) or os.path.getsize(f5) != FILE_SIZE:
        with open("/dev/urandom", "rb") as src, open(f5 + ".tmp", "wb") as d:
            d.write(src.read(FILE_SIZE))
        os.rename(f5 + ".tmp", f5)
    cgi = os.path.join(htdocs, "bench", "cgi", "out5m.cgi")
    with open(cgi, "w") as f:
        f.write("#!/bin/sh\n# 5 MB of CGI output (the static file's bytes)\n"
                "printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\n"
                "exec cat '%s'\n" % f5)
    os.chmod(cgi, 0o755)
    # Kept between runs (generating 1 GB takes a few seconds).
    big = os.path.join(htdocs, "bench", "big-%dm.bin" % env.p["big_mb"])
    want = env.p["big_mb"] * 1024 * 1024
    if not os.path.exists(big) or os.path.getsize(big) != want:
        log("generating the %d MB file" % env.p["big_mb"])
        with open("/dev/urandom", "rb") as src:
            block = src.read(8 * 1024 * 1024)
        with open(big + ".tmp", "wb") as d:
            left = want
            while left > 0:
                # Vary each block so that nothing compresses or dedups.
                d.write(block[:min(left, len(block))])
                block = block[1:] + block[:1]
                left -= len(block)
        os.rename(big + ".tmp", big)
    for p in (f5, big, os.path.join(htdocs, "tiny.txt")):
        os.chmod(p, 0o644)
    sp = env.spool
    os.makedirs(sp, exist_ok=True)
    os.chmod(sp, 0o755)
    ssl = os.path.join(w, "ssl")
    os.makedirs(ssl, exist_ok=True)
    if not os.path.exists(os.path.join(ssl, "key.pem")):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-sha256", "-days", "3650", "-subj",
                        "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-addext", "basicConstraints=critical,CA:FALSE",
                        "-keyout", os.path.join(ssl, "key.pem"),
                        "-out", os.path.join(ssl, "cert.pem")],
                       check=True, capture_output=True)
    if os.getuid() == 0:
        user, group = user_group()
        shutil.chown(sp, user, group)
        os.chmod(ssl, 0o700)


def floor_connect(port, tls):
    """A keep-alive connection that made one request for /tiny.txt."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"GET /tiny.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while (b"\r\n\r\n" not in got
           or len(got.split(b"\r\n\r\n", 1)[1]) < 512):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed by the server")
        got += chunk
    return s


def conn_floor(env, n, warm=50):
    """The floor under "memory per delivery": what an idle keep-alive
    connection costs a server that does no background delivery (a delivery
    is such a connection plus its response).  Each server and scheme starts
    afresh: memory freed by other connections stays in the allocators."""
    os.environ["BENCH_HTTPD_EXTRA"] = (os.environ.get("BENCH_HTTPD_EXTRA", "")
                                       + "\nKeepAliveTimeout 120\n"
                                       "MaxKeepAliveRequests 0\n")
    rows = []
    for name in ("stock", "nginx"):
        for tls in (False, True):
            srv = make_server(env, name)
            srv.start()
            conns = []
            try:
                port = srv.https if tls else srv.http
                conns += [floor_connect(port, tls) for _ in range(warm)]
                time.sleep(1)
                before = tree_rss(srv.pids(proc_table()))[0]
                conns += [floor_connect(port, tls) for _ in range(n)]
                time.sleep(2)
                after = tree_rss(srv.pids(proc_table()))[0]
            finally:
                for c in conns:
                    c.close()
                srv.stop()
            kb = (after - before) / float(n)
            rows.append((name, tls, kb))
            log("%s %s: %.1f KB per idle keep-alive connection"
                % (name, "HTTPS" if tls else "HTTP", kb))
    info = dict(machine_info(env))
    path = os.path.join(env.out, "conn-floor.md")
    with open(path, "w") as f:
        f.write("# Memory of an idle keep-alive connection\n\n"
                "%d connections that made one request for /tiny.txt and "
                "stay open, after %d warm-up ones; RSS growth of the "
                "server's process tree per connection, each server and "
                "scheme started afresh.  The servers of the benchmark (see "
                "results.md): stock Apache (one child, event MPM, mod_ssl) "
                "and nginx (one worker).  Apache %s, nginx %s, %s, "
                "kernel %s.\n\n"
                "| server | scheme | KB per connection |\n|---|---|---:|\n"
                % (n, warm, info.get("apache2"), info.get("nginx"),
                   info.get("OpenSSL"), info.get("kernel")))
        for name, tls, kb in rows:
            f.write("| %s | %s | %.1f |\n"
                    % ("stock Apache" if name == "stock" else "nginx",
                       "HTTPS" if tls else "HTTP", kb))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", help="comma-separated reader counts")
    ap.add_argument("--workloads", default="static,tls,cgi")
    ap.add_argument("--servers", default="stock,ours,nginx")
    ap.add_argument("--window", type=float)
    ap.add_argument("--sndbuf", type=int, default=65536,
                    help="server SO_SNDBUF (SendBufferSize, nginx sndbuf=);"
                    " 0 = kernel autotuning")
    ap.add_argument("--fast-sndbuf", type=int, default=0,
                    help="the same for the fast-client runs")
    ap.add_argument("--extra", help="extra server variants per workload, "
                    "e.g. static:ours-sendfile+stock-sendfile,tls:ours-"
                    "sendfile; 'none' for none (full run default: "
                    "static:ours-sendfile)")
    ap.add_argument("--nice-readers", type=int, default=0,
                    help="run the slow readers' client at this nice level "
                    "(the probe and the servers keep 0)")
    ap.add_argument("--no-fast", action="store_true")
    ap.add_argument("--no-slow", action="store_true")
    ap.add_argument("--serve", metavar="SERVER",
                    help="only start SERVER (stock, ours, nginx, "
                    "stock-sendfile, ours-sendfile), print its pids and "
                    "wait for --serve-time seconds or SIGTERM")
    ap.add_argument("--serve-time", type=float, default=120)
    ap.add_argument("--floor", type=int, metavar="N",
                    help="only measure what N idle keep-alive connections "
                    "cost stock Apache and nginx, over HTTP and HTTPS "
                    "(conn-floor.md)")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="seconds to wait in all for other load to go")
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--work", default="/tmp/bgd-bench")
    ap.add_argument("--out")
    ap.add_argument("--spool", help="spool / temp-file directory for "
                    "mod_bgdeliver and nginx (default: /dev/shm/bgd-bench-"
                    "spool when /dev/shm is a tmpfs, else WORK/spool)")
    ap.add_argument("--slowread", required=True)
    ap.add_argument("--httpd", required=True)
    ap.add_argument("--libexecdir", required=True)
    args = ap.parse_args()

    env = Env()
    env.quick = args.quick
    env.p = dict(QUICK if args.quick else FULL)
    if args.points:
        env.p["points"] = sorted(int(x) for x in args.points.split(","))
        env.p.pop("cgi_points", None)
    if args.window:
        env.p["window"] = env.p["window_key"] = args.window
    env.workloads = [w for w in args.workloads.split(",") if w]
    env.extra = dict(env.p.get("extra", {}))
    if args.extra:
        env.extra = {}
        for item in args.extra.split(","):
            if item and item != "none":
                wl, names = item.split(":", 1)
                env.extra[wl] = names.split("+")
    for names in env.extra.values():
        for s in names:
            if s not in SERVERS + EXTRA_SERVERS:
                ap.error("unknown server " + s)
    env.servers = [s for s in args.servers.split(",") if s]
    for w in env.workloads:
        if w not in WORKLOADS:
            ap.error("unknown workload " + w)
    for s in env.servers:
        if s not in SERVERS + EXTRA_SERVERS:
            ap.error("unknown server " + s)
    env.nice_readers = args.nice_readers
    env.sndbuf = args.sndbuf
    env.fast_sndbuf = args.fast_sndbuf
    env.quiet_left = args.quiet_wait
    env.quiet_log = []
    env.port = args.port
    env.work = args.work
    env.htdocs = os.path.join(env.work, "htdocs")
    env.spool = args.spool
    if not env.spool:
        with open("/proc/mounts") as f:
            shm = any(l.split()[1:3] == ["/dev/shm", "tmpfs"] for l in f)
        env.spool = ("/dev/shm/bgd-bench-spool" if shm
                     else os.path.join(env.work, "spool"))
    env.slowread = args.slowread
    env.httpd = args.httpd
    env.libexecdir = args.libexecdir
    env.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    env.fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
    env.nmax = max(env.p["points"] + env.p.get("cgi_points", []) + [1])
    env.factor = int(math.ceil((env.nmax + SLOT_HEADROOM - THREADS)
                               / float(THREADS - SLOT_RESERVE)))
    env.factor = max(env.factor, 2)
    env.out = args.out or (os.path.join(TOP, "build", "bench", "bgdeliver")
                           if args.quick else HERE)
    os.makedirs(env.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env.raw = os.path.join(TOP, "bench", "results", "raw", "bgdeliver",
                           stamp + ("-quick" if args.quick else ""))
    os.makedirs(env.raw, exist_ok=True)
    env.results_name = "results.md"
    env.plot_name = "probe-p99.png"
    env.load_before = open("/proc/loadavg").read().split(" ", 3)[:3]
    try:
        env.git_rev = subprocess.run(
            ["git", "-C", TOP, "log", "-1", "--format=%h %s", "--",
             "mod_bgdeliver.c"], capture_output=True, text=True).stdout.strip()
    except Exception:
        env.git_rev = "?"
    try:
        env.bench_rev = subprocess.run(
            ["git", "-C", TOP, "log", "-1", "--format=%h %s", "--",
             "bench/bgdeliver"], capture_output=True,
            text=True).stdout.strip()
        if subprocess.run(["git", "-C", TOP, "diff", "--quiet", "HEAD", "--",
                           "bench/bgdeliver/bench.py",
                           "bench/bgdeliver/slowread.c",
                           "bench/bgdeliver/run.sh"]).returncode:
            env.bench_rev += " (with uncommitted changes)"
    except Exception:
        env.bench_rev = "?"

    for p in (env.port, env.port + 1):
        if not port_free(p):
            sys.exit("bench: port 127.0.0.1:%d is busy; use --port" % p)

    def on_signal(sig, frame):
        raise KeyboardInterrupt()
    # Explicitly: a background job of a non-interactive shell starts with
    # SIGINT ignored, and Python then never raises KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    if args.floor:
        try:
            prepare(env)
            log("wrote %s" % conn_floor(env, args.floor))
        except KeyboardInterrupt:
            pass
        finally:
            stop_all()
        return

    if args.serve:
        prepare(env)
        srv = make_server(env, args.serve,
                          sendfile=False)
        env.sndbuf = args.sndbuf
        try:
            srv.start()
            table = proc_table()
            print("serving %s on 127.0.0.1:%d (https %d) pids %s" % (
                srv.name, srv.http, srv.https,
                " ".join(str(p) for p in srv.pids(table))), flush=True)
            time.sleep(args.serve_time)
        except KeyboardInterrupt:
            pass
        finally:
            srv.stop()
            stop_all()
        return

    t_start = time.time()
    results, fast = [], {}
    try:
        prepare(env)
        log("AsyncRequestWorkerFactor %d for %d readers; raw data in %s"
            % (env.factor, env.nmax, env.raw))
        if not args.no_slow:
            slow_sweeps(env, results)
        if not args.no_fast:
            fast = fast_clients(env)
    except KeyboardInterrupt:
        log("interrupted: stopping everything we started")
        stop_all()
        sys.exit(130)
    finally:
        stop_all()
        if os.path.basename(env.spool) == "bgd-bench-spool":
            shutil.rmtree(env.spool, ignore_errors=True)
        import json
        with open(os.path.join(env.raw, "results.json"), "w") as f:
            json.dump(dict(results=results,
                           fast=[dict(v, key=k[0]) for k, vs in fast.items()
                                 for v in vs]),
                      f, indent=1, default=str)
    write_plot(env, results)
    path = write_report(env, results, fast, t_start)
    log("wrote %s and %s (%.0f s)" % (path, os.path.join(env.out,
                                                          env.plot_name),
                                      time.time() - t_start))


if __name__ == "__main__":
    main()
