# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Smoke test: the private server starts and serves a static file, and each
# freshly built module exports nothing but its module record.

use strict; use warnings FATAL => 'all';
use Apache::Test; use Apache::TestRequest; use Apache::TestUtil;

my %modules = (bgdeliver => 'bgdeliver_module', dialup => 'dialup_module',
               conntimes => 'conntimes_module');
plan tests => 2 + keys %modules;

my $r = GET '/bgdeliver/small.txt';
ok t_cmp($r->code, 200);
ok t_cmp($r->content, "hello\n");

my $build = Apache::Test::vars('top_dir') . '/build';
for my $name (sort keys %modules) {
    my $so = "$build/mod_$name.so";
    my @syms = map { (split ' ')[-1] } grep { /\S/ }
               `nm -D --defined-only '$so' 2>/dev/null`;
    ok t_cmp(join(' ', @syms), $modules{$name},
             "mod_$name.so exports only $modules{$name}");
}
