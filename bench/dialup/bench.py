#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
"""mod_dialup benchmark: V.92 pacing, side by side, in one run.

Systems (each a private server on 127.0.0.1, own port, own config under
the scratch directory):
  ours       apache2 event + build/mod_bgdeliver.so + build/mod_dialup.so,
             ModemStandard V.92 (7000 B/s on the wire, 120 ms latency)
  debian     apache2 event + Debian's /usr/lib/apache2/modules/mod_dialup.so,
             ModemStandard V.92
  ratelimit  apache2 event + mod_ratelimit, SetOutputFilter RATE_LIMIT,
             rate-limit 7 (KiB/s = 7168 B/s: the nearest setting to 7000 B/s)
  nginx      Debian nginx, limit_rate 7000 (bytes/s)
The four Apache servers (well, three) share one MPM sizing; every server
runs its children as nobody.

For each system and each concurrency level (default 1, 100, 2000) the C
client dlclient opens the connections (ramped at 2000/s), downloads a
70,000-byte file (10 s at 7000 B/s) and stops by itself at a deadline.
Meanwhile BusyWorkers (Apache) is sampled from /server-status?auto every
0.5 s and the CPU time of the server's processes is read from /proc.

Usage:  python3 bench/dialup/bench.py [--levels 1,100,2000] [--out DIR]
(run as root: raises RLIMIT_NOFILE; writes results.md, results.json,
dialup-bench.png into --out, default bench/dialup/).
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, '..', '..'))
WORK = '/tmp/dialup-bench'
# Servers on CPU 0, the client on CPU 1 (where there are two CPUs and
# taskset): the client's work, and its preempting the server whenever a
# pulse wakes it, is then not charged to the server.  The loopback receive
# path still is (Linux runs it on the sender's CPU).
PIN = (os.cpu_count() or 1) >= 2 and shutil.which('taskset') is not None
PIN_SERVER = ['taskset', '-c', '0'] if PIN else []
PIN_CLIENT = ['taskset', '-c', '1'] if PIN else []
LIBEXEC = '/usr/lib/apache2/modules'
SIZE = 70000
RATE = 7000                     # V.92: 56,000 bit/s / 8
HZ = os.sysconf('SC_CLK_TCK')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


APACHE_BASE = """
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
ListenBacklog 4096
PidFile "{dir}/httpd.pid"
ErrorLog "{dir}/error_log"
LogLevel warn
DefaultRuntimeDir "{dir}"
User nobody
Group nogroup
LoadModule mpm_event_module "{libexec}/mod_mpm_event.so"
LoadModule authz_core_module "{libexec}/mod_authz_core.so"
LoadModule status_module "{libexec}/mod_status.so"
LoadModule env_module "{libexec}/mod_env.so"
# Enabled by Debian by default; its built-in defaults are Debian's.
LoadModule reqtimeout_module "{libexec}/mod_reqtimeout.so"
{modules}
DocumentRoot "{work}/htdocs"
KeepAlive On
Timeout 60
ExtendedStatus On
EnableSendfile On
<Location /server-status>
    SetHandler server-status
