# Licensed under the Apache License, Version 2.0 (the "License"); you may not
# use this file except in compliance with the License.  You may obtain a copy
# of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# Build, test and demo driver for mod_bgdeliver, mod_dialup and mod_conntimes.
#
#   make              build build/mod_*.so with the toolchain apxs reports
#   make test         install what is missing (as root), build, run t/ suite
#   make run / stop   start / stop the demo server on 127.0.0.1:$(PORT)
#   make install      install through apxs (DESTDIR honoured; DIALUP_INSTALL,
#                     see README "Installing"); make uninstall reverses it
#
# Every tool and flag comes from `apxs -q`; every output lands in build/.

APXS      ?= $(shell command -v apxs 2>/dev/null || echo /usr/bin/apxs)
apxsq      = $(shell $(APXS) -q $(1) 2>/dev/null)

LIBTOOL   := $(subst --no-silent,--silent,$(call apxsq,LIBTOOL))
CC        := $(call apxsq,CC)
LIBEXECDIR:= $(call apxsq,LIBEXECDIR)
SYSCONFDIR:= $(call apxsq,SYSCONFDIR)
HTTPD     := $(call apxsq,SBINDIR)/$(call apxsq,TARGET)
ALL_CFLAGS = $(call apxsq,CFLAGS) $(call apxsq,EXTRA_CFLAGS) \
             $(call apxsq,CPPFLAGS) $(call apxsq,EXTRA_CPPFLAGS) \
             -I$(call apxsq,INCLUDEDIR) -I$(call apxsq,APR_INCLUDEDIR) \
             -I$(call apxsq,APU_INCLUDEDIR) -Iinclude \
             -Wall -Wextra -Werror $(SANITIZE_CFLAGS) $(EXTRA_WARNINGS)

# `make SANITIZE=1 test`: AddressSanitizer + UBSan build; the server is
# started with the sanitizer runtime preloaded (see t/TEST.PL).
ifeq ($(SANITIZE),1)
SANITIZE_CFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
                  -fno-sanitize-recover=undefined
SANITIZE_LDFLAGS = -fsanitize=address,undefined
export BGD_SANITIZE_PRELOAD := $(shell $(CC) -print-file-name=libasan.so 2>/dev/null)
endif

MODULES    = bgdeliver dialup conntimes
SOS        = $(MODULES:%=build/mod_%.so)
TEST_MODS  = build/t/mod_bgd_test.so build/t/mod_ct_test.so build/t/epoll_fault.so

PORT      ?= 8080
HTTPS_PORT?= 8443
TEST_MPM  ?= event
TEST_PORT ?= select

# Debian packages the two top-level commands need on a fresh machine
# (checked from a debootstrap --variant=minbase root: .ci/fresh-machine).
# apache2-bin (not apache2) so that installing never starts a system
# server; only `a2enmod` after `make install` needs the apache2 package.
# The compiler is listed although apache2-dev happens to pull it in.
DEB_PKGS   = apache2-bin apache2-dev libapache2-mod-perl2 libwww-perl \
             liblwp-protocol-https-perl libio-socket-ssl-perl openssl curl \
             procps make gcc libc6-dev libfaketime

.PHONY: all deps test test-run test-prefork check run demo-start stop \
        install uninstall clean distclean cppcheck bench FORCE
.SECONDARY:
.DELETE_ON_ERROR:

all: $(SOS)

build build/t:
	@mkdir -p $@

# Objects depend on the flags they were built with, so that switching
# SANITIZE on or off rebuilds everything.
build/.flags: FORCE | build
	@echo '$(ALL_CFLAGS) $(SANITIZE_LDFLAGS)' | cmp -s - $@ \
	    || echo '$(ALL_CFLAGS) $(SANITIZE_LDFLAGS)' > $@

FORCE:

