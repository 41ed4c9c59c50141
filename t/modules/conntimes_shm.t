# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Without its shared memory the module costs the server nothing but its
# statistics: a private server whose anonymous shared mappings of 256 KB
# and more fail (the fault shim, t/c-src/epoll_fault.c; the scoreboard is
# smaller) starts, says why (CT0007), serves and logs requests with their
# phases, and answers the timing status page with 503 (CT0005).  A graceful
# restart that changes the segment's layout of a running server, and cannot
# map the new one, must not stop the server either.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use FindBin;
use Time::HiRes qw(sleep);
use lib $FindBin::Bin;
use conntimes_util;
use Bgd::Test qw(private_server request slurp wait_until);

plan tests => 11, need_module('conntimes', 'ct_test');

my $vars = Apache::Test::vars();
my $shim = "$vars->{top_dir}/build/t/epoll_fault.so";
my $mpm = ct_mpm();
$mpm = 'event' unless $mpm =~ /^(event|worker|prefork)$/;

my $conf = <<'CONF' . ct_private_locations();
LogFormat "%U %>s run=%{run}^CT total=%{total}^CT" ct
CustomLog "@DIR@/access_log" ct
CONF

# A private server with the shim: anonymous shared mappings of 256 KB and
# more fail, from the start or (with $armed) while that file exists.
sub server {
    my ($armed) = @_;
    my $fault = 256 * 1024 . ($armed ? ":$armed" : '');
    return private_server($conf, mpm => $mpm, modules => ['conntimes'],
                          test_modules => ['ct_test'],
                          env => { BGD_SHM_FAULT => $fault,
                                   LD_PRELOAD => join(' ', grep { $_ }
                                                      $ENV{LD_PRELOAD}, $shim) });
}

sub count { my ($log, $re) = @_; return scalar(() = $log =~ /$re/g) }

# Graceful restart onto a configuration whose segment has another layout
# (more handler slots): returns once the new generation is up.
sub graceful_new_layout {
    my ($srv, $errlog) = @_;
    open my $fh, '>>', "$srv->{dir}/httpd.conf" or die $!;
    print $fh "ConntimesMaxHandlers 40\n";
    close $fh;
    my $up = count($errlog->(), qr/resuming normal operations/);
    kill 'USR1', $srv->{pid};
    wait_until(15, sub { count($errlog->(), qr/resuming normal operations/) > $up });
    sleep 0.3;
}

sub logged_run {
    my ($dir) = @_;
    my $line;
    wait_until(5, sub {
        ($line) = grep { m{^/sleep } }
                  split /\n/, (-e "$dir/access_log" ? slurp("$dir/access_log") : '');
        return $line;
    });
    my ($run) = ($line // '') =~ /run=(\d+)/;
    return $run;
}

# From the start.
{
    my $srv = server();
    my $dir = $srv->{dir};
    my $errlog = sub { -e "$dir/error_log" ? slurp("$dir/error_log") : '' };
    ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1,
             "a $mpm server whose segment cannot be mapped runs");
    ok t_cmp($errlog->(), qr/CT0007: cannot create \d+ bytes of anonymous shared memory: no aggregates/,
             'CT0007 says what is lost');
    my $r = request(GET => '/sleep?ms=200', port => $srv->{port});
    ok t_cmp($r->{status}, 200, 'a request is served');
    my $run = logged_run($dir);
    ok t_cmp(defined $run && $run >= 190_000 && $run < 1_000_000 ? 1 : 0, 1,
             'its run phase is logged: ' . ($run // 'none') . ' us for a 200 ms handler');
    $r = request(GET => '/status?json', port => $srv->{port});
    ok t_cmp($r->{status}, 503, 'the timing status page: 503');
    wait_until(5, sub { $errlog->() =~ /CT0005/ });
    ok t_cmp($errlog->(), qr/CT0005: no shared memory \(CT0007 at start-up\)/,
             'CT0005 points at CT0007');
    $srv->{stop}->();
}

# A running server with its segment, restarted gracefully onto a new
# layout that cannot be mapped: the old segment is gone, the server stays.
{
    my $armed = "$vars->{t_logs}/shm-fault.$$";
    unlink $armed;
    my $srv = server($armed);
    my $dir = $srv->{dir};
    my $errlog = sub { -e "$dir/error_log" ? slurp("$dir/error_log") : '' };
    my $r = request(GET => '/status?json', port => $srv->{port});
    ok t_cmp($r->{status}, 200, 'without the fault: the status page answers');
    open my $t, '>', $armed or die "$armed: $!";
    close $t;
    graceful_new_layout($srv, $errlog);
    unlink $armed;
    ok t_cmp(kill(0, $srv->{pid}) ? 1 : 0, 1, 'after the graceful restart: still running');
    ok t_cmp($errlog->(), qr/CT0006: layout changed.*\n(?:.*\n)*.*CT0007: cannot create/,
             'CT0006, then CT0007');
    $r = request(GET => '/sleep?ms=0', port => $srv->{port});
    ok t_cmp($r->{status}, 200, 'and serves');
    $r = request(GET => '/status?json', port => $srv->{port});
    ok t_cmp($r->{status}, 503, 'its status page: 503');
    $srv->{stop}->();
}
