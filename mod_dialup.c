/* Licensed under the Apache License, Version 2.0 (the "License"); you may not
 * use this file except in compliance with the License.  You may obtain a copy
 * of the License at http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 * WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.  See the
 * License for the specific language governing permissions and limitations
 * under the License.
 */

/*
 * mod_dialup: every response under a location arrives as it would over a
 * modem or another slow line (`ModemStandard V.92`), whatever produces it.
 *
 * What it does: it turns the configuration (a named line standard, or an
 * explicit rate, plus latency, framing, burst and pulse length) and the
 * per-request environment variables dialup-standard, dialup-rate and
 * dialup-latency into a bgdeliver_pacing_t, and asks mod_bgdeliver's
 * engine to deliver the response with it.  It has no pacing code of its
 * own: the engine captures the exact wire bytes (status line, headers,
 * body, chunk framing) after the protocol filters and sends byte k at
 * request time + latency + k / rate, in short pulses, without holding a
 * worker on the event MPM.
 *
 * Hooks:
 *  - fixups (APR_HOOK_LAST, after mod_dir and mod_rewrite): the per-dir
 *    configuration is final and every SetEnvIf / RewriteRule [E=] has set
 *    its variables; the handler has not run yet, which is when the engine
 *    wants to be asked.
 *  - optional_fn_retrieve: finds the engine's bgdeliver_request_background.
 *  - post_config: refuses to start when a ModemStandard (or another Dialup
 *    directive) is configured but mod_bgdeliver is not loaded, naming the
 *    LoadModule line to add; notes once when the MPM cannot pace without
 *    holding a worker.
 *  - test_config: the same check as a warning for `apachectl -t`.
 *  - status_hook (mod_status): version and feature string, so that a
 *    server can prove which mod_dialup it loaded (Debian's apache2-bin
 *    ships another module of the same name, dialup_module).
 */

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_status.h"

#include "apr_atomic.h"
#include "apr_lib.h"
#include "apr_optional.h"
#include "apr_strings.h"

#include <errno.h>
#include <stdlib.h>

#if defined(__linux__) || defined(__GLIBC__)
#include <dlfcn.h>
#define DIALUP_HAVE_DLADDR 1
#else
#define DIALUP_HAVE_DLADDR 0
#endif

#include "mod_bgdeliver.h"

module AP_MODULE_DECLARE_DATA dialup_module;

/* Proves which mod_dialup is loaded (see the status hook). */
#define DIALUP_VERSION  "mod_dialup/1.0"
#if BGDELIVER_API_VERSION != 1
#error "mod_dialup is written for version 1 of the mod_bgdeliver API"
#endif
#define DIALUP_FEATURES "engine=bgdeliver-api-1" \
                        " presets latency framing burst pulse" \
                        " env=dialup-standard,dialup-rate,dialup-latency"

#define DIALUP_UNSET          (-1)
#define DIALUP_FRAMING_SYNC   8     /* bits on the line per byte */
#define DIALUP_FRAMING_ASYNC  10    /* start bit + 8 data bits + stop bit */
#define DIALUP_MIN_BITS       10
#define DIALUP_MAX_BITS       ((apr_int64_t)100 * 1000 * 1000 * 1000)
#define DIALUP_MAX_LATENCY    apr_time_from_sec(60)
#define DIALUP_MIN_PULSE      apr_time_from_msec(10)
#define DIALUP_MAX_PULSE      apr_time_from_sec(1)
#define DIALUP_MAX_BURST      ((apr_off_t)1024 * 1024 * 1024)

/* ------------------------------------------------------------------ types */

/* A line standard: what ModemStandard and dialup-standard name. */
typedef struct dialup_preset_t {
    const char *name;
    apr_int64_t down;                   /* bits/s towards the client */
    apr_int64_t up;                     /* bits/s from the client (shown
                                         * only: uploads are not paced) */
    apr_interval_time_t latency;        /* default first-byte latency */
} dialup_preset_t;

