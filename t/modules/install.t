# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# `make install DESTDIR=...` (t/demo/install.sh): the Debian module files
# it writes load the installed modules, and every directive they carry
# commented out still parses once an operator uncomments it (Apache has no
# end-of-line comments); `make uninstall` removes exactly those files.
use strict;
use warnings FATAL => 'all';

use Apache::Test;
use Apache::TestUtil;
use File::Find ();
use File::Path qw(remove_tree);

my $vars = Apache::Test::vars();
my $top = $vars->{top_dir};
chomp(my $apxs = `command -v apxs 2>/dev/null` || '');
chomp(my $libexec = $apxs ? `$apxs -q LIBEXECDIR 2>/dev/null` : '');

plan tests => 7, need({ 'apxs' => $apxs ne '' },
                      need_module('mod_bgdeliver.c', 'mod_dialup.c', 'mod_conntimes.c'));

my $dest = "$vars->{t_logs}/install.$$";
my $avail = "$dest/etc/apache2/mods-available";
my $mods = "$dest$libexec";
remove_tree($dest);

sub run_script {
    my ($action) = @_;
    return `sh $top/t/demo/install.sh $apxs $dest $libexec /etc/apache2 replace $action 2>&1`;
}

sub files_under {
    my @f;
    File::Find::find(sub { push @f, $File::Find::name if -f }, $dest) if -d $dest;
    return sort @f;
}

my $out = run_script('install');
t_debug($out);
ok t_cmp($?, 0, 'install into DESTDIR');
my @want = ((map { "$mods/mod_$_.so" } qw(bgdeliver conntimes dialup)),
            (map { ("$avail/$_.conf", "$avail/$_.load") } qw(bgdeliver conntimes dialup)));
ok t_cmp(join("\n", files_under()), join("\n", sort @want),
         'the three modules and their .load and .conf files');

# The .load files name the installed path; for this check they load the
# DESTDIR copies.
my $loads = '';
for my $m (qw(bgdeliver dialup conntimes)) {
    open my $fh, '<', "$avail/$m.load" or die "$avail/$m.load: $!";
    my ($line) = grep { /^LoadModule / } <$fh>;
    $line //= '';
    $line =~ s{ \Q$libexec\E/}{ $mods/};
    $loads .= $line;
}
ok t_cmp($loads, qr{^LoadModule bgdeliver_module \S+mod_bgdeliver\.so$}m,
         'bgdeliver.load loads mod_bgdeliver.so');

# Uncomment every commented directive and section, refinements included.
my $directive = qr{(?:</?(?:Location|Directory|If)\b|(?:ModemStandard|Dialup\w+|BgDeliver\w*|Conntimes\w*|SetEnvIf|RewriteEngine|RewriteCond|RewriteRule|SetHandler|Require|LogFormat|CustomLog)\s)};
my $confs = '';
for my $m (qw(bgdeliver dialup conntimes)) {
    open my $fh, '<', "$avail/$m.conf" or die "$avail/$m.conf: $!";
    for my $l (<$fh>) {
        $l =~ s/^(\s*)#[#\s]*($directive)/$1$2/;
        $confs .= $l;
    }
}
my $uncommented = () = $confs =~ /^\s*(?:ModemStandard|Dialup\w+|BgDeliver\w*|SetHandler) /mg;
ok t_cmp($uncommented >= 10 ? 1 : 0, 1, "the files carry directives to uncomment ($uncommented)");

my $dir = "$dest/check";
mkdir $dir;
open my $fh, '>', "$dir/httpd.conf" or die $!;
print $fh "ServerRoot $dir\nDefaultRuntimeDir $dir\nPidFile $dir/httpd.pid\n",
          "ErrorLog $dir/error_log\nServerName 127.0.0.1\nListen 127.0.0.1:1\n",
          "Define APACHE_LOG_DIR $dir\n",
          (map { "LoadModule ${_}_module $libexec/mod_$_.so\n" }
               qw(mpm_event authz_core authz_host setenvif rewrite)),
          $loads, $confs;
close $fh;
my $check = `$vars->{httpd} -t -f $dir/httpd.conf 2>&1`;
ok t_cmp($check, qr/Syntax OK/, 'every commented line, uncommented, parses');

$out = run_script('uninstall');
t_debug($out);
ok t_cmp($?, 0, 'uninstall from DESTDIR');
remove_tree($dir);
ok t_cmp(join("\n", files_under()), '', 'nothing of ours is left');
remove_tree($dest);
