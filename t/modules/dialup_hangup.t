# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A client that leaves while its paced response waits for a long latency
# (10 s here) releases the delivery at once, not when the latency ends:
# over HTTP and HTTPS, closing or resetting the connection.  A client that
# only closed its sending side after pipelining another request still gets
# both responses, on time.  Event MPM: elsewhere the latency is slept on
# the handler's worker, as mod_ratelimit does.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Socket qw(SOL_SOCKET SO_LINGER SHUT_WR);
use Time::HiRes qw(time sleep);
use Bgd::Test qw(http_connect http_send read_response mpm_name bgd_status
                 children_fds children_fds_back wait_until log_mark
                 error_log_since docroot slurp);
use Digest::MD5 qw(md5_hex);

my $tls = have_module('mod_ssl.c') && eval { require IO::Socket::SSL; 1 };
plan tests => 11, need need_module('mod_dialup.c'),
    need_module('mod_bgdeliver.c'),
    need { 'only the event MPM waits without a worker' => mpm_name() eq 'event' };

my $path = '/dialup/v92/page.txt';
my $page_md5 = md5_hex(slurp(docroot() . '/dialup/files/page.txt'));

sub in_flight { bgd_status()->{BgDeliverInFlight} || 0 }

# Request with a 10 s latency, leave after 0.5 s in the way $leave says;
# the delivery must be gone within 2 s of that.
sub leave_during_latency {
    my ($what, $leave, %c) = @_;
    wait_until(10, sub { in_flight() == 0 });
    my $s = http_connect(%c);
    http_send($s, 'GET', $path, 'X-Modem-Latency' => '10s');
    my $started = wait_until(3, sub { in_flight() == 1 });
    $leave->($s);
    my $t_left = time;
    my $gone = wait_until(5, sub { in_flight() == 0 });
    my $took = time - $t_left;
    ok t_cmp($started && $gone && $took < 2 ? 1 : 0, 1,
             sprintf('%s: the delivery ends %.1f s after the client left '
                     . '(latency 10 s)', $what, $took));
}

sub reset_it {
    my ($s) = @_;
    setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0))
        or die "SO_LINGER: $!";
    close $s;
}

wait_until(10, sub { in_flight() == 0 });
my $fds0 = children_fds();
my $mark = log_mark();
my $aborted0 = bgd_status()->{BgDeliverAborted} || 0;

leave_during_latency('HTTP, close', sub { close $_[0] });
leave_during_latency('HTTP, reset', \&reset_it);
if ($tls) {
    leave_during_latency('HTTPS, close without close_notify',
                         sub { $_[0]->close(SSL_no_shutdown => 1) },
                         vhost => 'dialup_tls', ssl => 1);
    leave_during_latency('HTTPS, reset', \&reset_it,
                         vhost => 'dialup_tls', ssl => 1);
}
else {
    skip 'mod_ssl and IO::Socket::SSL needed' for 1 .. 2;
}
my $left = () = error_log_since($mark) =~ /BGD037: the client left/g;
ok t_cmp($left, $tls ? 4 : 2, 'each logged once (BGD037)');
my $aborted = (bgd_status()->{BgDeliverAborted} || 0) - $aborted0;
ok t_cmp($aborted, $tls ? 4 : 2, 'each counted as aborted');

# Pipelined, then the sending side closed: both answered, the first after
# its latency; the end of stream is no hang-up while a request is pending.
sub half_closed {
    my ($what, %c) = @_;
    my $s = http_connect(%c);
    my $t0 = time;
    http_send($s, 'GET', $path, 'X-Modem-Latency' => '1.5s');
    http_send($s, 'GET', $path, 'X-Modem-Latency' => '1.5s');
    shutdown($s, SHUT_WR)
        or die "shutdown: $!";
    my $r1 = read_response($s, t_sent => $t0, timeout => 20);
    my $r2 = read_response($s, timeout => 20);
    my $ok = ($r1->{status} || 0) == 200 && ($r2->{status} || 0) == 200
             && md5_hex($r1->{body} // '') eq $page_md5
             && md5_hex($r2->{body} // '') eq $page_md5;
    ok t_cmp($ok ? 1 : 0, 1, "$what: both pipelined responses complete "
                             . 'after the client closed its side');
    my $ttfb = ($r1->{t_first} || 0) - $t0;
    ok t_cmp($ttfb >= 1.4 ? 1 : 0, 1,
             sprintf('%s: the first byte after the latency (%.2f s)', $what,
                     $ttfb));
    close $s;
}

half_closed('HTTP');
if ($tls) {
    half_closed('HTTPS', vhost => 'dialup_tls', ssl => 1);
}
else {
    skip 'mod_ssl and IO::Socket::SSL needed' for 1 .. 2;
}

# Nothing left behind in the children that lived through it all.
my ($fds, $fds_then) = children_fds_back($fds0, 10);
ok t_cmp($fds <= $fds_then ? 1 : 0, 1,
         "descriptors of the children back to $fds_then (now $fds)");