typedef struct dialup_dir_conf_t {
    const dialup_preset_t *standard;    /* ModemStandard; NULL = unset */
    apr_int64_t rate;                   /* DialupRate, bits/s */
    apr_interval_time_t latency;        /* DialupLatency */
    int framing;                        /* DialupFraming, bits per byte */
    apr_off_t burst;                    /* DialupBurst, bytes */
    apr_interval_time_t pulse;          /* DialupPulse */
} dialup_dir_conf_t;

/* The line a request ends up with. */
typedef struct dialup_line_t {
    const char *label;
    apr_int64_t bits;
    apr_interval_time_t latency;
    int framing;
} dialup_line_t;

/* ---------------------------------------------------------- module state */

#define DIALUP_MS(n) apr_time_from_msec(n)

/*
 * The standards, with their ITU (or customary) rates.  Modem latencies are
 * typical dial-up round trips: 150 ms for the analogue standards up to
 * V.34+, 120 ms for V.90/V.92 (what WebPageTest uses for "56K Dial-Up");
 * ISDN and leased lines are digital end to end and much quicker.  The
 * browser presets are Chrome DevTools' "Slow 3G" (50,000 B/s, 2 s) and
 * "Fast 3G" (180,000 B/s down, 84,375 B/s up, 562.5 ms).
 */
static const dialup_preset_t dialup_presets[] = {
    { "V.21",      300,     300,     DIALUP_MS(150) },
    { "V.22",      1200,    1200,    DIALUP_MS(150) },
    { "V.22bis",   2400,    2400,    DIALUP_MS(150) },
    { "V.26bis",   2400,    75,      DIALUP_MS(150) },
    { "V.32",      9600,    9600,    DIALUP_MS(150) },
    { "V.32bis",   14400,   14400,   DIALUP_MS(150) },
    { "V.34",      28800,   28800,   DIALUP_MS(150) },
    { "V.34+",     33600,   33600,   DIALUP_MS(150) },
    { "V.90",      56000,   33600,   DIALUP_MS(120) },
    { "V.92",      56000,   48000,   DIALUP_MS(120) },
    { "ISDN-64k",  64000,   64000,   DIALUP_MS(40) },
    { "ISDN-128k", 128000,  128000,  DIALUP_MS(40) },
    { "T1",        1544000, 1544000, DIALUP_MS(20) },
    { "i-was-rich-and-got-a-leased-line",
                   1544000, 1544000, DIALUP_MS(20) },
    { "Slow-3G",   400000,  400000,  DIALUP_MS(2000) },
    { "Fast-3G",   1440000, 675000,  562500 /* us */ },
    { NULL, 0, 0, 0 }
};

/* ModemStandard None: no emulation in this scope. */
static const dialup_preset_t dialup_none = { "None", 0, 0, 0 };

static APR_OPTIONAL_FN_TYPE(bgdeliver_request_background)
    *dialup_request_background;

/* Set by any directive at start-up, so that post_config knows whether the
 * missing engine matters (see dialup_note_configured()). */
static int dialup_configured;
static volatile apr_uint32_t dialup_warned_engine;
static volatile apr_uint32_t dialup_warned_h2;

/* ------------------------------------------------------------- helpers */

/* Standard names are compared without regard to case, and ' ', '-' and
 * '_' are the same character: "slow 3g", "Slow-3G" and "SLOW_3G" match. */
static int dialup_name_eq(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = apr_tolower((unsigned char)*a);
        int cb = apr_tolower((unsigned char)*b);
        if (ca == ' ' || ca == '_') {
            ca = '-';
        }
        if (cb == ' ' || cb == '_') {
            cb = '-';
        }
        if (ca != cb) {
            return 0;
        }
        if (!ca) {
            return 1;
        }
    }
}

static const dialup_preset_t *dialup_find_preset(const char *name)
{
    const dialup_preset_t *p;
    if (dialup_name_eq(name, dialup_none.name)) {
        return &dialup_none;
    }
    for (p = dialup_presets; p->name; p++) {
        if (dialup_name_eq(name, p->name)) {
            return p;
        }
    }
    return NULL;
}

