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
use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use FindBin;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;

my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules';
chomp $libexec;
my $curl_h2 = `curl --version 2>/dev/null` =~ /\bHTTP2\b/;
plan tests => 14, need(need_module('conntimes', 'ct_test'),
                       { 'mod_ssl and mod_http2' => -e "$libexec/mod_ssl.so"
                                                    && -e "$libexec/mod_http2.so" },
                       { 'openssl' => system('openssl version >/dev/null 2>&1') == 0 },
                       { 'curl with HTTP/2' => $curl_h2 });

my $top = abs_path("$FindBin::Bin/../..");
my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
my $httpd = Apache::Test::vars('httpd') || '/usr/sbin/apache2';
my $dir = Apache::Test::vars('t_logs') . '/ct_tls';
remove_tree($dir);
make_path($dir);
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
       '-subj', '/CN=127.0.0.1', '-keyout', "$dir/key.pem",
       '-out', "$dir/cert.pem", '-loglevel', 'error') == 0
    or system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
              . "-keyout $dir/key.pem -out $dir/cert.pem >/dev/null 2>&1");

my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1) or die $!;
my $port = $probe->sockport;
close $probe;
my $user = $> == 0 ? "User nobody\nGroup nogroup\n" : '';
open my $fh, '>', "$dir/httpd.conf" or die $!;
print $fh <<"CONF";
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/httpd.pid"
ErrorLog "$dir/error_log"
DefaultRuntimeDir "$dir"
LogLevel info
DocumentRoot "$dir"
${user}LoadModule mpm_${mpm}_module $libexec/mod_mpm_$mpm.so
LoadModule authz_core_module $libexec/mod_authz_core.so
LoadModule socache_shmcb_module $libexec/mod_socache_shmcb.so
LoadModule ssl_module $libexec/mod_ssl.so
LoadModule http2_module $libexec/mod_http2.so
LoadModule conntimes_module $top/build/mod_conntimes.so
LoadModule ct_test_module $top/build/t/mod_ct_test.so
SSLEngine on
SSLCertificateFile "$dir/cert.pem"
SSLCertificateKeyFile "$dir/key.pem"
SSLSessionCache "shmcb:$dir/ssl_scache(512000)"
Protocols h2 http/1.1
LogFormat "tag=%{X-CT-Tag}i proto=%H queue=%{queue}^CT accept=%{accept}^CT read=%{read}^CT filter=%{filter}^CT run=%{run}^CT deliver=%{deliver}^CT total=%{total}^CT worker=%{worker}^CT offworker=%{offworker}^CT arrival=%{arrival}^CT" ct
CustomLog "$dir/access_log" ct
<Location />
    Require all granted
</Location>
<Location /sleep>
    SetHandler ct-sleep
    CtTestAccessDelay 100
</Location>
CONF
close $fh;
chmod 0755, $dir;
chmod 0644, "$dir/cert.pem", "$dir/key.pem";

sub stop_server {
    open my $p, '<', "$dir/httpd.pid" or return;
    chomp(my $pid = <$p> // '');
    close $p;
    return unless $pid =~ /^\d+$/;
    kill 'TERM', $pid;
    for (1 .. 100) {
        return unless kill 0, $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
}
END { stop_server() }

system($httpd, '-d', $dir, '-f', "$dir/httpd.conf", '-k', 'start');
my $up = 0;
for (1 .. 100) {
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1);
    if ($s && -s "$dir/httpd.pid") { $up = 1; close $s; last }
    sleep 0.1;
}
ok t_cmp($up, 1, "private $mpm server with TLS and h2 on $port");

sub lines {
    my ($tag, $n) = @_;
    my @l;
    for (1 .. 100) {
        open my $log, '<', "$dir/access_log" or die $!;
        @l = map { my %h = /(\w+)=(\S+)/g; \%h } grep { /tag=\Q$tag\E / } <$log>;
        last if @l >= $n;
        sleep 0.05;
    }
    return @l;
}
sub adds_up {
    my $h = shift;
    my $s = 0;
    $s += $h->{$_} for qw(queue accept read filter run deliver);
    return $s == $h->{total} && $h->{worker} + $h->{offworker} + $h->{queue} == $h->{total};
}

# HTTP/1.1 over TLS: two requests on one connection.
my $tag = ct_tag();
my $url = "https://127.0.0.1:$port/sleep?ms=50";
my $out = `curl -sk --http1.1 -H 'X-CT-Tag: $tag' $url $url`;
ok t_cmp($out, "slept 50 ms\nslept 50 ms\n");
my @h = lines($tag, 2);
ok t_cmp(scalar(@h), 2);
t_debug(join ' ', map { "$_=$h[0]{$_}" } sort keys %{ $h[0] || {} });
ok !grep { !adds_up($_) } @h;
ok t_cmp($h[0]{arrival}, 'kernel');
# The first request's accept holds the handshake; the second has none.
ok $h[0]{accept} > 300 && $h[0]{accept} > 5 * ($h[1]{accept} || 1);
ok !grep { $_->{filter} < 100_000 || $_->{run} < 50_000 } @h;

# HTTP/2: three streams on one connection (mod_http2 stays inactive on
# prefork).
if ($mpm eq 'prefork') {
    skip('mod_http2 does not run on prefork', 1) for 1 .. 7;
    exit 0;
}
$tag = ct_tag();
$out = `curl -sk --http2 -H 'X-CT-Tag: $tag' $url $url $url`;
ok t_cmp($out, "slept 50 ms\n" x 3);
@h = lines($tag, 3);
ok t_cmp(scalar(@h), 3);
t_debug(join ' ', map { "$_=$h[0]{$_}" } sort keys %{ $h[0] || {} });
ok !grep { $_->{proto} ne 'HTTP/2.0' } @h;
ok !grep { !adds_up($_) } @h;
ok !grep { $_->{arrival} ne 'stream' } @h;
ok !grep { $_->{accept} != 0 } @h;
ok !grep { $_->{filter} < 100_000 || $_->{run} < 50_000 } @h;