</Location>
# Identical sizing for every Apache system: 4 children x 64 threads and
# enough connection slots for 2,000 waiting clients (README, "Sizing").
StartServers             4
ServerLimit              4
ThreadLimit              64
ThreadsPerChild          64
MaxRequestWorkers        256
MinSpareThreads          64
MaxSpareThreads          256
AsyncRequestWorkerFactor 32
MaxConnectionsPerChild   0
<Location /f/>
{location}
</Location>
"""

SYSTEMS = {
    'ours': dict(
        modules='LoadModule bgdeliver_module "{top}/build/mod_bgdeliver.so"\n'
                'LoadModule dialup_module "{top}/build/mod_dialup.so"',
        location='    ModemStandard V.92',
        label='ours (mod_dialup + mod_bgdeliver)'),
    'debian': dict(
        modules='LoadModule dialup_module "{libexec}/mod_dialup.so"',
        location='    ModemStandard V.92',
        label="Debian's mod_dialup"),
    'ratelimit': dict(
        modules='LoadModule ratelimit_module "{libexec}/mod_ratelimit.so"',
        location='    SetOutputFilter RATE_LIMIT\n    SetEnv rate-limit 7',
        label='mod_ratelimit (7 KiB/s)'),
    'nginx': dict(label='nginx limit_rate 7000'),
    # The same with 100 ms pulses whatever the load (no wake-up budget).
    'ours-fixed': dict(
        modules='LoadModule bgdeliver_module "{top}/build/mod_bgdeliver.so"\n'
                'LoadModule dialup_module "{top}/build/mod_dialup.so"\n'
                'BgDeliverMaxWakeups 0',
        location='    ModemStandard V.92',
        label='ours, BgDeliverMaxWakeups 0 (100 ms pulses at any load)'),
    # Not in the default run: how the engine's CPU scales with the pulse.
    'ours500': dict(
        modules='LoadModule bgdeliver_module "{top}/build/mod_bgdeliver.so"\n'
                'LoadModule dialup_module "{top}/build/mod_dialup.so"',
        location='    ModemStandard V.92\n    DialupPulse 500ms',
        label='ours, DialupPulse 500ms'),
}
DEFAULT_SYSTEMS = ['ours', 'ours-fixed', 'debian', 'ratelimit', 'nginx']

NGINX_CONF = """
user nobody nogroup;
worker_processes 2;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 5;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {work}/htdocs;
        location /f/ {{ limit_rate 7000; }}
    }}
}}
"""


class Server:
    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(WORK, name)
        self.port = free_port()
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)

    def start(self):
        fmt = dict(dir=self.dir, port=self.port, work=WORK, top=TOP,
                   libexec=LIBEXEC)
        conf = os.path.join(self.dir, 'server.conf')
        if self.name == 'nginx':
            with open(conf, 'w') as f:
                f.write(NGINX_CONF.format(**fmt))
            cmd = PIN_SERVER + ['nginx', '-c', conf, '-p', self.dir + '/']
            self.pidfile = os.path.join(self.dir, 'nginx.pid')
        else:
            s = SYSTEMS[self.name]
            fmt['modules'] = s['modules'].format(**fmt)
            fmt['location'] = s['location']
            with open(conf, 'w') as f:
                f.write(APACHE_BASE.format(**fmt))
            cmd = PIN_SERVER + ['apache2', '-d', self.dir, '-f', conf, '-k',
                                'start']
            self.pidfile = os.path.join(self.dir, 'httpd.pid')
        subprocess.run(cmd, check=True)
        for _ in range(100):
            if os.path.exists(self.pidfile):
                try:
                    with socket.create_connection(('127.0.0.1', self.port), 1):
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        time.sleep(1.0)
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())

    def stop(self):
        # Only the server we started, by its pid (and its children, by
        # theirs, should the parent not take them down).
        kids = self.pids()[1:]
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(150):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
        time.sleep(0.5)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def pids(self):
        out = [self.pid]
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % d) as f:
                    st = f.read()
            except OSError:
                continue
            ppid = int(st[st.rindex(')') + 2:].split()[1])
            if ppid == self.pid:
                out.append(int(d))
        return out

    def cpu_ticks(self):
        total = 0
        for pid in self.pids():
            try:
                with open('/proc/%d/stat' % pid) as f:
                    st = f.read()
                fields = st[st.rindex(')') + 2:].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total

    def busy_workers(self):
        if self.name == 'nginx':
            return None
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d/server-status?auto'
                                        % self.port, timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith('BusyWorkers:'):
                        return int(line.split(':')[1])
        except OSError:
            return -1
        return None


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def run_level(server, n, deadline, profile=None):
    samples = []
    stop = threading.Event()
    perf = None
    if profile:
        # Where the server's CPU goes: 8 s of call graphs in the middle of
        # the transfers (they last 10 s from 1 s after the start).
        pids = ','.join(str(p) for p in server.pids())
        perf = subprocess.Popen(
            ['sh', '-c', 'sleep 2; exec perf record -q %s -F 499 -p %s -o %s '
             '-- sleep 6' % (os.environ.get('DIALUP_PERF_CG', '-g'), pids,
                             os.path.join(WORK, 'perf.data'))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sampler():
        while not stop.is_set():
            b = server.busy_workers()
            if b is not None:
                samples.append(b)
            stop.wait(0.5)

    th = threading.Thread(target=sampler)
    # The machine may be shared: note how busy it was.
    load_before = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = server.cpu_ticks()
    t0 = time.time()
    th.start()
    out = subprocess.run(PIN_CLIENT + [os.path.join(WORK, 'dlclient'),
                          str(server.port),
                          '/f/file.bin', str(n), str(deadline), '2000'],
                         capture_output=True, text=True, check=True).stdout
    wall = time.time() - t0
    cpu1 = server.cpu_ticks()
    stop.set()
    th.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if perf:
        perf.wait()
        rep = subprocess.run(
            ['perf', 'report', '-i', os.path.join(WORK, 'perf.data'), '--stdio',
             '--no-children', '--sort', 'dso,symbol', '--percent-limit', '0.7',
             '-g', 'none'], capture_output=True, text=True).stdout
        rep2 = subprocess.run(
            ['perf', 'report', '-i', os.path.join(WORK, 'perf.data'), '--stdio',
             '--children', '--sort', 'symbol', '--percent-limit', '4',
             '-g', 'none'], capture_output=True, text=True).stdout
        with open(profile, 'w') as f:
            f.write('# perf profile of the %s server, %d concurrent V.92 '
                    'downloads (self time by dso,symbol)\n' % (server.name, n))
            f.write(rep)
            f.write('\n# the same, inclusive (children) time by symbol\n')
            f.write(rep2)

    conns = []
    for line in out.splitlines():
        f = line.split()
        c = dict(code=int(f[1]), complete=int(f[2]), bytes=int(f[3]),
                 hdr=int(f[4]), t_sent=float(f[5]), t_first=float(f[6]),
                 t_last=float(f[7]),
                 pulses=[(float(a), int(b)) for a, b in
                         (p.split(':') for p in f[9:])])
        conns.append(c)
    done = [c for c in conns if c['complete']]
    got = [c for c in conns if c['bytes'] > 0]
    errs = [((c['bytes'] - 1) / (c['t_last'] - c['t_first']) / RATE - 1)
            for c in done if c['t_last'] > c['t_first']]
    ttfb = [c['t_first'] - c['t_sent'] for c in got]
    gaps = []
    for c in done:
        starts = [p[0] for p in c['pulses']]
        # The last gap ends with the final (partial) pulse: left out.
        gaps += [b - a for a, b in zip(starts, starts[1:])][:-1]
    nominal = statistics.median(gaps) if gaps else None
    jitter = [abs(g - nominal) for g in gaps] if gaps else []
    late = [max(0.0, g - nominal) for g in gaps] if gaps else []
    # -1: /server-status did not answer within 2 s (every worker busy).
    unreachable = len([b for b in samples if b < 0])
    samples = [b for b in samples if b >= 0]
    busy_avg = statistics.mean(samples) if samples else None
    res = dict(
        system=server.name, n=n, deadline=deadline, wall=wall,
        completed=len(done), got_data=len(got),
        bytes_median=statistics.median([c['bytes'] for c in conns]),
        rate_err_median=statistics.median(errs) if errs else None,
        rate_err_p99_abs=pct([abs(e) for e in errs], 99),
        ttfb_median=statistics.median(ttfb) if ttfb else None,
        ttfb_p99=pct(ttfb, 99),
        pulse_median=nominal,
        jitter_p99=pct(jitter, 99),
        lateness_p99=pct(late, 99),
        busy_avg=busy_avg, busy_max=max(samples) if samples else None,
        busy_samples=len(samples), status_unreachable=unreachable,
        loadavg_before=load_before, loadavg_after=os.getloadavg()[0],
        cpu_pct=(cpu1 - cpu0) / HZ / wall * 100,
        client_cpu_pct=((ru1.ru_utime + ru1.ru_stime)
                        - (ru0.ru_utime + ru0.ru_stime)) / wall * 100,
    )
    # One connection's arrival curve for the plot.
    sample = done[0] if done else (got[0] if got else None)
    res['curve'] = sample['pulses'] if sample else []
    return res


def fmt(v, spec, none='n/a'):
    return none if v is None else format(v, spec)


def scaled(v, factor, spec, unit):
    """v * factor formatted with its unit, or n/a."""
    return 'n/a' if v is None else format(v * factor, spec) + unit


def write_results(results, outdir, levels):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, 'results.json'), 'w') as f:
        json.dump([{k: v for k, v in r.items() if k != 'curve'}
                   for r in results], f, indent=1)
    lines = []
    lines.append('| system | clients | completed | rate error (median / p99 abs) '
                 '| TTFB median / p99 | pulse period | inter-pulse jitter p99 '
                 '| pulse lateness p99 | BusyWorkers avg (max) | server CPU '
                 '(% of one core) | load avg (1 min) before / after |')
    lines.append('|---|---:|---:|---|---|---|---|---|---|---:|---|')
    for r in results:
        lines.append('| %s | %d | %d/%d | %s / %s | %s / %s | %s | %s | %s | %s | %s | %.1f / %.1f |' % (
            SYSTEMS[r['system']]['label'], r['n'], r['completed'], r['n'],
            scaled(r['rate_err_median'], 100, '+.2f', '%'),
            scaled(r['rate_err_p99_abs'], 100, '.2f', '%'),
            scaled(r['ttfb_median'], 1000, '.1f', ' ms'),
            scaled(r['ttfb_p99'], 1000, '.1f', ' ms'),
            scaled(r['pulse_median'], 1000, '.0f', ' ms'),
            scaled(r['jitter_p99'], 1000, '.1f', ' ms'),
            scaled(r['lateness_p99'], 1000, '.1f', ' ms'),
            (('%.2f (%d)' % (r['busy_avg'], r['busy_max']))
             if r['busy_avg'] is not None else
             ('n/a' if r['system'] == 'nginx' else '?'))
            + ('; %d of %d samples unanswered (no free worker)'
               % (r['status_unreachable'],
                  r['status_unreachable'] + r['busy_samples'])
               if r.get('status_unreachable') else ''),
            fmt(r['cpu_pct'], '.1f'), r['loadavg_before'], r['loadavg_after']))
    with open(os.path.join(outdir, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))

    dat = os.path.join(WORK, 'plot')
    os.makedirs(dat, exist_ok=True)
    for r in results:
        if r['n'] == levels[0]:
            with open(os.path.join(dat, 'curve-%s.dat' % r['system']), 'w') as f:
                for t, b in r['curve']:
                    f.write('%.5f %d\n' % (t, b))
    plot(results, outdir, levels)


def plot(results, outdir, levels):
    """Arrival curves at 1 client (WORK/plot/curve-*.dat), and per level:
    server CPU, BusyWorkers, downloads completed within the deadline."""
    dat = os.path.join(WORK, 'plot')
    names = [s for s in DEFAULT_SYSTEMS if s != 'ours-fixed'
             and any(r['system'] == s for r in results)]
    if len(names) < 4:
        return
    with open(os.path.join(dat, 'levels.dat'), 'w') as f:
        f.write('level ' + ' '.join('cpu_%s busy_%s done_%s' % (s, s, s)
                                    for s in names) + '\n')
        for n in levels:
            row = [str(n)]
            for s in names:
                r = next((x for x in results if x['system'] == s and x['n'] == n), None)
                row.append(fmt(r and r['cpu_pct'], '.2f', '0'))
                busy = r and r['busy_avg']
                if r and r.get('status_unreachable'):
                    busy = 256      # no free worker for the status request
                row.append(fmt(busy, '.2f', '0'))
                row.append(fmt(r and 100.0 * r['completed'] / r['n'], '.1f', '0'))
            f.write(' '.join(row) + '\n')
    gp = os.path.join(dat, 'plot.gp')
    with open(gp, 'w') as f:
        f.write("""set terminal pngcairo size 1200,900 font ',10' noenhanced