static const char *dialup_preset_names(apr_pool_t *p)
{
    const dialup_preset_t *s;
    char *list = "";
    for (s = dialup_presets; s->name; s++) {
        list = apr_pstrcat(p, list, s->name, ", ", NULL);
    }
    return apr_pstrcat(p, list, dialup_none.name, NULL);
}

/* A rate in bits/s: a positive number (fractions allowed) with an optional
 * k (10^3), M (10^6) or G (10^9) suffix, as line rates are written. */
static const char *dialup_parse_bits(const char *arg, apr_int64_t *out)
{
    double d = 0, mult = 1;
    apr_size_t n = bgdeliver_parse_decimal(arg, &d);
    const char *end = arg + n;

    if (!n) {
        return "not a number";
    }
    switch (*end) {
    case 'k': case 'K': mult = 1e3; end++; break;
    case 'm': case 'M': mult = 1e6; end++; break;
    case 'g': case 'G': mult = 1e9; end++; break;
    default: break;
    }
    if (*end) {
        return "unknown suffix";
    }
    /* The range is checked before rounding, so that the limits themselves
     * are legal values. */
    d *= mult;
    if (d < DIALUP_MIN_BITS || d > (double)DIALUP_MAX_BITS) {
        return "out of range";
    }
    *out = (apr_int64_t)(d + 0.5);
    return NULL;
}

/* A time: a number of milliseconds, or with an "ms" or "s" suffix. */
static const char *dialup_parse_time(const char *arg, apr_interval_time_t min,
                                     apr_interval_time_t max,
                                     apr_interval_time_t *out)
{
    double d = 0;
    apr_size_t n = bgdeliver_parse_decimal(arg, &d);
    const char *end = arg + n;

    if (!n) {
        return "not a number";
    }
    if (!strcasecmp(end, "s")) {
        d *= 1000.0;
    }
    else if (*end && strcasecmp(end, "ms")) {
        return "unknown unit";
    }
    d *= 1000.0;                        /* microseconds */
    if (d < (double)min || d > (double)max) {
        return "out of range";
    }
    *out = (apr_interval_time_t)(d + 0.5);
    return NULL;
}

/* The line configured for this scope; returns 0 when there is none. */
static int dialup_configured_line(const dialup_dir_conf_t *conf,
                                  dialup_line_t *line)
{
    const dialup_preset_t *std = conf->standard;

    line->framing = conf->framing != DIALUP_UNSET ? conf->framing
                                                  : DIALUP_FRAMING_SYNC;
    if (conf->rate != DIALUP_UNSET) {
        line->bits = conf->rate;
        line->label = NULL;             /* named after the rate later */
    }
    else if (std && std != &dialup_none) {
        line->bits = std->down;
        line->label = std->name;
    }
    else {
        return 0;
    }
    line->latency = conf->latency != DIALUP_UNSET ? conf->latency
                    : (std && std != &dialup_none) ? std->latency : 0;
    return 1;
}

/* Apply the request's environment variables (set by SetEnvIf, SetEnv or
 * mod_rewrite's [E=...]) over the configured line.  Returns 0 when the
 * request ends up without a line.  Bad values are ignored and logged at
 * info level: with a query-string recipe they come from the client. */
