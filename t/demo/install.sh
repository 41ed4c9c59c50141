#!/bin/sh
# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# `make install` / `make uninstall`:
#
#   sh t/demo/install.sh APXS DESTDIR LIBEXECDIR SYSCONFDIR DIALUP_INSTALL \
#                        [install|uninstall]
#
# Installs build/mod_{bgdeliver,dialup,conntimes}.la through
# `apxs -i -S LIBEXECDIR=DESTDIR/LIBEXECDIR -n NAME`, and on Debian (when
# SYSCONFDIR/mods-available exists) drops NAME.load and NAME.conf there so
# that `a2enmod bgdeliver dialup conntimes` works.
#
# Debian's apache2-bin ships its own mod_dialup.so with the same module
# name (dialup_module), and apache2 its mods-available/dialup.load.  It is
# never overwritten silently; DIALUP_INSTALL chooses:
#   ask      (default) when Debian's file is there, stop before installing
#            anything and explain the choices;
#   replace  divert Debian's file (dpkg-divert --rename: it becomes
#            mod_dialup.so.distrib and package upgrades write there) and
#            install ours as mod_dialup.so; Debian's dialup.load, which
#            names the same path, then loads ours;
#   skip     install mod_bgdeliver and mod_conntimes only.
# With DESTDIR (packaging) nothing is diverted: the package must do that in
# its maintainer scripts.  `uninstall` reverses all of it, diversion
# included.

set -eu

die() { echo "install: $*" >&2; exit 1; }

[ $# -ge 5 ] || die "usage: $0 APXS DESTDIR LIBEXECDIR SYSCONFDIR DIALUP_INSTALL [install|uninstall]"
apxs=$1 destdir=$2 libexecdir=$3 sysconfdir=$4 dialup=$5 action=${6:-install}

top=$(cd "$(dirname "$0")/../.." && pwd)
pkg=bgdeliver-modules                   # owner of our dpkg diversion
marker="# Installed by 'make install' of the bgdeliver modules; 'make uninstall' removes it."

case $dialup in ask|replace|skip) ;;
    *) die "DIALUP_INSTALL must be ask, replace or skip (got '$dialup')" ;; esac
case $action in install|uninstall) ;;
    *) die "unknown action '$action' (install or uninstall)" ;; esac
if [ -z "$libexecdir" ] || [ -z "$sysconfdir" ]; then
    die "apxs did not report LIBEXECDIR/SYSCONFDIR: is apache2-dev installed? (make deps)"
fi

modules_dir=$destdir$libexecdir
dialup_so=$libexecdir/mod_dialup.so     # the path on this system
# Debian's layout: a2enmod's mods-available under SYSCONFDIR.  A DESTDIR
# build (a package) need not run on a host that has it: Debian's apxs
# naming /etc/apache2 says enough.
if [ -d "$sysconfdir/mods-available" ] \
   || { [ -n "$destdir" ] && [ "$sysconfdir" = /etc/apache2 ]; }; then
    avail=$destdir$sysconfdir/mods-available
else
    avail=""                            # not Debian's layout
fi
have_dpkg=0
command -v dpkg-divert >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 && have_dpkg=1

# Package owning a path (not counting diversions), or nothing.
owner() {
    [ "$have_dpkg" = 1 ] || return 0
    dpkg -S "$1" 2>/dev/null | grep -v '^diversion by' | sed -n 's/: .*//p' | head -n 1
}
# Package diverting a path, or nothing.
diverter() {
    [ "$have_dpkg" = 1 ] || return 0
    dpkg-divert --listpackage "$1" 2>/dev/null || true
}
ours() { [ -f "$1" ] && grep -qF "$marker" "$1"; }

# Writes mods-available/NAME.load (and .conf from stdin) with our marker.
write_load() {   # NAME [DEPENDS]
    {
        echo "$marker"
        [ -z "${2:-}" ] || echo "# Depends: $2"
        echo "LoadModule ${1}_module $libexecdir/mod_$1.so"
    } > "$avail/$1.load"
    echo "  $avail/$1.load"
}
write_conf() {   # NAME, content on stdin
    { echo "$marker"; cat; } > "$avail/$1.conf"
    echo "  $avail/$1.conf"
}

explain_dialup() {
    cat <<EOF
make install: Debian's own mod_dialup is installed here:
    $dialup_so  (package $1)
EOF
    [ ! -f "$sysconfdir/mods-available/dialup.load" ] ||
        echo "    $sysconfdir/mods-available/dialup.load  (package $(owner "$sysconfdir/mods-available/dialup.load"))"
    cat <<EOF
It has the same module name (dialup_module) as ours: only one of the two can
be loaded.  Nothing has been installed.  Choose one:

  make install DIALUP_INSTALL=replace
      Moves Debian's file aside and installs ours in its place:
          dpkg-divert --package $pkg --rename --add $dialup_so
      Debian's file becomes $dialup_so.distrib and package
      upgrades write there instead of over ours; Debian's dialup.load (same
      path) then loads ours.  'make uninstall' removes ours and runs
          dpkg-divert --package $pkg --rename --remove $dialup_so
      which puts Debian's file back.

  make install DIALUP_INSTALL=skip
      Installs mod_bgdeliver and mod_conntimes only; Debian's mod_dialup
      stays as it is.
