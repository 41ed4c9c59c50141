# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Bad directive values stop the start-up with a message that names the
# directive, the value and the legal values (checked with apache2 -t on a
# throw-away configuration).
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use Cwd qw(abs_path);
use File::Path qw(make_path);
use FindBin;

my @cases = (
    [ 'ConntimesMaxHandlers 0',       qr/ConntimesMaxHandlers: bad value '0': must be a whole number from 1 to 256/ ],
    [ 'ConntimesMaxHandlers 12x',     qr/ConntimesMaxHandlers: bad value '12x'/ ],
    [ 'ConntimesSeriesInterval 5',    qr/ConntimesSeriesInterval: bad value '5': must be a whole number from 10 to 3600/ ],
    # apr_strtoi64() alone takes a sign.
    [ 'ConntimesSeriesInterval +60',  qr/ConntimesSeriesInterval: bad value '\+60': must be a whole number/ ],
    [ 'ConntimesSeriesSlots 9',       qr/ConntimesSeriesSlots: bad value '9': must be a whole number from 10 to 100000/ ],
    [ 'ConntimesKernelTimestamps yes', qr/ConntimesKernelTimestamps: bad value 'yes': must be On or Off/ ],
    [ 'ConntimesRecord maybe',        qr/ConntimesRecord: bad value 'maybe': must be On or Off/ ],
    [ 'ConntimesAllowReset 1',        qr/ConntimesAllowReset: bad value '1': must be On or Off/ ],
    [ 'ConntimesSlowThreshold soon',  qr/ConntimesSlowThreshold: bad value 'soon': must be Off or a duration/ ],
    # httpd's parser reads only the unit's first letters.
    [ 'ConntimesSlowThreshold 10sec', qr/ConntimesSlowThreshold: bad value '10sec': must be Off or a duration/ ],
    [ 'ConntimesSlowThreshold 5hours', qr/ConntimesSlowThreshold: bad value '5hours'/ ],
    # ... in lower case only: "2S" passed the unit check and then failed
    # in httpd's parser with a message that was not ours.
    [ 'ConntimesSlowThreshold 2S',    qr/ConntimesSlowThreshold: bad value '2S': must be Off or a duration .*\(ms, s, mi or min, h\)/ ],
    [ "ConntimesSlowThreshold 5min\nConntimesSeriesInterval 60", qr/Syntax OK/ ],
    [ "<VirtualHost 127.0.0.1:1>\nConntimesMaxHandlers 8\n</VirtualHost>",
      qr/ConntimesMaxHandlers cannot occur within <VirtualHost> section/ ],
    [ "ConntimesMaxHandlers 8\nConntimesSlowThreshold 2s\nConntimesRecord Off\n"
      . "<Location /x>\nConntimesRecord On\nConntimesAllowReset On\n</Location>",
      qr/Syntax OK/ ],
);

plan tests => scalar(@cases), need_module('conntimes');

my $top = abs_path("$FindBin::Bin/../..");
my $libexec = `apxs -q LIBEXECDIR 2>/dev/null` || '/usr/lib/apache2/modules';
chomp $libexec;
my $httpd = Apache::Test::vars('httpd') || '/usr/sbin/apache2';
my $dir = Apache::Test::vars('t_logs') . '/ct_config';
make_path($dir);

for my $c (@cases) {
    my ($directive, $expect) = @$c;
    open my $fh, '>', "$dir/httpd.conf" or die $!;
    print $fh <<"CONF";
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:1
PidFile "$dir/httpd.pid"
ErrorLog "$dir/error_log"
DefaultRuntimeDir "$dir"
LoadModule mpm_prefork_module $libexec/mod_mpm_prefork.so
LoadModule conntimes_module $top/build/mod_conntimes.so
$directive
CONF
    close $fh;
    my $out = `$httpd -t -d $dir -f $dir/httpd.conf 2>&1`;
    (my $first = $directive) =~ s/\n.*//s;
    ok t_cmp($out, $expect, $first);
}
