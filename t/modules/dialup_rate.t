# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# mod_dialup: rate and first-byte latency of each standard on real sockets,
# inheritance of nested scopes, ModemStandard None, per-request selection
# by environment variables (cookie, header, query string), .htaccess, and
# the deliveries as the engine's status page shows them.
#
# Every transfer runs at the same time (one forked client each, started
# one after another), so the whole file takes about as long as the slowest
# one (about 7.5 s).  Transfers that check the +-1% claim of the issue
# last at least 5 s; the others are short and get +-2% (a few ms of timer
# and scheduling noise over ~1 s).
#
# The engine paces wire bytes: byte k leaves at latency + k / rate.  So the
# first byte of W wire bytes (status line + headers + body) arrives at the
# latency and the last one (W - 1) / rate later.
#
# Under prefork (and worker) each paced response holds its process (the
# documented fallback): the 24 clients queue for processes, so the first-
# byte latency is only checked on the event MPM; the rate, measured from
# the first byte, is checked everywhere.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Bgd::Test qw(parallel_requests bgd_status pattern_md5 log_mark
                 error_log_since mpm_name);

my @tests;     # [name, spec, checks...] filled below

# Bytes per second on the wire for a line of $bits bit/s (8 bits a byte
# unless async framing: 10).
sub bps { my ($bits, $framing) = @_; $framing ||= 8;
          return $bits / $framing }

# A paced transfer of generated content: $body bytes under $path.
sub paced {
    my (%t) = @_;
    my $size = $t{body};
    my $path = $t{path} =~ /\?/ ? $t{path} : "$t{path}?size=$size&chunk=$size";
    push @tests, { %t, spec => { path => $path, headers => $t{headers},
                                 gaps => $t{gaps} } };
}

# >= 5 s transfers: the +-1% claim.
paced(name => 'V.22',      path => '/dialup/v22/gen',    rate => bps(1200),
      latency => 0.150, body => 600,    tol => 0.01);
paced(name => 'V.21 (37.5 B/s)',
      path => '/dialup/v21/gen', rate => bps(300), latency => 0.150,
      body => 40, tol => 0.01);
paced(name => 'V.32bis',   path => '/dialup/v32bis/gen', rate => bps(14400),
      latency => 0.150, body => 9000,  tol => 0.01);
paced(name => 'V.92',      path => '/dialup/v92/gen',    rate => bps(56000),
      latency => 0.120, body => 36000, tol => 0.01, gaps => 1,
      max_gap => 0.100);
paced(name => 'ISDN-128k', path => '/dialup/isdn/gen',   rate => bps(128000),
      latency => 0.040, body => 82000, tol => 0.01);
paced(name => 'T1 (alias i-was-rich-and-got-a-leased-line)',
      path => '/dialup/t1/gen', rate => bps(1544000), latency => 0.020,
      body => 1_000_000, tol => 0.01);
paced(name => 'Slow 3G',   path => '/dialup/slow3g/gen', rate => 50_000,
      latency => 2.000, body => 255_000, tol => 0.01);

# Short transfers.
paced(name => 'Fast 3G',   path => '/dialup/fast3g/gen', rate => 180_000,
      latency => 0.5625, body => 180_000, tol => 0.02);
paced(name => 'V.92 DialupFraming async (inherits V.92)',
      path => '/dialup/v92/async/gen', rate => bps(56000, 10),
      latency => 0.120, body => 5400, tol => 0.02);
paced(name => 'V.92 DialupLatency 300ms (inherits the rate)',
      path => '/dialup/v92/latency/gen', rate => bps(56000),
      latency => 0.300, body => 6800, tol => 0.02);
paced(name => 'ModemStandard V.22 nested in V.92',
      path => '/dialup/v92/v22/gen', rate => bps(1200), latency => 0.150,
      body => 60, tol => 0.02);
paced(name => 'ModemStandard V.22 nested under DialupLatency + DialupFraming: both dropped',
      path => '/dialup/v92/async/latency/v22/gen', rate => bps(1200),
      latency => 0.150, body => 60, tol => 0.02);