EOF
}

install_all() {
    [ -n "$(command -v "$apxs" 2>/dev/null)" ] || die "apxs not found ('$apxs'): install apache2-dev (make deps)"
    for m in bgdeliver dialup conntimes; do
        [ -f "$top/build/mod_$m.la" ] || die "build/mod_$m.la is missing: run 'make' first"
    done

    # Decide about mod_dialup before anything is written.
    # install: ours goes to mod_dialup.so; divert: Debian's is moved aside
    # first; skip: ours is not installed.
    dialup_mode=install
    [ "$dialup" != skip ] || dialup_mode=skip
    if [ -z "$destdir" ]; then
        debian_dialup=$(owner "$dialup_so")
        if [ "$(diverter "$dialup_so")" = "$pkg" ]; then
            echo "Debian's mod_dialup.so is already diverted to $dialup_so.distrib (an earlier DIALUP_INSTALL=replace)."
        elif [ -n "$debian_dialup" ]; then
            case $dialup in
                ask)     explain_dialup "$debian_dialup" >&2; exit 1 ;;
                replace) dialup_mode=divert ;;
            esac
        elif [ -e "$dialup_so" ] && [ "$dialup_mode" != skip ]; then
            echo "Replacing $dialup_so (no package owns it: an earlier install of ours)."
        fi
    else
        if [ "$dialup_mode" != skip ] && [ -n "$(owner "$dialup_so")" ]; then
            echo "Note: DESTDIR install, nothing is diverted.  A Debian package of these"
            echo "modules must divert $dialup_so and"
            echo "$sysconfdir/mods-available/dialup.load itself (dpkg-divert in preinst/postrm)."
        fi
    fi

    modules="bgdeliver conntimes"
    [ "$dialup_mode" = skip ] || modules="bgdeliver dialup conntimes"

    mkdir -p "$modules_dir"
    if [ "$dialup_mode" = divert ]; then
        echo "Diverting Debian's $dialup_so to $dialup_so.distrib:"
        dpkg-divert --package "$pkg" --rename --add "$dialup_so"
    fi
    for m in $modules; do
        # apxs/libtool chatter only matters when it fails.
        out=$("$apxs" -i -S LIBEXECDIR="$modules_dir" -n "$m" "$top/build/mod_$m.la" 2>&1) || {
            echo "$out" >&2
            die "apxs -i failed for mod_$m"
        }
        echo "Installed $modules_dir/mod_$m.so"
    done

    if [ -n "$avail" ]; then
        mkdir -p "$avail"
        echo "Debian module files (a2enmod $modules):"
        write_load bgdeliver
        write_conf bgdeliver <<'EOF'
# mod_bgdeliver: background delivery of responses to slow clients (event
# MPM 2.4.63+).  Every directive and its default: see the README.
<IfModule mod_bgdeliver.c>
    # Deliver responses under this location without holding a worker.
    #<Location "/downloads/">
    #    BgDeliver On
    #</Location>

    # The deliveries in flight in every child, and the totals; keep it
    # private.
    #<Location "/bgdeliver-status">
    #    SetHandler bgdeliver-status
    #    Require local
    #</Location>

    # An access log whose lines are written after the last byte, with the
    # bytes that really left (%O needs mod_logio, built into Debian's
    # apache2) and how each delivery ended.
    #LogFormat "%h %l %u %t \"%r\" %>s %b %D %O %{bgdeliver}n %X" bgdeliver
    #CustomLog ${APACHE_LOG_DIR}/access.log bgdeliver
</IfModule>
EOF
        if [ "$dialup_mode" != skip ]; then
            # Debian's dialup.load (a conffile of apache2) names the same
            # path: keep it rather than fight package upgrades over it.
            dl=$sysconfdir/mods-available/dialup.load
            if [ -n "$destdir" ] || [ ! -f "$dl" ] || ours "$dl"; then
                write_load dialup bgdeliver
            else
                echo "  $dl  (Debian's, kept: it loads $dialup_so)"
            fi
            write_conf dialup <<'EOF'