static int dialup_env_line(request_rec *r, const dialup_dir_conf_t *conf,
                           dialup_line_t *line, int have)
{
    const char *v;
    const char *err;

    v = apr_table_get(r->subprocess_env, "dialup-standard");
    if (v && *v) {
        const dialup_preset_t *std = dialup_find_preset(v);
        if (!std) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "DLP006: ignoring dialup-standard '%s': unknown "
                          "standard (valid: %s)", v,
                          dialup_preset_names(r->pool));
        }
        else if (std == &dialup_none) {
            return 0;
        }
        else {
            /* A standard chosen per request starts from that standard;
             * only the framing of the scope is kept. */
            line->bits = std->down;
            line->latency = std->latency;
            line->label = std->name;
            have = 1;
        }
    }
    v = apr_table_get(r->subprocess_env, "dialup-rate");
    if (v && *v) {
        apr_int64_t bits;
        if ((err = dialup_parse_bits(v, &bits)) != NULL) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "DLP007: ignoring dialup-rate '%s' (%s): expected "
                          "bits/s from %d to 100G, optionally with k, M or G",
                          v, err, DIALUP_MIN_BITS);
        }
        else {
            if (!have) {
                line->latency = conf->latency != DIALUP_UNSET
                                ? conf->latency : 0;
            }
            line->bits = bits;
            line->label = NULL;
            have = 1;
        }
    }
    v = apr_table_get(r->subprocess_env, "dialup-latency");
    if (v && *v && have) {
        apr_interval_time_t lat;
        if ((err = dialup_parse_time(v, 0, DIALUP_MAX_LATENCY, &lat))
            != NULL) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "DLP008: ignoring dialup-latency '%s' (%s): "
                          "expected milliseconds from 0 to 60000 (or a "
                          "number with ms or s)", v, err);
        }
        else {
            line->latency = lat;
        }
    }
    return have;
}

/* Bytes per second on the wire (fractional: V.21 carries 37.5). */
static double dialup_bytes_per_sec(const dialup_line_t *line)
{
    return (double)line->bits / (double)line->framing;
}

/* ----------------------------------------------------------------- hooks */

/*
 * Decide the line for this request and hand the request to the engine.
 * Runs for main requests only: sub-requests are part of their main
 * request's response, and the engine refuses them.
 */
static int dialup_fixups(request_rec *r)
{
    const dialup_dir_conf_t *conf;
    dialup_line_t line = { NULL, 0, 0, DIALUP_FRAMING_SYNC };
    bgdeliver_pacing_t pacing;
    int have;
    apr_status_t rv;

    if (r->main) {
        return DECLINED;
    }
    conf = ap_get_module_config(r->per_dir_config, &dialup_module);
    have = dialup_configured_line(conf, &line);
    /* An explicit ModemStandard None (with no rate of its own) also shuts
     * out per-request selection: e.g. for /server-status. */
    if (!have && conf->standard == &dialup_none) {
        return DECLINED;
    }
    if (!dialup_env_line(r, conf, &line, have)) {
        return DECLINED;
    }
    if (!line.label) {
        line.label = apr_psprintf(r->pool, "%" APR_INT64_T_FMT "bps",
                                  line.bits);
    }

    if (!dialup_request_background) {
        /* post_config refuses to start when the main configuration uses
         * us without the engine; this is .htaccess, or a line chosen by
         * the variables alone. */
        if (apr_atomic_cas32(&dialup_warned_engine, 1, 0) == 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                          "DLP005: %s asks for modem emulation but "
                          "mod_bgdeliver is not loaded; responses go out "
                          "at full speed (add LoadModule bgdeliver_module)",
                          r->uri);
        }
        return DECLINED;
    }

    memset(&pacing, 0, sizeof(pacing));
    pacing.rate = dialup_bytes_per_sec(&line);
    pacing.latency = line.latency;
    pacing.pulse = conf->pulse != DIALUP_UNSET ? conf->pulse
                                               : BGDELIVER_DEFAULT_PULSE;
    pacing.burst = conf->burst != DIALUP_UNSET ? conf->burst : 0;
    pacing.label = line.label;

    if (r->connection->master
        && apr_atomic_cas32(&dialup_warned_h2, 1, 0) == 0) {
        ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r,
                      "DLP009: modem emulation of HTTP/2 streams is paced "
                      "inside the worker: each paced stream holds an h2 "
                      "worker for its whole duration (logged once)");
    }

    rv = dialup_request_background(r, &pacing);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r,
                      "DLP010: the engine refused to pace this request");
        return DECLINED;
    }
    apr_table_setn(r->notes, "dialup", line.label);
    if (APLOGrtrace1(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                      "DLP011: %s: %" APR_INT64_T_FMT " bit/s, %d bits "
                      "per byte = %.1f B/s, latency %"
                      APR_TIME_T_FMT " ms, burst %" APR_OFF_T_FMT
                      ", pulse %" APR_TIME_T_FMT " ms", line.label, line.bits,
                      line.framing, pacing.rate,
                      apr_time_as_msec(pacing.latency), pacing.burst,
                      apr_time_as_msec(pacing.pulse));
    }
    return DECLINED;
}