paced(name => 'ModemStandard V.32 nested under DialupBurst 4k: the burst stays',
      path => '/dialup/v92/burst/v32/gen', rate => bps(9600), latency => 0.150,
      burst => 4096, body => 5300, tol => 0.02);
paced(name => 'DialupRate 20k nested in ModemStandard None',
      path => '/dialup/v92/none/rate/gen', rate => bps(20000),
      latency => 0, body => 2300, tol => 0.02);
paced(name => 'DialupBurst 4k + DialupPulse 50ms (inherits V.92)',
      path => '/dialup/v92/burst/gen', rate => bps(56000), latency => 0.120,
      burst => 4096, body => 11000, tol => 0.02, gaps => 1,
      max_gap => 0.050);
paced(name => 'DialupRate 64k + DialupLatency 0.05s',
      path => '/dialup/custom/gen', rate => bps(64000), latency => 0.050,
      body => 7800, tol => 0.02);
paced(name => '.htaccess ModemStandard V.32',
      path => '/dialup-ht/small.txt', rate => bps(9600), latency => 0.150,
      body => 27, tol => 0.02);

# Per-request selection (the README recipe's mechanism, in
# t/conf/dialup.conf.in).
paced(name => 'cookie modem=ISDN-64k', path => '/dialup/any/gen',
      headers => { Cookie => 'lang=en; modem=ISDN-64k' },
      rate => bps(64000), latency => 0.040, body => 7800, tol => 0.02);
paced(name => 'header X-Modem-Rate: 33.6k + X-Modem-Latency: 250',
      path => '/dialup/any/gen',
      headers => { 'X-Modem-Rate' => '33.6k', 'X-Modem-Latency' => '250' },
      rate => bps(33600), latency => 0.250, body => 4000, tol => 0.02);
paced(name => 'query string modem=V.32 (mod_rewrite [E=])',
      path => '/dialup/any/gen?modem=V.32&size=1000&chunk=1000',
      rate => bps(9600), latency => 0.150, body => 1000, tol => 0.02);
paced(name => 'unknown cookie modem=V.99 keeps ModemStandard V.92',
      path => '/dialup/v92/gen', headers => { Cookie => 'modem=V.99' },
      rate => bps(56000), latency => 0.120, body => 6800, tol => 0.02);
paced(name => 'cookie modem=V.22 overrides ModemStandard V.92',
      path => '/dialup/v92/gen', headers => { Cookie => 'modem=V.22' },
      rate => bps(1200), latency => 0.150, body => 100, tol => 0.02);

# Not paced.
paced(name => 'ModemStandard None nested in V.92', unpaced => 1,
      path => '/dialup/v92/none/gen', body => 200_000);
paced(name => 'cookie modem=None in V.92', unpaced => 1,
      path => '/dialup/v92/gen', headers => { Cookie => 'modem=None' },
      body => 200_000);
paced(name => 'ModemStandard None ignores cookie modem=V.92', unpaced => 1,
      path => '/dialup/v92/none/gen', headers => { Cookie => 'modem=V.92' },
      body => 200_000);
paced(name => 'unknown cookie modem=V.99 is ignored', unpaced => 1,
      path => '/dialup/any/gen', headers => { Cookie => 'modem=V.99' },
      body => 200_000);
paced(name => 'no ModemStandard, no variable', unpaced => 1,
      path => '/dialup/any/gen', body => 200_000);

my $per_paced = 3;      # status + bytes, latency, rate
my $n = 0;
for (@tests) { $n += $_->{unpaced} ? 2 : $per_paced + ($_->{max_gap} ? 1 : 0) }
plan tests => $n + 5, need need_module('mod_dialup.c'),
    need_module('mod_bgdeliver.c'), need_module('mod_bgd_test.c');

my $mpm = mpm_name();
my $mark = log_mark();
my $status;
my @res = parallel_requests(
    sub {
        # While everything is in flight: the engine lists the deliveries
        # with the standard's name and the target rate in bytes/s.
        select undef, undef, undef, 2;
        $status = bgd_status();
    },
    map { $_->{spec} } @tests);

