# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Configuration errors are caught at start-up with a message that names the
# directive, the value and what is allowed; good values pass.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Bgd::Test qw(configtest);

my @bad = (
    [ 'BgDeliver maybe',                  qr/BgDeliver: 'maybe' is not valid; expected On or Off/ ],
    # The core's FLAG check took the first word and ignored the rest.
    [ 'BgDeliver On Off',                 qr/BgDeliver takes one argument/ ],
    [ 'BgDeliverMinSize 12x',             qr/BgDeliverMinSize: '12x' is not a valid size.*k, M or G/ ],
    [ 'BgDeliverMinSize -5',              qr/BgDeliverMinSize: '-5' is not a valid size/ ],
    # apr_strtoi64() alone takes a sign and leading spaces.
    [ 'BgDeliverMinSize +64k',            qr/BgDeliverMinSize: '\+64k' is not a valid size/ ],
    [ 'BgDeliverMinSize " 64k"',          qr/BgDeliverMinSize: ' 64k' is not a valid size/ ],
    [ 'BgDeliverMemoryLimit lots',        qr/BgDeliverMemoryLimit: 'lots' is not a valid size/ ],
    [ 'BgDeliverSpoolLimit 1k',           qr/BgDeliverSpoolLimit: '1k' is not a valid size; expected .* at least 32768/ ],
    [ 'BgDeliverMinRate fast',            qr/BgDeliverMinRate: 'fast' is not a valid size/ ],
    [ 'BgDeliverMinRate 100 soon',        qr/BgDeliverMinRate: 'soon' is not a valid time/ ],
    [ 'BgDeliverIdleTimeout -1',          qr/BgDeliverIdleTimeout: '-1' is not a valid time/ ],
    [ 'BgDeliverMaxTime 1e9',             qr/BgDeliverMaxTime: '1e9' is not a valid time/ ],
    # strtod() takes these; NaN passed every range check (no limit).
    [ 'BgDeliverMaxTime nan',             qr/BgDeliverMaxTime: 'nan' is not a valid time; expected seconds .*or 0 for no limit/ ],
    [ 'BgDeliverIdleTimeout 0x1p4',       qr/BgDeliverIdleTimeout: '0x1p4' is not a valid time; .*or 0 for the server's Timeout/ ],
    [ 'BgDeliverMinRate 256 inf',         qr/BgDeliverMinRate: 'inf' is not a valid time; expected seconds from 1 to 31622400/ ],
    # No client can have read anything the moment its response starts:
    # a grace of 0 dropped every delivery before its first byte.
    [ 'BgDeliverMinRate 1k 0',            qr/BgDeliverMinRate: '0' is not a valid time; expected seconds from 1 to 31622400 .*1500ms\)/ ],
    [ 'BgDeliverMinRate 1k 500ms',        qr/BgDeliverMinRate: '500ms' is not a valid time; expected seconds from 1/ ],
    [ 'BgDeliverMaxTime 0.0000001',       qr/BgDeliverMaxTime: '0.0000001' is not a valid time/ ],
    [ 'BgDeliverMaxTime 5min',            qr/BgDeliverMaxTime: '5min' is not a valid time/ ],
    [ 'BgDeliverOverflow drop',           qr/BgDeliverOverflow: 'drop' is not valid; expected 'fallback' .* or 'reject \[retry-after-seconds\]'/ ],
    [ 'BgDeliverOverflow fallback 5',     qr/BgDeliverOverflow: '5' is not valid after 'fallback'; a Retry-After value only goes with 'reject'/ ],
    [ 'BgDeliverOverflow reject soon',    qr/BgDeliverOverflow: 'soon' is not valid; expected a whole number from 0 to 86400/ ],
    [ 'BgDeliverSpoolDir /nonexistent/x', qr/BgDeliverSpoolDir: '\/nonexistent\/x' is not an existing directory/ ],
    [ 'BgDeliverMaxPerClient many',       qr/BgDeliverMaxPerClient: 'many' is not valid; expected a whole number from 0 to 1000000/ ],
    # strtol() alone takes a sign and leading spaces.
    [ 'BgDeliverMaxPerClient +8',         qr/BgDeliverMaxPerClient: '\+8' is not valid; expected a whole number/ ],
    [ 'BgDeliverMaxPerClient " 8"',       qr/BgDeliverMaxPerClient: ' 8' is not valid; expected a whole number/ ],
    [ 'BgDeliverClientPrefix 0',          qr/BgDeliverClientPrefix: '0' is not valid; expected a whole number from 1 to 32/ ],
    [ 'BgDeliverClientPrefix 24 129',     qr/BgDeliverClientPrefix: '129' is not valid; expected a whole number from 1 to 128/ ],
    [ 'BgDeliverClientPrefix /64',        qr/BgDeliverClientPrefix: '\/64' is not valid; expected a whole number from 1 to 32/ ],
    [ "<Location />\nBgDeliverClientPrefix 24\n</Location>",
                                          qr/BgDeliverClientPrefix not allowed in <Location> context/ ],
    [ 'BgDeliverMaxPerClient 1000001',    qr/BgDeliverMaxPerClient: '1000001' is not valid; expected a whole number from 0 to 1000000/ ],
    [ 'BgDeliverMaxDeliveries 0',         qr/BgDeliverMaxDeliveries: '0' is not valid; expected a whole number from 1 to 1000000/ ],
    [ "<VirtualHost 127.0.0.1:1>\nBgDeliverMaxDeliveries 10\n</VirtualHost>",
                                          qr/BgDeliverMaxDeliveries cannot occur within <VirtualHost> section/ ],
    [ 'BgDeliverMaxWakeups -1',           qr/BgDeliverMaxWakeups: '-1' is not valid; expected a whole number from 0 to 1000000/ ],
    [ "<VirtualHost 127.0.0.1:1>\nBgDeliverMaxWakeups 100\n</VirtualHost>",
                                          qr/BgDeliverMaxWakeups cannot occur within <VirtualHost> section/ ],
    [ 'BgDeliverEngineThreads 0',         qr/BgDeliverEngineThreads: '0' is not valid; expected a whole number from 1 to 64/ ],
    [ 'BgDeliverEngineThreads 65',        qr/BgDeliverEngineThreads: '65' is not valid; expected a whole number from 1 to 64/ ],
    [ "<VirtualHost 127.0.0.1:1>\nBgDeliverEngineThreads 2\n</VirtualHost>",
                                          qr/BgDeliverEngineThreads cannot occur within <VirtualHost> section/ ],
    [ "<Location />\nBgDeliverSpoolDir /tmp\n</Location>",
                                          qr/BgDeliverSpoolDir not allowed in <Location> context/ ],
);

