# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Server-wide behaviour, on private servers started by the test: the
# server-wide cap, spool files (unlinked, released; one that cannot be
# created), a stop with deliveries in flight, Timeout as the idle limit,
# the slots of a child that was killed, faults injected into the system
# calls the MPM and the timed waits need, and connection filters below the
# engine.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Time::HiRes qw(time sleep);
use IO::Select;
use Socket qw(sockaddr_in);
use Bgd::Test qw(gen_file private_server http_connect http_send read_response
                 request wait_until pattern mpm_name server_pids
                 self_signed_cert hold_delivery socket_send_queue);

plan tests => 49, need need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c'),
    need { 'needs the event MPM' => mpm_name() eq 'event' },
    need_module('mod_ssl.c'),
    need { 'openssl' => system('openssl version >/dev/null 2>&1') == 0 };

gen_file('bgdeliver/files/srv-1m.bin', 1_000_000);

sub proc_fds_matching {
    my ($pids, $re) = @_;
    my $n = 0;
    for my $pid (@$pids) {
        opendir my $d, "/proc/$pid/fd" or next;
        for (readdir $d) {
            my $t = readlink "/proc/$pid/fd/$_" or next;
            $n++ if $t =~ $re;
        }
    }
    return $n;
}

sub error_log_of {
    my ($srv) = @_;
    open my $fh, '<', "$srv->{dir}/error_log" or return '';
    local $/;
    return <$fh>;
}

# The ?auto status page of a private server.
sub status_of {
    my ($srv) = @_;
    return request(GET => '/bgdeliver-status?auto', port => $srv->{port})->{body};
}

# A private server with the fault shim (t/c-src/epoll_fault.c) preloaded
# and its fault $var armed: the file it names exists.  Returns the server
# and the file's directory, for the caller to disarm (unlink "$dir/now")
# and remove.
sub faulty_server {
    my ($var, $conf, %o) = @_;
    my $vars = Apache::Test::vars();
    my $shim = "$vars->{top_dir}/build/t/epoll_fault.so";
    my $fault = "$vars->{t_logs}/fault.$var.$$";
    mkdir $fault;
    chmod 0777, $fault;
    my $srv = private_server($conf, %o, env => {
        $var => "$fault/now",
        LD_PRELOAD => join(' ', grep { $_ } $ENV{LD_PRELOAD}, $shim) });
    open my $t, '>', "$fault/now" or die "$fault/now: $!";
    close $t;
    return ($srv, $fault);
}

# A server whose generated responses spool beyond 16 KB, into @DIR@/spool.
sub spool_server {
    my %o = (test_modules => ['bgd_test'], mkdir => ['spool'], std_modules => ['setenvif']);
    return private_server(<<'CONF', %o);
BgDeliverSpoolDir @DIR@/spool
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMemoryLimit 16k
</Location>
# Paced through the public API, as mod_dialup does.
<Location /paced-gen>
    SetHandler bgd-test-gen
    BgDeliverMemoryLimit 16k
    SetEnvIfExpr "%{QUERY_STRING} =~ /pace=(\\d+),(\\d+)/" bgd-test-pace=$1,$2
</Location>
CONF
}

# 1. The server-wide cap: two deliveries at once, then 503 + Retry-After.
{
    my $srv = private_server(<<'CONF');
BgDeliverMaxDeliveries 2
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverOverflow reject 3
</Location>
CONF
    my @held = map { hold_delivery('/bgdeliver/files/srv-1m.bin', port => $srv->{port}) } 1 .. 2;
    my $r = request(GET => '/bgdeliver/files/srv-1m.bin', port => $srv->{port});
    ok t_cmp($r->{status}, 503, 'server-wide cap: third delivery refused');
    ok t_cmp($r->{headers}{'retry-after'}, 3, 'server-wide cap: Retry-After');
    ok t_cmp(error_log_of($srv), qr/BGD002: BgDeliverMaxDeliveries reached/,
             'server-wide cap: logged');
    close $_ for @held;
    wait_until(5, sub { status_of($srv) =~ /BgDeliverInFlight: 0/ });
    $r = request(GET => '/bgdeliver/files/srv-1m.bin', port => $srv->{port},
                 rcvbuf => 8192, rate => 5_000_000);
    ok t_cmp($r->{status}, 200, 'server-wide cap: free again once they end');
    $srv->{stop}->();
}

