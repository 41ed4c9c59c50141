# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Where the MPM cannot drive a delivery (HTTP/2 streams; prefork and worker
# MPMs run this same file), responses go out normally and correctly, and
# paced ones are paced in the worker.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time);
use Bgd::Test qw(gen_file hostport_of mpm_name bgd_status access_log_lines request slurp);

my $curl = `sh -c 'command -v curl'`;
chomp $curl;
# Without the sanitizer runtime that `make SANITIZE=1` preloads for apache2:
# curl hangs at start-up with it.
$curl = "env -u LD_PRELOAD $curl" if $curl;
my $h2 = $curl && `$curl -V 2>/dev/null` =~ /\bHTTP2\b/;
plan tests => 7, need need_module('mod_bgdeliver.c'), need_module('mod_http2.c'),
    need_module('mod_ssl.c'), need_module('mod_bgd_test.c'),
    need { 'curl with HTTP/2 support' => $h2 },
    need { 'mod_http2 does not run under prefork' => mpm_name() ne 'prefork' };

my $file = gen_file('bgdeliver/files/h2-1m.bin', 1_000_000);
my $want = do { open my $fh, '<', $file; binmode $fh; local $/; md5_hex(<$fh>) };
my ($host, $port) = hostport_of('bgd_tls');
my $base = "https://127.0.0.1:$port";

sub curl {
    my ($path, @extra) = @_;
    my $out = Apache::Test::vars('t_logs') . "/h2.$$";
    my $t0 = time;
    my $info = `$curl -sk --http2 @extra -o $out -w '%{http_version} %{http_code} %{time_starttransfer}' '$base$path'`;
    my $t = time - $t0;
    my $body = slurp($out);
    unlink $out;
    my ($ver, $code, $ttfb) = split ' ', $info;
    return ($ver, $code, $body, $t, $ttfb);
}

my $before = bgd_status()->{BgDeliverFallbacks};
my ($ver, $code, $body) = curl('/bgdeliver/files/h2-1m.bin', '--limit-rate', '2M');
ok t_cmp($ver, 2, 'the request really used HTTP/2');
ok t_cmp($code, 200, 'HTTP/2 stream: 200');
ok t_cmp(md5_hex($body), $want, 'HTTP/2 stream: exact bytes');
ok t_cmp(bgd_status()->{BgDeliverFallbacks} > $before ? 1 : 0, 1,
         'counted as a foreground fallback');

# Paced on an HTTP/2 stream: paced in the worker, still right.
my $t;
($ver, $code, $body, $t) = curl('/paced/files/h2-1m.bin?pace=100000,200', '-r', '0-149999');
ok t_cmp(($code == 206 && $body eq substr(slurp($file), 0, 150000)) ? 1 : 0,
         1, 'paced HTTP/2 stream: exact bytes');
t_debug("paced h2: $t s");
ok t_cmp(($t > 1.4 && $t < 2.6) ? 1 : 0, 1, "paced HTTP/2 stream: paced (~1.7 s, took $t)");

# HTTP/1.1 on the same TLS vhost still goes through the engine (event).
my $r = request(GET => '/bgdeliver/files/h2-1m.bin', ssl => 1, vhost => 'bgd_tls',
                rcvbuf => 8192, rate => 4_000_000);
ok t_cmp(md5_hex($r->{body}), $want, 'HTTP/1.1 over TLS next to h2: exact bytes');
