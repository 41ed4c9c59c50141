# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The gauge of connections suspended by the MPM is counted per child: a
# child killed with suspended connections takes its count with it.  A
# private event server with one child; a handler of mod_ct_test returns
# SUSPENDED and never resumes (the 2.4 event MPM counts such a connection
# and forgets it), so the count can only go when the child does.
#
# Not tested: a suspended connection that ends normally.  The 2.4 event MPM
# has no public way to resume a SUSPENDED connection (mod_bgdeliver parks
# its connections in CONN_STATE_ASYNC_WAITIO instead, which the gauge does
# not count).
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
use Bgd::Test qw(private_server server_pids wait_until);

plan tests => 12, need need_module('conntimes', 'ct_test', 'status'),
    { 'only the event MPM suspends connections' => ct_mpm() eq 'event' };

my $conf = <<'CONF' . ct_private_locations();
<Location /suspend>
    SetHandler ct-suspend
</Location>
CONF
my $srv = private_server($conf, mpm => 'event',
                         mpm_conf => "StartServers 1\nServerLimit 1\n"
                                   . "ThreadsPerChild 4\nMaxRequestWorkers 4\n"
                                   . "MinSpareThreads 1\nMaxSpareThreads 4\n",
                         modules => ['conntimes'], test_modules => ['ct_test']);
my $port = $srv->{port};

# The body of GET $path on the private server, '' when it does not answer.
sub get {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or return '';
    print $s "GET $path HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    my $resp = do { local $/; <$s> } // '';
    return $resp =~ m{^HTTP/1\.\d 200 .*?\r\n\r\n(.*)}s ? $1 : '';
}

# The gauge as ?auto gives it (undef when the page does not answer).
sub gauge_auto {
    return get('/status?auto') =~ /^ConntimesSuspended: (\d+)$/m ? $1 : undef;
}

# The gauge in every output: ?auto, ?json, ?prometheus, the HTML page and
# mod_status' ?auto.
sub gauges {
    my $j = eval { decode_json(get('/status?json')) } || {};
    my $prom = get('/status?prometheus');
    my $html = get('/status');
    my $st = get('/server-status?auto');
    return join ' ',
        gauge_auto() // '-',
        $j->{current}{suspended} // '-',
        $prom =~ /^conntimes_suspended_connections (\d+)$/m ? $1 : '-',
        $html =~ m{connections suspended by the MPM</td><td>(\d+)<} ? $1 : '-',
        $st =~ /^ConntimesSuspended: (\d+)$/m ? $1 : '-';
}

my @kids = server_pids($srv->{pid});
ok t_cmp(scalar(@kids), 1, 'one child');
ok t_cmp(gauges(), '0 0 0 0 0', 'nothing suspended at start');

# Two connections the handler suspends: no response ever comes, so the
# sockets are only kept open.
my @held = map {
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or die "connect: $!";
    print $s "GET /suspend HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    $s
} 1 .. 2;
ok t_cmp(wait_until(5, sub { (gauge_auto() // 0) == 2 }) ? 2 : gauge_auto(),
         2, 'two suspended connections counted');
ok t_cmp(gauges(), '2 2 2 2 2', 'in every output');
ok t_cmp(join(' ', server_pids($srv->{pid})), $kids[0], 'still the same child');

# Kill the child: its suspended connections go with it.
ok t_cmp(kill('KILL', $kids[0]), 1, "child $kids[0] killed");
my @new;
t_debug('the parent starts a new child, which answers');
ok wait_until(15, sub {
    @new = grep { $_ != $kids[0] } server_pids($srv->{pid});
    @new && defined gauge_auto();
});
t_debug("new child: @new");
ok t_cmp(kill(0, $kids[0]) ? 1 : 0, 0, 'the old child is gone');
ok t_cmp(scalar(@new), 1, 'one new child');
ok t_cmp(gauges(), '0 0 0 0 0', 'the killed child\'s count is gone');
close $_ for @held;

# The new child counts in the freed entry (ServerLimit 1: the only one).
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
    or die "connect: $!";
print $s "GET /suspend HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
ok t_cmp(wait_until(5, sub { (gauge_auto() // 0) == 1 }) ? 1 : gauge_auto(),
         1, 'the new child counts its own');
open my $log, '<', "$srv->{dir}/error_log" or die $!;
ok t_cmp(scalar(grep { /CT0013/ } <$log>), 0, 'no child went without an entry');