# 2. Spool files: generated responses beyond BgDeliverMemoryLimit go to an
# unlinked file in BgDeliverSpoolDir, released when the delivery ends.
{
    my $srv = spool_server();
    my @kids = server_pids($srv->{pid});
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    http_send($s, 'GET', '/gen?size=2015000&chunk=16384');
    # Until the handler has spooled (a child may still be starting, under
    # a sanitizer for a good while); the client reads nothing yet.
    my $spooled = wait_until(5, sub {
        proc_fds_matching(\@kids, qr{/spool/[^/]+ \(deleted\)$}) });
    # (The core may hold a duplicate descriptor of it while part of a
    # spool range waits in its buffer.)
    ok t_cmp($spooled >= 1 ? 1 : 0, 1, 'the spool file is open and already unlinked');
    opendir my $d, "$srv->{dir}/spool";
    ok t_cmp(scalar(grep { !/^\./ } readdir $d), 0, 'nothing visible in the spool directory');
    # The last piece (2015000 = 122 * 16384 + 16152) is under the memory
    # limit, but it waits behind the spool: it goes there too, nothing of
    # the response stays in memory for the length of the delivery.  What
    # is not in the spool is what the socket took while the handler wrote
    # (the client's receive queue and the server's send queue): together
    # at least the body, headers and chunk framing (some 1,200 bytes)
    # being on top, and 16,152 bytes short if the tail stayed in memory.
    my $cport = (sockaddr_in(getsockname($s)))[0];
    my ($biggest, $left) = (0, 0);
    wait_until(5, sub {
        for my $pid (@kids) {
            opendir my $fdd, "/proc/$pid/fd" or next;
            for (readdir $fdd) {
                my $t = readlink "/proc/$pid/fd/$_" or next;
                next unless $t =~ m{/spool/[^/]+ \(deleted\)$};
                my $size = -s "/proc/$pid/fd/$_" // 0;
                $biggest = $size if $size > $biggest;
            }
        }
        my $sendq = socket_send_queue($srv->{port}, $cport);
        my $rcvq = pack('i', 0);
        ioctl($s, 0x541B, $rcvq);           # FIONREAD
        $left = $sendq + unpack('i', $rcvq);
        return $biggest + $left >= 2_015_000;
    });
    ok t_cmp($biggest + $left >= 2_015_000 ? 1 : 0, 1,
             "the whole response is in the spool ($biggest bytes) or the socket ($left), its tail too");
    my $r = read_response($s, rate => 4_000_000);
    ok t_cmp($r->{body} eq pattern(2_015_000) ? 1 : 0, 1, 'spooled response: exact bytes');
    close $s;
    ok t_cmp(wait_until(5, sub { proc_fds_matching(\@kids, qr{/spool/}) == 0 }) ? 1 : 0, 1,
             'the spool file is closed afterwards');
    $srv->{stop}->();
}

# 2b. A stream whose client keeps up between bursts: what has left the
# spool is given back, so that BgDeliverSpoolLimit (4M here) counts what
# the spool holds, not the whole stream (6 MB), which would fall back to
# the foreground (BGD013) at its third burst.  The handler flushes while
# it waits (drip), which lets each 2 MB burst drain before the next.
{
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test'], mkdir => ['spool']);
BgDeliverSpoolDir @DIR@/spool
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMemoryLimit 16k
    BgDeliverSpoolLimit 4M
</Location>
CONF
    my $size = 6_000_000;
    my $r = request(GET => "/gen?size=$size&chunk=2000000&delay=1000&drip=1",
                    port => $srv->{port}, timeout => 20);
    ok t_cmp($r->{body} eq pattern($size) ? 1 : 0, 1, 'bursts through a 4M spool limit: exact bytes');
    ok t_cmp(error_log_of($srv) =~ /BGD013/ ? 'BGD013' : 'none', 'none',
             'no fall back to the foreground at BgDeliverSpoolLimit');
    $srv->{stop}->();
}

