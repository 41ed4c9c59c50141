# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# mod_dialup's configuration: the version string that proves ours is loaded
# (Debian's mod_dialup.so has the same module name and no status output),
# every bad directive value rejected at start-up with a message naming the
# directive, the value and the legal values (throwaway `apache2 -t`), and
# the refusal to start without mod_bgdeliver, naming the LoadModule line.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestRequest qw(GET);
use Apache::TestUtil;
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use Bgd::Test qw(server_status);

my @bad = (
    [ 'ModemStandard V.99',
      qr/ModemStandard: unknown standard 'V\.99'; valid standards \(case-insensitive\): V\.21, V\.22, .*V\.92, ISDN-64k, .*i-was-rich-and-got-a-leased-line, Slow-3G, Fast-3G, None/ ],
    [ 'ModemStandard V.92bis', qr/unknown standard 'V\.92bis'/ ],
    [ 'DialupRate 56q',  qr/DialupRate: '56q' is not a valid rate \(unknown suffix\); expected bits per second from 10 to 100G, optionally with a k, M or G suffix/ ],
    [ 'DialupRate 0',    qr/DialupRate: '0' is not a valid rate \(out of range\)/ ],
    [ 'DialupRate -5',   qr/DialupRate: '-5' is not a valid rate \(not a number\)/ ],
    [ 'DialupRate 0x10', qr/DialupRate: '0x10' is not a valid rate/ ],
    [ 'DialupRate 200G', qr/DialupRate: '200G' is not a valid rate \(out of range\)/ ],
    [ 'DialupLatency 2min', qr/DialupLatency: '2min' is not a valid latency \(unknown unit\); expected milliseconds from 0 to 60000, optionally with ms or s/ ],
    [ 'DialupLatency 61s',  qr/DialupLatency: '61s' is not a valid latency \(out of range\)/ ],
    [ 'DialupFraming 9',    qr/DialupFraming: '9' is not valid; expected 'sync' or 8 \(bits per byte\), or 'async' or 10 \(bits per byte/ ],
    [ 'DialupBurst 1.5k',   qr/DialupBurst: '1\.5k' is not a valid size; expected whole bytes from 0 to 1G, optionally with a k, M or G suffix/ ],
    [ 'DialupBurst 2048M',  qr/DialupBurst: '2048M' is not a valid size/ ],
    [ 'DialupBurst 2G',     qr/DialupBurst: '2G' is not a valid size; expected whole bytes from 0 to 1G, optionally with a k, M or G suffix/ ],
    [ 'DialupPulse 5',      qr/DialupPulse: '5' is not a valid pulse length \(out of range\); expected milliseconds from 10 to 1000/ ],
    [ 'DialupPulse 2s',     qr/DialupPulse: '2s' is not a valid pulse length \(out of range\)/ ],
);

plan tests => 4 + 2 * @bad + 6, need need_module('mod_dialup.c'),
    need_module('mod_bgdeliver.c'), need_module('status');

# ------------------------------------------------------------ version string
my $st = server_status();
ok t_cmp($st->{DialupVersion}, 'mod_dialup/1.0',
         'server-status?auto: DialupVersion (Debian\'s mod_dialup has none)');
ok t_cmp($st->{DialupFeatures} || '',
         qr/^engine=bgdeliver-api-1 presets latency framing burst pulse env=dialup-standard,dialup-rate,dialup-latency$/,
         'DialupFeatures');
ok t_cmp($st->{DialupEngine}, 'mod_bgdeliver', 'DialupEngine');
my $html = GET('/server-status')->content;
ok t_cmp($html =~ m{<h2>Modem emulation \(mod_dialup\)</h2>.*mod_dialup/1\.0}s ? 1 : 0,
         1, 'server-status HTML section');

# ------------------------------------------------------ throwaway configs
my $top = Apache::Test::vars('top_dir');
my $httpd = Apache::Test::vars('httpd');
my $libexec = `apxs -q LIBEXECDIR 2>/dev/null`;
chomp $libexec;
$libexec ||= '/usr/lib/apache2/modules';
my $dir = Apache::Test::vars('t_logs') . '/dialup-config';
remove_tree($dir);
make_path($dir);

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1) or die $!;
    my $p = $s->sockport;
    close $s;
    return $p;
}