static void dialup_optional_fn_retrieve(void)
{
    dialup_request_background =
        APR_RETRIEVE_OPTIONAL_FN(bgdeliver_request_background);
}

/* Where mod_bgdeliver.so most likely is: next to this module. */
static const char *dialup_engine_path(apr_pool_t *p)
{
#if DIALUP_HAVE_DLADDR
    Dl_info info;
    if (dladdr((void *)&dialup_module, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            return apr_pstrcat(p, apr_pstrmemdup(p, info.dli_fname,
                                   (apr_size_t)(slash - info.dli_fname) + 1),
                               "mod_bgdeliver.so", NULL);
        }
    }
#endif
    return "modules/mod_bgdeliver.so";
}

static const char *dialup_engine_missing(apr_pool_t *p)
{
    return apr_psprintf(p, "ModemStandard and the Dialup directives need "
                        "mod_bgdeliver, which is not loaded: add "
                        "\"LoadModule bgdeliver_module %s\" to the "
                        "configuration (on Debian: a2enmod bgdeliver)",
                        dialup_engine_path(p));
}

static int dialup_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp)
{
    (void)pconf; (void)plog; (void)ptemp;
    dialup_configured = 0;
    return OK;
}

/* The optional function is looked up directly here: the
 * optional_fn_retrieve hooks only run after post_config. */
static int dialup_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    APR_OPTIONAL_FN_TYPE(bgdeliver_waits_off_worker) *waits_off_worker;

    (void)plog;

    if (!dialup_configured) {
        return OK;
    }
    if (!APR_RETRIEVE_OPTIONAL_FN(bgdeliver_request_background)) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, s,
                     "DLP001: %s", dialup_engine_missing(ptemp));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                 "DLP004: %s (%s)", DIALUP_VERSION, DIALUP_FEATURES);
    /* The engine's own condition (its BGD001), not a second copy of it;
     * an engine older than the function says nothing. */
    waits_off_worker = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_waits_off_worker);
    if (waits_off_worker && !waits_off_worker()) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "DLP003: the %s MPM cannot pace without a worker: each "
                     "response under ModemStandard holds its worker (or "
                     "process) until its last byte, as with mod_ratelimit; "
                     "use the event MPM", ap_show_mpm());
    }
    (void)pconf;
    return OK;
}

/* `apachectl -t` does not run post_config: warn there too. */
static void dialup_test_config(apr_pool_t *pconf, server_rec *s)
{
    if (dialup_configured
        && !APR_RETRIEVE_OPTIONAL_FN(bgdeliver_request_background)) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_WARNING, 0, s,
                     "DLP002: %s; the server will refuse to start",
                     dialup_engine_missing(pconf));
    }
}

static int dialup_status_hook(request_rec *r, int flags)
{
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "DialupVersion: %s\n", DIALUP_VERSION);
        ap_rprintf(r, "DialupFeatures: %s\n", DIALUP_FEATURES);
        ap_rprintf(r, "DialupEngine: %s\n",
                   dialup_request_background ? "mod_bgdeliver" : "missing");
        return OK;
    }
    ap_rprintf(r, "<hr>\n<h2>Modem emulation (mod_dialup)</h2>\n"
               "<dl><dt>%s: %s; engine %s</dt>\n<dt>Standards: %s</dt>"
               "</dl>\n", DIALUP_VERSION, DIALUP_FEATURES,
               dialup_request_background ? "mod_bgdeliver" : "missing",
               ap_escape_html(r->pool, dialup_preset_names(r->pool)));
    return OK;
}