# 3. A stop with deliveries in flight ends them and the server promptly.
{
    my $srv = private_server(<<'CONF');
<Location /bgdeliver/>
    BgDeliver On
</Location>
CONF
    my @kids = server_pids($srv->{pid});
    my @held = map { hold_delivery('/bgdeliver/files/srv-1m.bin', port => $srv->{port}) } 1 .. 5;
    my $t0 = time;
    kill 'TERM', $srv->{pid};
    my $gone = wait_until(10, sub { !grep { kill 0, $_ } $srv->{pid}, @kids });
    my $t = time - $t0;
    ok t_cmp($gone ? 1 : 0, 1, sprintf('stop: server and children gone (%.1f s)', $t));
    ok t_cmp($t < 5 ? 1 : 0, 1, 'stop: within seconds');
    # Each held connection must reach EOF or a reset within seconds
    # (kernel buffers drained), never hang.
    my $closed = 0;
    for my $s (@held) {
        my $sel = IO::Select->new($s);
        my $end = time + 5;
        while (time < $end) {
            last unless $sel->can_read($end - time);
            my $n = sysread($s, my $buf, 65536);
            if (!$n) { $closed++; last }
        }
    }
    ok t_cmp($closed, 5, 'stop: the clients see their connections end');
    $srv->{stop}->();
}