for my $i (0 .. $#tests) {
    my $t = $tests[$i];
    my $r = $res[$i];
    my $name = $t->{name};
    my $body_ok = $r->{status} == 200 && $r->{complete}
                  && $r->{length} == $t->{body}
                  && ($t->{path} =~ /gen/ ? $r->{md5} eq pattern_md5($t->{body}) : 1);
    ok t_cmp($body_ok ? 1 : 0, 1, "$name: 200 with the exact body"
             . ($body_ok ? '' : " (status $r->{status}, $r->{length} bytes"
                . ($r->{error} ? ", $r->{error}" : '') . ')'));
    my $ttfb = ($r->{t_first} || 0) - $r->{t_start};
    my $span = ($r->{t_end} || 0) - ($r->{t_first} || 0);
    if ($t->{unpaced}) {
        ok t_cmp($span < 0.1 ? 1 : 0, 1,
                 sprintf("%s: not paced (%d bytes in %.3f s)", $name,
                         $r->{length}, $span));
        next;
    }
    my $latency = $t->{latency};
    if ($mpm eq 'event') {
        # The server is within a few ms (curl, one client at a time; the
        # benchmark's C clients: 3 ms); two dozen forked Perl clients on
        # two CPUs add up to ~10 ms of their own to when they see the
        # byte, and on a freshly installed machine once 15.6 ms.  Late is
        # theirs as much as ours; early would be ours alone.
        ok t_cmp($ttfb - $latency >= -0.015 && $ttfb - $latency <= 0.030
                 ? 1 : 0, 1,
                 sprintf("%s: first byte after %.1f ms (want %.1f, -15 "
                         . "to +30 ms)", $name, $ttfb * 1000,
                         $latency * 1000));
    }
    else {
        skip "$name: latency not checked under $mpm (clients queue for "
             . "a process)";
    }
    # Wire bytes: what the client read before the body, plus the body.
    my $wire = $r->{header_bytes} + $r->{length};
    my $burst = $t->{burst} || 0;
    my $want = ($wire - 1 - $burst) / $t->{rate};
    my $err = $span / $want - 1;
    my $achieved = ($wire - 1 - $burst) / ($span || 1e-9);
    # Below a second, a few ms of timer noise weigh more than 2%.
    my $allowed = $t->{tol} * $want;
    $allowed = 0.010 if $allowed < 0.010;
    ok t_cmp(abs($span - $want) <= $allowed ? 1 : 0, 1,
             sprintf("%s: %d wire bytes, %.3f s from first to last = "
                     . "%.1f B/s, target %d B/s (error %+.2f%%, allowed "
                     . "+-%g%% or 10 ms)", $name, $wire, $span, $achieved,
                     $t->{rate}, $err * 100, $t->{tol} * 100));
    if ($t->{max_gap}) {
        # Pulses: never a pause much longer than the pulse length (one
        # second bursts would show gaps of a second).
        ok t_cmp($r->{max_gap} <= $t->{max_gap} + 0.015 ? 1 : 0, 1,
                 sprintf("%s: longest pause between arrivals %.1f ms "
                         . "(pulse %d ms)", $name, $r->{max_gap} * 1000,
                         $t->{max_gap} * 1000));
    }
}

# The status page, sampled 2 s after the last client started.
my %by_label;
for my $d (@{ $status->{deliveries} || [] }) {
    push @{ $by_label{$d->{label}} }, $d;
}
t_debug(join ', ', map { "$_=" . join('/', map { $_->{target_rate} } @{ $by_label{$_} }) }
        sort keys %by_label);
for my $c (['V.92', 7000], ['V.22', 150], ['Slow-3G', 50000],
           ['i-was-rich-and-got-a-l', 193000]) {
    my ($label, $rate) = @$c;
    my ($hit) = grep { $_->{label} =~ /^\Q$label\E/ && $_->{target_rate} == $rate }
                map { @$_ } values %by_label;
    ok t_cmp($hit ? 1 : 0, 1,
             "bgdeliver-status lists a delivery labelled $label at $rate B/s");
}

# The unknown standard in the cookie is reported (at info: it comes from
# the client), naming the valid ones.
my $log = error_log_since($mark);
ok t_cmp($log =~ /DLP006: ignoring dialup-standard 'V\.99'.*V\.92/ ? 1 : 0, 1,
         'unknown dialup-standard value logged with the valid names');
