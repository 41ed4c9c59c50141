# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# An h2c upgrade (HTTP/1.1 request with "Upgrade: h2c", answered 101 by
# mod_http2 and then served as HTTP/2 stream 1) is one request: the stream
# is recorded, the HTTP/1.1 request_rec of the 101 is not, and its log line
# ends at the switch instead of taking the whole HTTP/2 connection as its
# filter phase.  A private server with mod_http2, driven by curl, which
# upgrades with --http2 on http:// URLs; stopped by its pid.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server);

my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules';
chomp $libexec;
# Without the sanitizer runtime that `make SANITIZE=1` preloads for apache2:
# curl hangs at start-up with it.
my $curl = 'env -u LD_PRELOAD curl';
my $curl_h2 = `$curl --version 2>/dev/null` =~ /\bHTTP2\b/;
my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;
plan tests => 14, need(need_module('conntimes', 'ct_test'),
                       { 'mod_http2' => -e "$libexec/mod_http2.so" },
                       { 'curl with HTTP/2' => $curl_h2 },
                       # mod_http2 stays inactive there: no upgrade.
                       { 'an MPM that mod_http2 runs on' => $mpm ne 'prefork' });

my $conf = <<'CONF' . ct_private_locations();
Protocols h2c http/1.1
LogFormat "tag=%{X-CT-Tag}i status=%>s proto=%H queue=%{queue}^CT accept=%{accept}^CT read=%{read}^CT filter=%{filter}^CT run=%{run}^CT deliver=%{deliver}^CT total=%{total}^CT worker=%{worker}^CT offworker=%{offworker}^CT arrival=%{arrival}^CT" ct
CustomLog "@DIR@/access_log" ct
CONF
my $srv = private_server($conf, mpm => $mpm, modules => ['conntimes'],
                         std_modules => ['http2'], test_modules => ['ct_test']);
my ($dir, $port) = ($srv->{dir}, $srv->{port});
ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, "private $mpm server with h2c on $port");

sub status_json {
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or die "connect: $!";
    print $s "GET /status?json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    my $resp = do { local $/; <$s> } // '';
    my ($body) = $resp =~ /\r\n\r\n(.*)$/s;
    return eval { JSON::PP->new->decode($body) } || {};
}

my $before = status_json()->{requests};
ok defined $before;

# One upgrade, whose stream sleeps 300 ms in its handler.
my $tag = ct_tag();
my $out = `$curl -s --http2 -H 'X-CT-Tag: $tag' -w ' %{http_version}' http://127.0.0.1:$port/sleep?ms=300`;
ok t_cmp($out, "slept 300 ms\n 2", 'answered over HTTP/2 after the upgrade');

# Two lines: the 101 of the HTTP/1.1 request (logged when the HTTP/2
# connection ends) and the stream's.
my @h = ct_wait_lines($tag, 2, 5, "$dir/access_log");
for my $h (@h) {
    t_debug(join ' ', map { "$_=$h->{$_}" } sort keys %$h);
}
ok t_cmp(scalar(@h), 2, 'the 101 and the stream are logged');
my ($up) = grep { $_->{status} eq '101' } @h;
my ($st) = grep { $_->{status} eq '200' } @h;
ok $up && $st;
$up ||= {}; $st ||= {};
ok t_cmp($st->{proto}, 'HTTP/2.0');
ok $st->{run} && $st->{run} >= 295_000;
ok !grep { !ct_check_sums($_) } grep { %$_ } $up, $st;
# The 101's line ends at the switch: the stream is not in its phases.
ok defined $up->{filter} && $up->{filter} < 200_000;
ok defined $up->{total} && $up->{total} < 200_000;

# Exactly one request recorded for the upgrade.
my $after;
for (1 .. 40) {
    $after = status_json()->{requests};
    last if defined $after && $after > $before + 1;
    sleep 0.05;
}
ok t_cmp($after - $before, 1, 'one request recorded per upgrade');
my $j = status_json();
# No 300 ms filter in the aggregates.
ok $j->{phases}{run}{max} && $j->{phases}{filter}{max} < 0.2;

# A request line that comes in two pieces 400 ms apart: with h2c on,
# mod_http2 looks for its preface first, a read of its own, and the wait
# for the rest of the line is read time all the same, not accept time.
{
    my $t = ct_tag();
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or die "connect: $!";
    print $s "GET /sleep?ms=1 HT";
    sleep 0.4;
    print $s "TP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $t\r\nConnection: close\r\n\r\n";
    my $resp = do { local $/; <$s> } // '';
    close $s;
    my ($l) = ct_wait_lines($t, 1, 5, "$dir/access_log");
    $l ||= {};
    t_debug(join ' ', map { "$_=$l->{$_}" } sort keys %$l);
    ok t_cmp(($l->{read} // 0) >= 350_000 && ($l->{accept} // 1e9) < 100_000 ? 1 : 0, 1,
             sprintf('h2c on: a split request line is read time (read %s, accept %s us)',
                     $l->{read} // '-', $l->{accept} // '-'));
    ok ct_check_sums($l);
}