/* ------------------------------------------------------- configuration */

static void *dialup_create_dir_conf(apr_pool_t *p, char *dir)
{
    dialup_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->standard = NULL;
    conf->rate = DIALUP_UNSET;
    conf->latency = DIALUP_UNSET;
    conf->framing = DIALUP_UNSET;
    conf->burst = DIALUP_UNSET;
    conf->pulse = DIALUP_UNSET;
    return conf;
}

#define DIALUP_MERGE(field) \
    conf->field = add->field != DIALUP_UNSET ? add->field : base->field

/*
 * Nested scopes inherit field by field, except that a ModemStandard in
 * the nested scope describes a new line: the rate, latency and framing
 * inherited from outside are dropped (the scope's own Dialup directives
 * still refine it).  Burst and pulse are delivery settings and always
 * inherit.
 */
static void *dialup_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    dialup_dir_conf_t *base = basev, *add = addv;
    dialup_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    if (add->standard) {
        conf->standard = add->standard;
        conf->rate = add->rate;
        conf->latency = add->latency;
        conf->framing = add->framing;
    }
    else {
        conf->standard = base->standard;
        DIALUP_MERGE(rate);
        DIALUP_MERGE(latency);
        DIALUP_MERGE(framing);
    }
    DIALUP_MERGE(burst);
    DIALUP_MERGE(pulse);
    return conf;
}

/* Only the configuration read at start-up counts: .htaccess files are
 * parsed per request, on many threads at once, long after post_config. */
static void dialup_note_configured(void)
{
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_RUN_MPM) {
        dialup_configured = 1;
    }
}

static const char *dialup_cmd_standard(cmd_parms *cmd, void *dconf,
                                       const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    const dialup_preset_t *std = dialup_find_preset(arg);

    if (!std) {
        return apr_psprintf(cmd->pool, "%s: unknown standard '%s'; valid "
                            "standards (case-insensitive): %s",
                            cmd->cmd->name, arg,
                            dialup_preset_names(cmd->pool));
    }
    conf->standard = std;
    dialup_note_configured();
    return NULL;
}

static const char *dialup_cmd_rate(cmd_parms *cmd, void *dconf,
                                   const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    const char *err = dialup_parse_bits(arg, &conf->rate);
    if (err) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid rate (%s); "
                            "expected bits per second from %d to 100G, "
                            "optionally with a k, M or G suffix (powers of "
                            "1000), e.g. 33.6k or 1.544M", cmd->cmd->name,
                            arg, err, DIALUP_MIN_BITS);
    }
    dialup_note_configured();
    return NULL;
}

static const char *dialup_cmd_latency(cmd_parms *cmd, void *dconf,
                                      const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    const char *err = dialup_parse_time(arg, 0, DIALUP_MAX_LATENCY,
                                        &conf->latency);
    if (err) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid latency "
                            "(%s); expected milliseconds from 0 to 60000, "
                            "optionally with ms or s (e.g. 150, 150ms, "
                            "0.15s)", cmd->cmd->name, arg, err);
    }
    dialup_note_configured();
    return NULL;
}

static const char *dialup_cmd_framing(cmd_parms *cmd, void *dconf,
                                      const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    if (!strcasecmp(arg, "sync") || !strcmp(arg, "8")) {
        conf->framing = DIALUP_FRAMING_SYNC;
    }
    else if (!strcasecmp(arg, "async") || !strcmp(arg, "10")) {
        conf->framing = DIALUP_FRAMING_ASYNC;
    }
    else {
        return apr_psprintf(cmd->pool, "%s: '%s' is not valid; expected "
                            "'sync' or 8 (bits per byte), or 'async' or 10 "
                            "(bits per byte: start and stop bit)",
                            cmd->cmd->name, arg);
    }
    dialup_note_configured();
    return NULL;
}