set output '{out}'
set multiplot layout 2,2 title 'V.92 pacing (7000 B/s), 127.0.0.1, 2 cores shared by server and client'
set title 'One download (1 client): bytes received over time'
set xlabel 'seconds after the first byte'
set ylabel 'bytes'
set key left top
set xrange [0:12]
plot {curves}, x*7000 with lines dt 2 lc 'black' title 'ideal V.92 line'
set xrange [*:*]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key left top
set title 'Server CPU (% of one core)'
set xlabel 'concurrent paced downloads'
set ylabel '% of one core'
plot '{dat}/levels.dat' using 2:xtic(1) title "{l0}", '' using 5 title "{l1}", '' using 8 title "{l2}", '' using 11 title "{l3}"
set title 'BusyWorkers average (incl. the status request; 256: status unanswered)'
set ylabel 'busy worker threads'
set logscale y
set yrange [0.5:400]
plot '{dat}/levels.dat' using 3:xtic(1) title "{l0}", '' using 6 title "{l1}", '' using 9 title "{l2}"
unset logscale y
set title 'Downloads complete within the 20 s deadline'
set ylabel '%'
set yrange [0:150]
set key top left horizontal maxcols 2
plot '{dat}/levels.dat' using 4:xtic(1) title "{l0}", '' using 7 title "{l1}", '' using 10 title "{l2}", '' using 13 title "{l3}"
unset multiplot
""".format(out=os.path.join(outdir, 'dialup-bench.png'), dat=dat,
           curves=', '.join("'%s/curve-%s.dat' using 1:2 with steps lw 2 title \"%s\""
                            % (dat, s, SYSTEMS[s]['label']) for s in names),
           l0=SYSTEMS[names[0]]['label'], l1=SYSTEMS[names[1]]['label'],
           l2=SYSTEMS[names[2]]['label'], l3=SYSTEMS[names[3]]['label']))
    if shutil.which('gnuplot'):
        subprocess.run(['gnuplot', gp], check=False)
    else:
        print('gnuplot missing (apt-get install gnuplot-nox): no plot')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--levels', default='1,100,2000')
    ap.add_argument('--systems', default=','.join(DEFAULT_SYSTEMS))
    ap.add_argument('--out', default=HERE)
    ap.add_argument('--deadline', type=float, default=20.0)
    ap.add_argument('--profile', type=int, default=0, metavar='N',
                    help='only profile "ours" with perf at N clients')
    ap.add_argument('--replot', action='store_true',
                    help='redraw the plot from OUT/results.json and the '
                         'curves of the last run')
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(',')]
    if a.replot:
        with open(os.path.join(a.out, 'results.json')) as f:
            plot(json.load(f), a.out, levels)
        return
    systems = a.systems.split(',')

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(os.path.join(WORK, 'htdocs', 'f'))
    os.chmod(WORK, 0o755)
    with open(os.path.join(WORK, 'htdocs', 'f', 'file.bin'), 'wb') as f:
        f.write(bytes((i * 7 + 3) % 251 for i in range(SIZE)))
    subprocess.run(['gcc', '-O2', '-Wall', '-o', os.path.join(WORK, 'dlclient'),
                    os.path.join(HERE, 'dlclient.c')], check=True)
    subprocess.run(['make', '-C', TOP, '--no-print-directory', 'all'],
                   check=True, stdout=subprocess.DEVNULL)

    if a.profile:
        srv = Server('ours')
        srv.start()
        try:
            out = os.path.join(a.out, 'perf-ours-%d.txt' % a.profile)
            r = run_level(srv, a.profile, a.deadline, profile=out)
            print('ours %d clients: cpu %.1f%%; profile in %s'
                  % (a.profile, r['cpu_pct'], out))
        finally:
            srv.stop()
        return

    results = []
    for name in systems:
        srv = Server(name)
        srv.start()
        try:
            for n in levels:
                r = run_level(srv, n, a.deadline)
                print('%-9s %5d clients: %d complete, cpu %.1f%%, busy %s' % (
                    name, n, r['completed'], r['cpu_pct'], r['busy_avg']),
                    flush=True)
                results.append(r)
                time.sleep(2)
        finally:
            srv.stop()
    write_results(results, a.out, levels)


if __name__ == '__main__':
    main()
