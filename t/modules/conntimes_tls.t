# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# HTTPS and HTTP/2: on a new TLS connection the handshake is accept time;
# an HTTP/2 stream is timed on its secondary connection, its arrival being
# when mod_http2 had its headers.  A private server with mod_ssl and
# mod_http2 (a throw-away self-signed certificate), stopped by its pid.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server self_signed_cert);

my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules';
chomp $libexec;
# Without the sanitizer runtime that `make SANITIZE=1` preloads for apache2:
# curl hangs at start-up with it.
my $curl = 'env -u LD_PRELOAD curl';
my $curl_h2 = `$curl --version 2>/dev/null` =~ /\bHTTP2\b/;
plan tests => 17, need(need_module('conntimes', 'ct_test'),
                       { 'mod_ssl and mod_http2' => -e "$libexec/mod_ssl.so"
                                                    && -e "$libexec/mod_http2.so" },
                       { 'openssl' => system('openssl version >/dev/null 2>&1') == 0 },
                       { 'curl with HTTP/2' => $curl_h2 });

my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;

my $certs = self_signed_cert('ct_tls');

my $conf = <<"CONF";
SSLEngine on
SSLCertificateFile "$certs/cert.pem"
SSLCertificateKeyFile "$certs/key.pem"
SSLSessionCache "shmcb:\@DIR\@/ssl_scache(512000)"
Protocols h2 http/1.1
LogFormat "tag=%{X-CT-Tag}i proto=%H queue=%{queue}^CT accept=%{accept}^CT read=%{read}^CT filter=%{filter}^CT run=%{run}^CT deliver=%{deliver}^CT total=%{total}^CT worker=%{worker}^CT offworker=%{offworker}^CT arrival=%{arrival}^CT" ct
CustomLog "\@DIR\@/access_log" ct
<Location /sleep>
    SetHandler ct-sleep
    CtTestAccessDelay 100
</Location>
CONF
my $srv = private_server($conf, mpm => $mpm, modules => ['conntimes'],
                         std_modules => [qw(socache_shmcb ssl http2)],
                         test_modules => ['ct_test']);
my ($dir, $port) = ($srv->{dir}, $srv->{port});
ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, "private $mpm server with TLS and h2 on $port");

# HTTP/1.1 over TLS: two requests on one connection.
my $tag = ct_tag();
my $url = "https://127.0.0.1:$port/sleep?ms=50";
my $out = `$curl -sk --http1.1 -H 'X-CT-Tag: $tag' $url $url`;
ok t_cmp($out, "slept 50 ms\nslept 50 ms\n");
my @h = ct_wait_lines($tag, 2, 5, "$dir/access_log");
ok t_cmp(scalar(@h), 2);
t_debug(join ' ', map { "$_=$h[0]{$_}" } sort keys %{ $h[0] || {} });
ok !grep { !ct_check_sums($_) } @h;
ok t_cmp($h[0]{arrival}, 'kernel');
# The first request's accept holds the handshake; the second has none.
ok $h[0]{accept} > 300 && $h[0]{accept} > 5 * ($h[1]{accept} || 1);
ok !grep { $_->{filter} < 100_000 || $_->{run} < 50_000 } @h;

# Without kernel stamps (ConntimesKernelTimestamps Off, or a listener that
# has none) the handshake is accept time all the same, from the moment the
# worker took the connection: it was left out of accept and total, the
# arrival taken from the request's bytes after it.
{
    my $off = private_server("ConntimesKernelTimestamps Off\n$conf", mpm => $mpm,
                             modules => ['conntimes'],
                             std_modules => [qw(socache_shmcb ssl http2)],
                             test_modules => ['ct_test']);
    my $t = ct_tag();
    my $u = "https://127.0.0.1:$off->{port}/sleep?ms=50";
    `$curl -sk --http1.1 -H 'X-CT-Tag: $t' $u $u`;
    my @o = ct_wait_lines($t, 2, 5, "$off->{dir}/access_log");
    t_debug(join ' ', map { "$_=$o[0]{$_}" } sort keys %{ $o[0] || {} });
    ok t_cmp(join(' ', scalar(@o), ($o[0] || {})->{arrival} // '-'), '2 worker',
             'no kernel stamps: the arrival is the worker\'s');
    ok t_cmp(($o[0] || {})->{accept} // 0, qr/^[1-9]\d{2,}$/,
             'no kernel stamps: the handshake is in accept of the first request');
    ok !grep { !ct_check_sums($_) } @o;
    $off->{stop}->();
}

# HTTP/2: three streams on one connection (mod_http2 stays inactive on
# prefork).
if ($mpm eq 'prefork') {
    skip('mod_http2 does not run on prefork', 1) for 1 .. 7;
    exit 0;
}
$tag = ct_tag();
$out = `$curl -sk --http2 -H 'X-CT-Tag: $tag' $url $url $url`;
ok t_cmp($out, "slept 50 ms\n" x 3);
@h = ct_wait_lines($tag, 3, 5, "$dir/access_log");
ok t_cmp(scalar(@h), 3);
t_debug(join ' ', map { "$_=$h[0]{$_}" } sort keys %{ $h[0] || {} });
ok !grep { $_->{proto} ne 'HTTP/2.0' } @h;
ok !grep { !ct_check_sums($_) } @h;
ok !grep { $_->{arrival} ne 'stream' } @h;
ok !grep { $_->{accept} != 0 } @h;
ok !grep { $_->{filter} < 100_000 || $_->{run} < 50_000 } @h;