static const char *dialup_cmd_burst(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    apr_off_t burst;

    if (bgdeliver_parse_size(arg, &burst) || burst > DIALUP_MAX_BURST) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid size; "
                            "expected whole bytes from 0 to 1G, optionally "
                            "with a k, M or G suffix (powers of 1024), "
                            "e.g. 4k",
                            cmd->cmd->name, arg);
    }
    conf->burst = burst;
    dialup_note_configured();
    return NULL;
}

static const char *dialup_cmd_pulse(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    dialup_dir_conf_t *conf = dconf;
    const char *err = dialup_parse_time(arg, DIALUP_MIN_PULSE,
                                        DIALUP_MAX_PULSE, &conf->pulse);
    if (err) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid pulse length "
                            "(%s); expected milliseconds from 10 to 1000, "
                            "optionally with ms or s (e.g. 100ms)",
                            cmd->cmd->name, arg, err);
    }
    dialup_note_configured();
    return NULL;
}

/* ------------------------------------------------------------ register */

static void dialup_register_hooks(apr_pool_t *p)
{
    /* mod_dir's fixups (also APR_HOOK_LAST) may swap in the per-dir
     * configuration of the index file; mod_rewrite's per-dir rules (a
     * fixups hook) set environment variables: decide after both. */
    static const char *const after[] = { "mod_dir.c", "mod_rewrite.c",
                                         NULL };
    (void)p;

    ap_hook_fixups(dialup_fixups, after, NULL, APR_HOOK_LAST);
    ap_hook_optional_fn_retrieve(dialup_optional_fn_retrieve, NULL, NULL,
                                 APR_HOOK_MIDDLE);
    ap_hook_pre_config(dialup_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* Late, so that the refusal to start comes after other modules' own
     * configuration errors; it does not depend on them. */
    ap_hook_post_config(dialup_post_config, NULL, NULL, APR_HOOK_LAST);
    ap_hook_test_config(dialup_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, dialup_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

/* Every directive is allowed wherever FileInfo overrides are (server,
 * virtual host, <Directory>, <Location>, <Files>, and .htaccess with
 * AllowOverride FileInfo), like SetOutputFilter and mod_ratelimit. */
static const command_rec dialup_cmds[] = {
    AP_INIT_TAKE1("ModemStandard", dialup_cmd_standard, NULL, OR_FILEINFO,
                  "Line to emulate: V.21, V.22, V.22bis, V.26bis, V.32, "
                  "V.32bis, V.34, V.34+, V.90, V.92, ISDN-64k, ISDN-128k, "
                  "T1 (or i-was-rich-and-got-a-leased-line), Slow-3G, "
                  "Fast-3G, or None"),
    AP_INIT_TAKE1("DialupRate", dialup_cmd_rate, NULL, OR_FILEINFO,
                  "Line rate in bits/s (k, M, G suffixes), instead of the "
                  "standard's"),
    AP_INIT_TAKE1("DialupLatency", dialup_cmd_latency, NULL, OR_FILEINFO,
                  "Delay of the first byte after the request, in ms"),
    AP_INIT_TAKE1("DialupFraming", dialup_cmd_framing, NULL, OR_FILEINFO,
                  "sync (8 bits per byte, default) or async (10 bits)"),
    AP_INIT_TAKE1("DialupBurst", dialup_cmd_burst, NULL, OR_FILEINFO,
                  "Bytes sent at once when the latency has elapsed"),
    AP_INIT_TAKE1("DialupPulse", dialup_cmd_pulse, NULL, OR_FILEINFO,
                  "Longest gap between two writes, in ms (default 100)"),
    { NULL }
};

AP_DECLARE_MODULE(dialup) = {
    STANDARD20_MODULE_STUFF,
    dialup_create_dir_conf,     /* create per-directory config */
    dialup_merge_dir_conf,      /* merge per-directory config */
    NULL,                       /* create per-server config: none, every
                                 * setting is per directory */
    NULL,                       /* merge per-server config */
    dialup_cmds,                /* command table */
    dialup_register_hooks,      /* register hooks */
    AP_MODULE_FLAG_NONE         /* flags */
};