build/%.lo: %.c $(wildcard include/*.h) build/.flags | build
	$(LIBTOOL) --mode=compile $(CC) -prefer-pic $(ALL_CFLAGS) -c $< -o $@

build/t/%.lo: t/c-src/%.c $(wildcard include/*.h) build/.flags | build/t
	$(LIBTOOL) --mode=compile $(CC) -prefer-pic $(ALL_CFLAGS) -c $< -o $@

# Export nothing but the module record: a stray global in one module must
# never resolve against another module (or httpd) at load time.
build/mod_%.la: build/mod_%.lo
	$(LIBTOOL) --mode=link $(CC) -o $@ -rpath $(LIBEXECDIR) -module \
	    -avoid-version -export-symbols-regex '^$*_module$$' \
	    $(SANITIZE_LDFLAGS) $<

build/t/mod_%.la: build/t/mod_%.lo
	$(LIBTOOL) --mode=link $(CC) -o $@ -rpath $(LIBEXECDIR) -module \
	    -avoid-version -export-symbols-regex '^$*_module$$' \
	    $(SANITIZE_LDFLAGS) $<

# Not a module: a preload for fault injection (t/c-src/epoll_fault.c).
build/t/epoll_fault.so: t/c-src/epoll_fault.c | build/t
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -o $@ $< -ldl

# Replaced by a rename, never rewritten in place: a server that has the
# module loaded (the demo, a bench, a test run) keeps its mapping of the old
# file instead of crashing when the module is rebuilt under it.
build/%.so: build/%.la
	cp build/$(*D)/.libs/$(*F).so $@.tmp
	mv -f $@.tmp $@

# ---------------------------------------------------------------- deps
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	        grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	    echo "Missing Debian packages:$$missing"; \
	    echo "Install them as root:  apt-get install$$missing"; exit 1; \
	fi; \
	echo "Installing missing Debian packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing

# ---------------------------------------------------------------- tests
# t/TEST is generated the way libapreq2 does it, so that no Makefile.PL
# ever clobbers this Makefile.  The suite inherits its LoadModule lines
# from build/t/modules.conf (written by t/TEST.PL), never from the host.
t/TEST: t/TEST.PL
	perl -MApache::TestMM -e 'Apache::TestMM::filter_args(); \
	    Apache::TestMM::generate_script("t/TEST")'

test: deps
	@$(MAKE) --no-print-directory all $(TEST_MODS)
	@$(MAKE) --no-print-directory test-run

test-run: t/TEST
	TEST_MPM=$(TEST_MPM) perl t/TEST -clean >/dev/null 2>&1 || true
	TEST_MPM=$(TEST_MPM) perl t/TEST -apxs $(APXS) -port $(TEST_PORT) $(TEST_ARGS)

test-prefork:
	@$(MAKE) --no-print-directory test TEST_MPM=prefork

check: test

# httpd's and APR's headers are left out on purpose: cppcheck cannot
# preprocess them (APR's network header #errors without system macros).
cppcheck:
	cppcheck --quiet --error-exitcode=1 \
	    --enable=warning,style,performance,portability --inline-suppr \
	    --std=c99 -D__linux__ -Iinclude --suppress=missingIncludeSystem \
	    --suppress=missingInclude $(MODULES:%=mod_%.c) t/c-src/*.c

# ---------------------------------------------------------------- demo
# demo-start runs in a sub-make so that HTTPD is read from an apxs that
# `make deps` may just have installed.
run: deps
	@$(MAKE) --no-print-directory all demo-start

demo-start:
	@APXS="$(APXS)" sh t/demo/demo.sh start "$(HTTPD)" "$(PORT)" \
	    "$(HTTPS_PORT)" "$(TEST_MPM)"

stop:
	@sh t/demo/demo.sh stop "$(HTTPD)" "$(PORT)" "$(HTTPS_PORT)" "$(TEST_MPM)"

# ---------------------------------------------------------------- install
# Debian's apache2-bin ships its own mod_dialup.so with the same
# dialup_module symbol; see README "Installing" for DIALUP_INSTALL.
# `make uninstall` reverses it (diversion included).
DIALUP_INSTALL ?= ask
install: all
	@sh t/demo/install.sh "$(APXS)" "$(DESTDIR)" "$(LIBEXECDIR)" \
	    "$(SYSCONFDIR)" "$(DIALUP_INSTALL)" install

uninstall:
	@sh t/demo/install.sh "$(APXS)" "$(DESTDIR)" "$(LIBEXECDIR)" \
	    "$(SYSCONFDIR)" "$(DIALUP_INSTALL)" uninstall

# The benchmarks are long, need root and load the machine: they are run
# explicitly, never by `make test` (see README, "Benchmarks").
bench:
	@echo "bench/bgdeliver/run.sh [--quick]      background delivery vs stock Apache and nginx"
	@echo "bench/dialup/run.sh                    mod_dialup vs Debian's mod_dialup, mod_ratelimit, nginx"
	@echo "bench/conntimes/run.sh                 mod_conntimes overhead (wrk)"
	@echo "bench/soak/run.sh [SECONDS] [MPM]      soak and failure test of the demo server"

# A running demo server keeps its pid file and runtime files in build/demo.
clean:
	@if [ -e build/demo/run/httpd.pid ]; then \
	    sh t/demo/demo.sh stop "$(HTTPD)" "$(PORT)" "$(HTTPS_PORT)" "$(TEST_MPM)"; fi
	rm -rf build t/TEST t/logs t/conf/httpd.conf t/conf/extra.conf \
	    t/conf/apache_test_config.pm t/conf/modperl_* t/conf/ssl t/htdocs/index.html

distclean: clean