plan tests => 2 * @bad + 2, need_module('mod_bgdeliver.c');

for my $case (@bad) {
    my ($rc, $out) = configtest($case->[0], 'bgdeliver');
    (my $name = $case->[0]) =~ s/\n/ /g;
    ok t_cmp($rc != 0 ? 1 : 0, 1, "rejected: $name");
    ok t_cmp($out, $case->[1], "message for: $name");
}

my ($rc, $out) = configtest(<<'CONF', 'bgdeliver');
BgDeliverMaxDeliveries 100
BgDeliverEngineThreads 4
BgDeliverSpoolDir /tmp
BgDeliverMaxPerClient 4
BgDeliverClientPrefix 24 56
<Location />
    BgDeliver On
    BgDeliverMinSize 1M
    BgDeliverMemoryLimit 16k
    BgDeliverSpoolLimit 2G
    BgDeliverMinRate 1000 20
    BgDeliverIdleTimeout 500ms
    BgDeliverMaxTime 3600s
    BgDeliverOverflow reject 30
</Location>
CONF
ok t_cmp($rc, 0, 'a full valid configuration passes');
t_debug($out) if $rc;
($rc, $out) = configtest("BgDeliverOverflow Fallback\nBgDeliver off", 'bgdeliver');
ok t_cmp($rc, 0, 'keywords are case-insensitive');
