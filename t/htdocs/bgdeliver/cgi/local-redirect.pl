#!/usr/bin/perl
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# A local Location: header, which mod_cgi(d) turns into an internal
# redirect from inside its handler.
print "Location: /bgdeliver/files/http-200k.bin\r\n\r\n";
