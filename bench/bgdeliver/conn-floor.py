#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The floor under "memory per in-flight delivery": what an idle keep-alive
# connection costs a server that does no background delivery at all.  Stock
# Apache 2.4 (event MPM, one child, mod_ssl for TLS) and nginx each get N
# connections that made one small request and stay open; the RSS of the
# server's process tree grows by the cost of N connections.  A delivery is
# a connection plus the response, so no delivery engine inside that server
# can use less than this per delivery.
#
#   python3 bench/bgdeliver/conn-floor.py [N]     (root; about 30 s)
#
# Writes bench/bgdeliver/conn-floor.md.  Needs apache2-bin, nginx-light,
# openssl, python3.  Talks to 127.0.0.1 only; stops the servers it started,
# by pid.
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = '/tmp/bgd-conn-floor'
LIBEXEC = '/usr/lib/apache2/modules'
N = int(sys.argv[1]) if len(sys.argv) > 1 else 800
WARM = 50

APACHE = """
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
ErrorLog "{dir}/error_log"
DefaultRuntimeDir "{dir}"
User nobody
Group nogroup
LoadModule mpm_event_module {lib}/mod_mpm_event.so
LoadModule authz_core_module {lib}/mod_authz_core.so
LoadModule mime_module {lib}/mod_mime.so
LoadModule socache_shmcb_module {lib}/mod_socache_shmcb.so
LoadModule ssl_module {lib}/mod_ssl.so
TypesConfig /etc/mime.types
StartServers 1
ServerLimit 1
ThreadsPerChild 25
MaxRequestWorkers 25
AsyncRequestWorkerFactor 100
KeepAlive On
KeepAliveTimeout 120
MaxKeepAliveRequests 0
DocumentRoot "{work}/htdocs"
<Directory "{work}/htdocs">
    Require all granted
</Directory>
SSLEngine {tls}
SSLCertificateFile {work}/cert.pem
SSLCertificateKeyFile {work}/key.pem
"""

NGINX = """
user nobody nogroup;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 120;
    keepalive_requests 100000;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port} {ssl} backlog=4096;
        {certs}
        root {work}/htdocs;
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tree_rss_kb(pid):
    pids = [pid] + [int(p) for p in subprocess.run(
        ['pgrep', '-P', str(pid)], capture_output=True, text=True).stdout.split()]
    total = 0
    for p in pids:
        try:
            with open('/proc/%d/status' % p) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def connect(port, tls, ctx):
    s = socket.create_connection(('127.0.0.1', port))
    if tls:
        s = ctx.wrap_socket(s, server_hostname='localhost')
    s.sendall(b'GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    got = b''
    while b'floor' not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError('connection closed')
        got += chunk
    return s


def measure(name, tls):
    d = os.path.join(WORK, '%s-%s' % (name, 'tls' if tls else 'plain'))
    os.makedirs(d, exist_ok=True)
    port = free_port()
    fmt = dict(dir=d, port=port, work=WORK, lib=LIBEXEC)
    conf = os.path.join(d, 'server.conf')
    if name == 'apache':
        fmt['tls'] = 'on' if tls else 'off'
        text = APACHE.format(**fmt)
        cmd = ['apache2', '-d', d, '-f', conf, '-k', 'start']
        pidfile = os.path.join(d, 'httpd.pid')
    else:
        fmt['ssl'] = 'ssl' if tls else ''
        fmt['certs'] = ('ssl_certificate %s/cert.pem; ssl_certificate_key '
                        '%s/key.pem;' % (WORK, WORK)) if tls else ''
        text = NGINX.format(**fmt)
        cmd = ['nginx', '-c', conf, '-p', d + '/']
        pidfile = os.path.join(d, 'nginx.pid')
    with open(conf, 'w') as f:
        f.write(text)
    subprocess.run(cmd, check=True)
    for _ in range(100):
        if os.path.exists(pidfile):
            break
        time.sleep(0.1)
    time.sleep(1)
    with open(pidfile) as f:
        pid = int(f.read().strip())
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    try:
        conns += [connect(port, tls, ctx) for _ in range(WARM)]
        time.sleep(1)
        before = tree_rss_kb(pid)
        conns += [connect(port, tls, ctx) for _ in range(N)]
        time.sleep(2)
        after = tree_rss_kb(pid)
    finally:
        for s in conns:
            s.close()
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
    return (after - before) / N


def main():
    if os.getuid() != 0:
        sys.exit('conn-floor.py: run as root (servers run as nobody)')
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(os.path.join(WORK, 'htdocs'))
    with open(os.path.join(WORK, 'htdocs', 'small.txt'), 'w') as f:
        f.write('floor\n')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048',
                    '-nodes', '-sha256', '-days', '30', '-subj',
                    '/CN=127.0.0.1', '-keyout', os.path.join(WORK, 'key.pem'),
                    '-out', os.path.join(WORK, 'cert.pem')],
                   check=True, capture_output=True)
    for root, dirs, files in os.walk(WORK):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    rows = []
    for name in ('apache', 'nginx'):
        for tls in (False, True):
            kb = measure(name, tls)
            rows.append((name, tls, kb))
            print('%-6s %-5s %6.1f KB per idle keep-alive connection'
                  % (name, 'TLS' if tls else 'plain', kb))
    version = subprocess.run(['apache2', '-v'], capture_output=True,
                             text=True).stdout.splitlines()[0]
    ossl = subprocess.run(['openssl', 'version'], capture_output=True,
                          text=True).stdout.strip()
    with open(os.path.join(HERE, 'conn-floor.md'), 'w') as f:
        f.write('# Memory of an idle keep-alive connection\n\n'
                '%d connections that made one small request and stay open, '
                'after %d warm-up ones; RSS growth of the server\'s process '
                'tree per connection.  %s; %s; one Apache child (event MPM), '
                'one nginx worker.\n\n'
                '| server | scheme | KB per connection |\n|---|---|---:|\n'
                % (N, WARM, version, ossl))
        for name, tls, kb in rows:
            f.write('| %s | %s | %.1f |\n'
                    % ('stock Apache' if name == 'apache' else 'nginx',
                       'HTTPS' if tls else 'HTTP', kb))


if __name__ == '__main__':
    main()