# 4. A spool file that cannot be created (the directory is gone): the
# capture ends, the response goes out in the foreground with every byte,
# and that is logged once, not once per buffer beyond the memory limit.
{
    my $srv = spool_server();
    rmdir "$srv->{dir}/spool" or die "rmdir: $!";
    my $r = request(GET => '/gen?size=2000000&chunk=16384', port => $srv->{port});
    ok t_cmp($r->{complete} && $r->{body} eq pattern(2_000_000) ? 1 : 0, 1,
             'no spool: the response is complete, exact bytes');
    my @logged = error_log_of($srv) =~ /BGD010: .*in the foreground/g;
    ok t_cmp(scalar(@logged), 1, 'no spool: BGD010 logged once');
    ok t_cmp(status_of($srv), qr/BgDeliverInFlight: 0/,
             'no spool: no slot left behind');

    # A paced response keeps its line: its handler waits for it, with no
    # more than the memory limit held, instead of sending the rest at
    # full speed in the foreground.
    my $m = length error_log_of($srv);
    my $t0 = time;
    $r = request(GET => '/paced-gen?size=150000&chunk=8192&pace=75000,0',
                 port => $srv->{port}, timeout => 15);
    my $t = time - $t0;
    my $log = substr(error_log_of($srv), $m);
    ok t_cmp(join(' ', $r->{status},
                  ($r->{body} // '') eq pattern(150_000) ? 'exact' : 'wrong bytes',
                  ($t > 1.7 && $t < 4) ? 'paced' : sprintf('%.2f s', $t)),
             '200 exact paced',
             sprintf('no spool, paced: the handler waits for its line (%.2f s)', $t));
    @logged = $log =~ /BGD010: .*waits for its line/g;
    ok t_cmp(scalar(@logged), 1, 'no spool, paced: BGD010 logged once, saying so');
    $srv->{stop}->();
}

# 5. A client that stops reading: with BgDeliverMinRate 0 and no
# BgDeliverIdleTimeout, Timeout is the limit, as for any write of stock
# Apache; an idle timeout longer than the engine's bounded waits
# (Timeout / 2) is reached too.
{
    my $srv = private_server(<<'CONF', std_modules => ['alias']);
Timeout 2
Alias /idle/ @DOCROOT@/bgdeliver/files/
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverMinRate 0
</Location>
<Location /idle/>
    BgDeliver On
    BgDeliverMinRate 0
    BgDeliverIdleTimeout 3
</Location>
CONF
    my $t0 = time;
    my $a = hold_delivery('/bgdeliver/files/srv-1m.bin', port => $srv->{port});
    my $b = hold_delivery('/idle/srv-1m.bin', port => $srv->{port});
    my ($t_timeout, $t_idle);
    wait_until(10, sub {
        my $log = error_log_of($srv);
        $t_timeout //= time if $log =~ /BGD004: .*: timeout$/m;
        $t_idle //= time if $log =~ /BGD004: .*: idle-timeout$/m;
        return $t_timeout && $t_idle;
    });
    t_debug(sprintf 'dropped after %.1f s (Timeout 2) and %.1f s (idle 3)',
            ($t_timeout // 99) - $t0, ($t_idle // 99) - $t0);
    ok t_cmp(defined $t_timeout ? 1 : 0, 1, 'a stalled client is dropped at Timeout');
    ok t_cmp(defined $t_timeout && $t_timeout - $t0 >= 1.5 ? 1 : 0, 1,
             'not before Timeout');
    ok t_cmp(defined $t_idle ? 1 : 0, 1,
             'BgDeliverIdleTimeout longer than Timeout / 2 is reached');
    ok t_cmp(defined $t_idle && $t_idle - $t0 >= 2.5 ? 1 : 0, 1,
             'not before BgDeliverIdleTimeout');
    close $_ for $a, $b;
    ok t_cmp(wait_until(5, sub { status_of($srv) =~ /BgDeliverDropped: 2\n/ })
             ? 1 : 0, 1, 'both counted as dropped by the slow-read rules');
    $srv->{stop}->();
}

# 6. A child killed with deliveries in flight never runs its pools'
# cleanups: its slots must not keep its clients at their cap.
{
    my $srv = private_server(<<'CONF');
BgDeliverMaxPerClient 1
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverOverflow reject
</Location>
CONF
    my ($kid) = server_pids($srv->{pid});
    my $s = hold_delivery('/bgdeliver/files/srv-1m.bin', port => $srv->{port});
    kill 'KILL', $kid;
    close $s;
    my $new = wait_until(10, sub { grep { $_ != $kid } server_pids($srv->{pid}) });
    ok t_cmp($new ? 1 : 0, 1, 'a new child replaces the killed one');
    ok t_cmp(wait_until(5, sub { status_of($srv) =~ /BgDeliverInFlight: 0/ })
             ? 1 : 0, 1, "the killed child's delivery is no longer in flight");
    my %st = status_of($srv) =~ /^BgDeliver(\w+): (\d+)$/mg;
    ok t_cmp("$st{Started} = " . ($st{Completed} + $st{Aborted} + $st{Dropped}),
             "1 = 1", 'the killed delivery counts as aborted: the totals add up');
    my $r = request(GET => '/bgdeliver/files/srv-1m.bin', port => $srv->{port},
                    rcvbuf => 8192, rate => 5_000_000);
    ok t_cmp($r->{status}, 200, 'its client is not held at BgDeliverMaxPerClient');
    $srv->{stop}->();
}

# 6b. What the server sets holds under two <Location> sections that both
# use the module: httpd merges those with each other first, and a merge
# that filled in defaults made them override the server's values.
{
    my $srv = private_server(<<'CONF', std_modules => ['alias']);
BgDeliverMaxTime 1
Alias /inner/ @DOCROOT@/bgdeliver/files/
<Location />
    BgDeliver On
</Location>
<Location /inner/>
    BgDeliverIdleTimeout 30
</Location>
CONF
    my $t0 = time;
    my $r = request(GET => '/inner/srv-1m.bin', port => $srv->{port},
                    rcvbuf => 8192, rate => 200_000, timeout => 10);
    my $t = time - $t0;
    ok t_cmp(!$r->{complete} && $t < 3 ? 1 : 0, 1,
             sprintf('server-level BgDeliverMaxTime under two merged sections: cut (%.1f s)', $t));
    ok t_cmp(error_log_of($srv), qr/BGD004: dropping slow client .*: max-time/,
             'logged as max-time');
    $srv->{stop}->();
}

# 6c. BgDeliverMaxTime also ends a response whose handler is still
# streaming it, to a client that keeps up (nothing is ever handed off),
# and after it fell back to the foreground at BgDeliverSpoolLimit; but not
# a small response that is late only because its handler was slow.
{
    my $srv = private_server(<<'CONF', test_modules => ['bgd_test']);
<Location /gen>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMaxTime 1
</Location>
<Location /gen-limited>
    SetHandler bgd-test-gen
    BgDeliver On
    BgDeliverMaxTime 1
    BgDeliverSpoolLimit 32k
    BgDeliverMemoryLimit 16k
</Location>
CONF
    for my $p (['/gen', 'streaming', '&flush=1'], ['/gen-limited', 'after BGD013', '']) {
        my $t0 = time;
        my $r = request(GET => "$p->[0]?size=100000000&chunk=16384&delay=20$p->[2]",
                        port => $srv->{port}, timeout => 6);
        my $t = time - $t0;
        ok t_cmp(!$r->{complete} && $t < 3 ? 1 : 0, 1,
                 sprintf("BgDeliverMaxTime 1, $p->[1]: cut (%.1f s, %d bytes)",
                         $t, length($r->{body} // '')));
    }
    my @cut = error_log_of($srv) =~ /BGD004: dropping slow client .*: max-time/g;
    ok t_cmp(scalar(@cut), 2, 'both logged as max-time (BGD004)');
    my $r = request(GET => '/gen?size=2000&chunk=1000&delay=1500',
                    port => $srv->{port}, timeout => 6);
    ok t_cmp("$r->{status} " . length($r->{body} // ''), '200 2000',
             'a slow handler\'s small response past BgDeliverMaxTime: whole');
    $srv->{stop}->();
}

# 6d. Each background delivery of a file leaves its handle in the
# connection's pool: a connection that is never closed for its number of
# requests (MaxKeepAliveRequests 0) ends after 100 of them, announced.
{
    my $srv = private_server(<<'CONF');
MaxKeepAliveRequests 0
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverMinSize 0
</Location>
CONF
    gen_file('bgdeliver/files/srv-20k.bin', 20_000);
    my $s = http_connect(port => $srv->{port});
    my ($closed_at, $bad) = (0, 0);
    for my $i (1 .. 101) {
        http_send($s, 'GET', '/bgdeliver/files/srv-20k.bin');
        my $r = read_response($s);
        $bad++ unless $r->{status} == 200 && length($r->{body}) == 20_000;
        if (($r->{headers}{connection} // '') =~ /close/i) {
            $closed_at = $i;
            last;
        }
    }
    ok t_cmp($bad, 0, 'a hundred deliveries on one connection, all whole');
    ok t_cmp($closed_at, 101, 'the one after the hundredth says Connection: close');
    my $r = read_response($s, timeout => 3);
    ok t_cmp($r->{eof} && !$r->{status} ? 1 : 0, 1, 'and the connection ends after it');
    close $s;
    $srv->{stop}->();
}

# 7. The event MPM drops a connection that it cannot add to its pollset in
# CONN_STATE_ASYNC_WAITIO (AH10503), without the pre_close_connection
# hook: only the connection pool's cleanup sees the delivery go.  It must
# still be logged (as aborted) and counted.  A preloaded shim makes that
# one epoll_ctl() fail.
{
    my ($srv, $fault) = faulty_server('BGD_EPOLL_FAULT', <<'CONF');
LogFormat "%U %>s %{bgdeliver}n %X" bgd
CustomLog @DIR@/access_log bgd
<Location /bgdeliver/>
    BgDeliver On
</Location>
CONF
    # The engine takes the connection at the hand-off, and the MPM is asked
    # to wait for it (a timed wait: readability): that add fails.
    my $s = http_connect(port => $srv->{port}, rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/srv-1m.bin');
    my $dropped = wait_until(5, sub { error_log_of($srv) =~ /AH10503/ });
    ok t_cmp($dropped ? 1 : 0, 1, 'the MPM dropped the waiting connection (AH10503)');
    my $line = wait_until(5, sub {
        open my $fh, '<', "$srv->{dir}/access_log" or return;
        return (grep { m{^/bgdeliver/files/srv-1m\.bin } } <$fh>)[0];
    });
    ok t_cmp($line // '', qr{^/bgdeliver/files/srv-1m\.bin 200 aborted X$},
             'the delivery is logged, as aborted');
    ok t_cmp(error_log_of($srv), qr/BGD034: the connection was closed under a background delivery/,
             'and its end is noted (BGD034)');
    my %st;
    wait_until(5, sub {
        %st = status_of($srv) =~ /^BgDeliver(\w+): (\d+)$/mg;
        return defined $st{InFlight} && $st{InFlight} == 0;
    });
    ok t_cmp("$st{Started} = " . ($st{Completed} + $st{Aborted} + $st{Dropped})
             . ", in flight $st{InFlight}", "1 = 1, in flight 0",
             'counted as aborted: the totals add up, no slot left');
    close $s;
    $srv->{stop}->();
    rmdir $fault;
}

# 8. Where the MPM waits for the socket (here over TLS through a
# connection filter that the engine threads do not know, mod_dumpio's),
# its wait is bounded by its own Timeout, which can beat the watchdog to
# the same rule (here always: the idle timeout is longer than Timeout).
# The drop must look like any other: logged (BGD004), counted, and the
# connection reset.
{
    my $certs = self_signed_cert('bgd_tls');
    my $srv = private_server(<<"CONF", std_modules => [qw(socache_shmcb ssl dumpio)]);
DumpIOOutput On
LogLevel dumpio:trace7
SSLEngine on
SSLCertificateFile "$certs/cert.pem"
SSLCertificateKeyFile "$certs/key.pem"
SSLSessionCache "shmcb:\@DIR\@/ssl_scache(512000)"
Timeout 2
LogFormat "%U %>s %{bgdeliver}n %X" bgd
CustomLog \@DIR\@/access_log bgd
<Location /bgdeliver/>
    BgDeliver On
    BgDeliverMinRate 0
    BgDeliverIdleTimeout 5
</Location>
CONF
    my $s = http_connect(port => $srv->{port}, ssl => 1, rcvbuf => 4096);
    http_send($s, 'GET', '/bgdeliver/files/srv-1m.bin');
    my $line = wait_until(8, sub {
        open my $fh, '<', "$srv->{dir}/access_log" or return;
        return (grep { m{^/bgdeliver/files/srv-1m\.bin } } <$fh>)[0];
    });
    ok t_cmp($line // '', qr{^/bgdeliver/files/srv-1m\.bin 200 timeout X$},
             'TLS, the MPM\'s Timeout: logged as timeout');
    ok t_cmp(error_log_of($srv), qr/BGD004: dropping slow client 127\.0\.0\.1 after \d+ of \d+ bytes in \d+ ms: timeout/,
             'and noted as a drop (BGD004), like the watchdog\'s');
    my %st = request(GET => '/bgdeliver-status?auto', port => $srv->{port},
                     ssl => 1)->{body} =~ /^BgDeliver(\w+): (\d+)$/mg;
    ok t_cmp("dropped $st{Dropped}, in flight $st{InFlight}", 'dropped 1, in flight 0',
             'counted as dropped, no slot left');
    close $s;
    $srv->{stop}->();
}

# 9. Out of descriptors for timers (a preloaded shim makes timerfd_create()
# fail): a producer with nothing ready for a second is asked again on its
# schedule, by a worker that waits, not at once in a loop until Timeout.
{
    my ($srv, $fault) = faulty_server('BGD_TIMERFD_FAULT', <<'CONF',
<Location /api/producer>
    SetHandler bgd-test-producer
</Location>
CONF
                                      test_modules => ['bgd_test']);
    my $r = request(GET => '/api/producer?size=1000&idle=1000', port => $srv->{port},
                    timeout => 10);
    my ($calls) = (wait_until(5, sub {
        error_log_of($srv) =~ /bgd-test: producer \?size=1000&idle=1000 called (\d+) times/ ? $1 : undef;
    }) // -1);
    my $log = error_log_of($srv);
    my $bgd018 = () = $log =~ /BGD018: cannot arm a timed wait/g;
    ok t_cmp(join(' ', $r->{status}, length($r->{body} // ''), $bgd018), '200 1000 1',
             'timers unavailable: the producer\'s response, BGD018 once');
    ok t_cmp($calls > 0 && $calls < 50 ? 1 : 0, 1,
             "timers unavailable: the producer asked on its schedule ($calls times in 1 s)");
    unlink "$fault/now";
    $srv->{stop}->();
    rmdir $fault;
}

# 10. A connection filter below the engine that it does not know (here
# mod_dumpio's) may change bytes: the engine threads leave such
# deliveries to the workers, and say so once per child (BGD036).
# mod_reqtimeout's filter, loaded in every private server as in Debian's
# default configuration, only watches.
{
    gen_file('bgdeliver/files/srv-200k.bin', 200_000);
    # (mod_dumpio adds its filter only where it logs at trace7.)
    my $srv = private_server(<<'CONF', std_modules => ['dumpio']);
DumpIOOutput On
LogLevel dumpio:trace7
<Location /bgdeliver/>
    BgDeliver On
</Location>
CONF
    for (1 .. 2) {
        my $r = request(GET => '/bgdeliver/files/srv-200k.bin', port => $srv->{port},
                        rcvbuf => 4096, rate => 2_000_000);
        ok t_cmp(length($r->{body} // ''), 200_000, "through dumpio_out: delivery $_ whole");
    }
    my $said = () = error_log_of($srv) =~ /BGD036: the connection filter dumpio_out is below the engine/gi;
    ok t_cmp($said, 1, 'an unknown connection filter: said once (BGD036)');
    $srv->{stop}->();
}