# Writes a minimal server config around $body; returns its path.
sub conf {
    my ($name, $body, %o) = @_;
    my $port = free_port();
    my $file = "$dir/$name.conf";
    open my $fh, '>', $file or die "$file: $!";
    print $fh <<"EOF";
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/$name.pid"
ErrorLog "$dir/$name.error_log"
DefaultRuntimeDir "$dir"
LoadModule mpm_event_module "$libexec/mod_mpm_event.so"
EOF
    print $fh qq{LoadModule bgdeliver_module "$top/build/mod_bgdeliver.so"\n}
        unless $o{no_engine};
    print $fh qq{LoadModule dialup_module "$top/build/mod_dialup.so"\n};
    print $fh "$body\n";
    close $fh;
    return $file;
}

# Runs apache2 (bounded); returns (exit status, stderr + stdout, error log).
sub run_httpd {
    my ($file, @args) = @_;
    (my $log = $file) =~ s/\.conf$/.error_log/;
    unlink $log;
    my $out = `timeout 20 $httpd -d $dir -f $file @args 2>&1`;
    my $rc = $? >> 8;
    my $el = -e $log ? do { open my $fh, '<', $log; local $/; <$fh> } : '';
    return ($rc, $out, $el);
}

my $i = 0;
for my $b (@bad) {
    my ($line, $re) = @$b;
    my $file = conf('bad' . $i++, "<Location /x>\n    $line\n</Location>");
    my ($rc, $out) = run_httpd($file, '-t');
    ok t_cmp($rc != 0 ? 1 : 0, 1, "'$line' refused (exit $rc)");
    ok t_cmp($out, $re, "'$line': message names directive, value, legal values");
}

my $good = conf('good', <<'EOF');
<Location /a>
    ModemStandard v.92
    DialupRate 1.544M
    DialupLatency 0.15s
    DialupFraming ASYNC
    DialupBurst 4k
    DialupPulse 100ms
</Location>
<Location /b>
    ModemStandard "slow 3g"
</Location>
<Location /c>
    ModemStandard none
    DialupLatency 150
</Location>
<Location /d>
    DialupRate 9600
    DialupFraming 10
</Location>
EOF
my ($rc, $out) = run_httpd($good, '-t');
ok t_cmp("$rc $out", qr/^0 Syntax OK/, 'good values (any case) accepted');

my $limits = conf('limits', <<'EOF');
<Location /lowest>
    DialupRate 10
    DialupLatency 0
    DialupPulse 10ms
</Location>
<Location /highest>
    DialupRate 100G
    DialupLatency 60s
    DialupPulse 1s
    DialupBurst 1G
</Location>
<Location /highest-plain>
    DialupRate 100000000000
    DialupLatency 60000
    DialupPulse 1000
    DialupBurst 1073741824
</Location>
EOF
($rc, $out) = run_httpd($limits, '-t');
ok t_cmp("$rc $out", qr/^0 Syntax OK/, 'the documented limits are legal values');

# --------------------------------------------------- without mod_bgdeliver
my $noeng = conf('noengine', "<Location /x>\n    ModemStandard V.92\n</Location>",
                 no_engine => 1);
($rc, $out) = run_httpd($noeng, '-t');
ok t_cmp($out, qr/DLP002: .*add "LoadModule bgdeliver_module \Q$top\E\/build\/mod_bgdeliver\.so"/,
         'apache2 -t warns that mod_bgdeliver is missing, with the LoadModule line');

my $el;
($rc, $out, $el) = run_httpd($noeng, '-DFOREGROUND');
ok t_cmp($rc != 0 && $rc != 124 ? 1 : 0, 1, "start-up refused (exit $rc)");
ok t_cmp("$out$el", qr/DLP001: ModemStandard and the Dialup directives need mod_bgdeliver, which is not loaded: add "LoadModule bgdeliver_module \Q$top\E\/build\/mod_bgdeliver\.so"/,
         'the error names the LoadModule line to add');

# Without any Dialup directive, mod_dialup alone is harmless.
my $plain = conf('plain', '', no_engine => 1);
($rc, $out) = run_httpd($plain, '-t');
ok t_cmp("$rc $out", qr/^0 Syntax OK/, 'mod_dialup without directives needs no engine');

remove_tree($dir);