# mod_dialup: responses arrive at the speed of a modem or another slow line,
# for any content (static, CGI, proxy, HTTPS), paced by mod_bgdeliver's
# engine without holding a worker on the event MPM.  It needs mod_bgdeliver
# (a2enmod bgdeliver); without it the server refuses to start as soon as a
# directive below is used.  /server-status?auto shows "DialupVersion:
# mod_dialup/1.0" when this module (not Debian's) is loaded.  Every
# directive and the list of standards: see the README, "mod_dialup".
<IfModule mod_dialup.c>
    # A whole location at V.92 speed (56,000 bit/s = 7,000 bytes/s on the
    # wire, first byte after 120 ms).  Standards: V.21, V.22, V.22bis,
    # V.26bis, V.32, V.32bis, V.34, V.34+, V.90, V.92, ISDN-64k, ISDN-128k,
    # T1, Slow-3G, Fast-3G; None switches it off in a nested scope.
    #<Location "/dialup/">
    #    ModemStandard V.92
    #    # Optional refinements (defaults: the standard's own values).
    #    # The first-byte delay:
    #    #DialupLatency 150ms
    #    # 10 bits per byte instead of 8:
    #    #DialupFraming async
    #    # Any rate in bit/s (k, M, G):
    #    #DialupRate 33.6k
    #    # Bytes sent at once after the latency:
    #    #DialupBurst 4k
    #    # The longest gap between two writes:
    #    #DialupPulse 100ms
    #</Location>
    #<Location "/dialup/fast/">
    #    ModemStandard None
    #</Location>

    # Per client: a cookie, a header or the query string chooses the line
    # (needs mod_setenvif, and mod_rewrite for the query string).  A rate
    # the client chooses is the client's to abuse: accept only values you
    # list, and bound what one client may hold (see the README).
    #BgDeliverMaxPerClient 8
    #<Location "/">
    #    SetEnvIf Cookie "(?:^|;\s*)modem=([^;]+)" dialup-standard=$1
    #    SetEnvIf X-Modem-Rate "^(9600|14\.4k|28\.8k|33\.6k|56k)$" dialup-rate=$1
    #    # Only for requests that choose a line: other downloads keep
    #    # their own limits.
    #    <If "%{HTTP_COOKIE} =~ /modem=/ || -n %{HTTP:X-Modem-Rate} || %{QUERY_STRING} =~ /modem=/">
    #        BgDeliverMaxTime 300
    #    </If>
    #</Location>
    #<Directory "/var/www/html">
    #    RewriteEngine On
    #    RewriteCond "%{QUERY_STRING}" "(?:^|&)modem=([^&]+)"
    #    RewriteRule "^" "-" [E=dialup-standard:%1]
    #</Directory>
    # The status pages are never paced, whatever the client asks for.
</IfModule>
EOF
        fi
        write_load conntimes
        write_conf conntimes <<'EOF'
# mod_conntimes: per-request phase timing.  Every directive: see the README.
<IfModule mod_conntimes.c>
    # The timing status page; keep it private.
    #<Location "/conntimes-status">
    #    SetHandler conntimes-status
    #    Require local
    #</Location>
</IfModule>
EOF
        if [ -z "$destdir" ]; then
            echo "Enable them with: a2enmod $modules, then restart apache2."
            command -v a2enmod >/dev/null 2>&1 ||
                echo "(a2enmod comes with the apache2 package, which is not installed.)"
        fi
    elif [ -z "$destdir" ]; then
        echo "No $sysconfdir/mods-available: add LoadModule lines for $modules_dir/mod_NAME.so to your httpd.conf."
    fi
}

uninstall_all() {
    if [ -z "$destdir" ] && [ -n "$avail" ] && command -v a2dismod >/dev/null 2>&1; then
        for m in dialup conntimes bgdeliver; do   # dependents first
            # Only modules whose .load is ours, or dialup when ours is loaded
            # through Debian's dialup.load.
            if [ -L "$sysconfdir/mods-enabled/$m.load" ] &&
               { ours "$avail/$m.load" || ours "$avail/$m.conf"; }; then
                a2dismod -q "$m"
            fi
        done
    fi

    for m in bgdeliver conntimes; do
        rm -vf "$modules_dir/mod_$m.so"
    done
    if [ -z "$destdir" ] && [ "$(diverter "$dialup_so")" = "$pkg" ]; then
        rm -vf "$dialup_so"
        echo "Removing the diversion: Debian's mod_dialup.so goes back in place."
        dpkg-divert --package "$pkg" --rename --remove "$dialup_so"
    elif [ -n "$destdir" ] || [ -z "$(owner "$dialup_so")" ]; then
        rm -vf "$modules_dir/mod_dialup.so"
    else
        echo "Leaving $dialup_so: it belongs to $(owner "$dialup_so")."
    fi

    if [ -n "$avail" ]; then
        for f in bgdeliver.load bgdeliver.conf dialup.load dialup.conf \
                 conntimes.load conntimes.conf; do
            if ours "$avail/$f"; then rm -vf "$avail/$f"; fi
        done
    fi
}

if [ "$action" = install ]; then install_all; else uninstall_all; fi
