use strict; use warnings FATAL => 'all';
use Apache::Test; use Apache::TestRequest; use Apache::TestUtil;
plan tests => 2;
my $r = GET '/bgdeliver/small.txt';
ok t_cmp($r->code, 200);
ok t_cmp($r->content, "hello\n");
