#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# mod_dialup benchmark (see bench.py): ours vs Debian's mod_dialup vs
# mod_ratelimit vs nginx limit_rate at V.92 speed, 1/100/2000 concurrent
# downloads, on 127.0.0.1 only; about 6 minutes.  Run as root from the top
# of the checkout:
#
#   sh bench/dialup/run.sh                 # writes bench/dialup/results.*
#   sh bench/dialup/run.sh --profile 2000  # perf profile of ours only
#
# Needs (Debian): apache2-bin, nginx-light, gnuplot-nox, gcc, make, python3,
# and linux-perf for --profile.
set -eu
missing=""
for c in apache2:apache2-bin nginx:nginx-light gnuplot:gnuplot-nox gcc:gcc \
         python3:python3 make:make; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing="$missing ${c#*:}"
done
if [ -n "$missing" ]; then
    echo "run.sh: missing:$missing  (apt-get install$missing)" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (servers run their children as nobody)" >&2; exit 1; }
cd "$(dirname "$0")/../.."
exec python3 bench/dialup/bench.py "$@"
