# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Behind a PROXY protocol proxy (mod_remoteip's RemoteIPProxyProtocol) the
# header is connection set-up, as a TLS handshake is: a wait between the
# header and the first request's first bytes is accept time of that
# request, not read time.  Later requests on the connection keep the rule
# for request lines that come in pieces (read).  A private server with
# mod_remoteip, the MPM of the suite, stopped by its pid.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server);

my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules';
chomp $libexec;
plan tests => 19, need(need_module('conntimes', 'ct_test'),
                       { 'mod_remoteip' => -e "$libexec/mod_remoteip.so" });

my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;

my $conf = <<'CONF' . ct_private_locations();
RemoteIPProxyProtocol On
LogFormat "tag=%{X-CT-Tag}i client=%a queue=%{queue}^CT accept=%{accept}^CT read=%{read}^CT filter=%{filter}^CT run=%{run}^CT deliver=%{deliver}^CT total=%{total}^CT worker=%{worker}^CT offworker=%{offworker}^CT arrival=%{arrival}^CT" ct
CustomLog "@DIR@/access_log" ct
CONF
my $srv = private_server($conf, mpm => $mpm, modules => ['conntimes'],
                         std_modules => ['remoteip'], test_modules => ['ct_test']);
my ($dir, $port) = ($srv->{dir}, $srv->{port});
ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, "private $mpm server with PROXY protocol on $port");

# Send the parts over one connection (a reference is a pause in seconds),
# then read to the end; returns the number of responses.
sub raw {
    my (@parts) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
        or die "connect: $!";
    $s->autoflush(1);
    for my $p (@parts) {
        if (ref $p) { sleep $$p; next }
        syswrite $s, $p;
    }
    my $resp = do { local $/; <$s> } // '';
    close $s;
    my @codes = $resp =~ m{^HTTP/1\.1 (\d+)}mg;
    return "@codes";
}

my $proxy = "PROXY TCP4 192.0.2.7 127.0.0.1 4321 80\r\n";
sub get {
    my ($tag, $close) = @_;
    return "GET /sleep?ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CT-Tag: $tag\r\n"
         . ($close ? "Connection: close\r\n" : '') . "\r\n";
}

# The header, 300 ms, then the request: the wait is the connection's
# set-up (accept), after the header's arrival; read is the request's own.
{
    my $tag = ct_tag();
    ok t_cmp(raw($proxy, \0.3, get($tag, 1)), '200');
    my ($h) = ct_wait_lines($tag, 1, 5, "$dir/access_log");
    $h ||= {};
    ok t_cmp($h->{client}, '192.0.2.7', 'the PROXY header was used');
    ok ct_check_sums($h);
    ok $h->{read} < 100_000;
    ok $h->{accept} >= 290_000 && $h->{accept} < 600_000;
    ok $h->{queue} < 100_000 && $h->{filter} < 100_000 && $h->{run} < 100_000;
    ok $h->{total} >= 290_000;
    ok $^O ne 'linux' || $h->{arrival} eq 'kernel';
}

# Header and request together: nothing to wait for.
{
    my $tag = ct_tag();
    ok t_cmp(raw($proxy . get($tag, 1)), '200');
    my ($h) = ct_wait_lines($tag, 1, 5, "$dir/access_log");
    $h ||= {};
    ok t_cmp($h->{client}, '192.0.2.7');
    ok ct_check_sums($h);
    ok $h->{read} < 100_000 && $h->{accept} < 100_000;
}

# A kept-alive request whose line comes in two pieces 300 ms apart, after
# a first request sent with the header: its wait for the second piece is
# read, as on any connection.
{
    my $tag = ct_tag();
    my $second = get($tag, 1);
    ok t_cmp(raw($proxy . get($tag, 0), \0.2, substr($second, 0, 10), \0.3,
                 substr($second, 10)), '200 200');
    my @h = ct_wait_lines($tag, 2, 5, "$dir/access_log");
    ok t_cmp(scalar(@h), 2);
    my ($first, $kept) = (@h, {}, {});
    ok ct_check_sums($first) && ct_check_sums($kept);
    ok $first->{read} < 100_000 && $first->{accept} < 100_000;
    ok $kept->{read} >= 290_000 && $kept->{read} < 600_000;
    ok $kept->{accept} < 100_000;
}
