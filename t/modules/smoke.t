# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Smoke test: the private server starts and serves a static file.

use strict; use warnings FATAL => 'all';
use Apache::Test; use Apache::TestRequest; use Apache::TestUtil;
plan tests => 2;
my $r = GET '/bgdeliver/small.txt';
ok t_cmp($r->code, 200);
ok t_cmp($r->content, "hello\n");
