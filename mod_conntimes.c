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
 * mod_conntimes: where every request's time goes.
 *
 * Each request is cut at seven instants into six consecutive phases, so that
 * the phases always add up to the total:
 *
 *   arrival --queue--> pickup --accept--> ready --read--> headers
 *           --filter--> handler start --run--> handler end
 *           --deliver--> logged
 *
 *  arrival   the kernel's receive time stamp of the request's first bytes
 *            (SO_TIMESTAMPNS on the listening sockets is inherited by the
 *            accepted ones; the core reads the socket through our bucket,
 *            whose recvmsg() returns it with the bytes),
 *            else the moment a worker saw the bytes come in; for an HTTP/2
 *            stream the moment mod_http2 had its headers.
 *  pickup    a worker took the connection (pre_connection) or, on a
 *            kept-alive connection, started on the next request.  Queueing
 *            for a worker happens before it: in the kernel's accept backlog
 *            (all MPMs accept only when a worker is idle) or in the event
 *            MPM's listener.
 *  ready     the first bytes of the request were available to the HTTP
 *            parser (after the TLS handshake on a new TLS connection).
 *  headers   the request line and headers were parsed (post_read_request).
 *  handler   the content handler started (handler hook) and ended: the EOR
 *            bucket passed our connection filter, the handler returned
 *            SUSPENDED, or mod_bgdeliver took the response over (hand-off).
 *  logged    log_transaction: the last byte was handed to the kernel.
 *
 * Worker time is the part of [pickup, logged] during which a worker thread
 * held the request; what follows the moment the MPM let the worker go
 * (suspend_connection: write completion, SUSPENDED) or the hand-off to
 * mod_bgdeliver (whose own slices count as worker time) is off-worker.
 *
 * The phases are available to mod_log_config (%{phase}^CT, %^CS), summed
 * lock-free into histograms in one anonymous shared memory segment shared by
 * all children (striped by CPU, found again after a graceful restart through
 * the retained data), kept as a 24-hour time series, and shown by the
 * "conntimes-status" handler (HTML with inline SVG charts, ?auto, ?json,
 * ?prometheus) and in a section of mod_status.
 *
 * Hooks: pre_config (log tags, LogFormat nickname), post_config (shared
 * memory, time stamps on the listeners), child_init and child_status (each
 * child's entry for the suspended gauge), optional_fn_retrieve
 * (mod_bgdeliver), pre_connection (connection filters),
 * insert_network_bucket (the socket bucket), pre_read_request,
 * post_read_request, handler (start of the run phase and the status page),
 * suspend/resume_connection, log_transaction (close and record), and
 * mod_status's status_hook.
 */

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "ap_listen.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "util_cfgtree.h"
#include "mod_log_config.h"
#include "mod_status.h"

#include "apr_atomic.h"
#include "apr_lib.h"
#include "apr_optional.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#endif

#include "mod_bgdeliver.h"
#include "mod_conntimes.h"

module AP_MODULE_DECLARE_DATA conntimes_module;

/* ------------------------------------------------------------ constants */

#define CONNTIMES_HANDLER        "conntimes-status"
#define CONNTIMES_FILTER_IN      "CONNTIMES_IN"
#define CONNTIMES_FILTER_OUT     "CONNTIMES_OUT"
#define CONNTIMES_RETAINED_KEY   "mod_conntimes-retained"
#define CONNTIMES_SHM_MAGIC      0x43544d31u   /* "CTM1" */
#define CONNTIMES_LAYOUT_VERSION 6u
#define CONNTIMES_NICKNAME       "conntimes"

/* Phases, in the order every output lists them. */
enum {
    CT_ACCEPT, CT_QUEUE, CT_READ, CT_FILTER, CT_RUN, CT_DELIVER,
    CT_TOTAL, CT_WORKER, CT_OFFWORKER, CT_NPHASE
};
static const char *const conntimes_phase_names[CT_NPHASE] = {
    "accept", "queue", "read", "filter", "run", "deliver",
    "total", "worker", "offworker"
};
/* The same names as they appear in ?auto keys. */
static const char *const conntimes_phase_keys[CT_NPHASE] = {
    "Accept", "Queue", "Read", "Filter", "Run", "Deliver",
    "Total", "Worker", "Offworker"
};

/* Delivery classes. */
enum { CT_FG, CT_BG, CT_NCLASS };
static const char *const conntimes_class_names[CT_NCLASS] = { "fg", "bg" };

/* Histogram upper bounds in tenths of a microsecond: five per decade
 * (1, 1.6, 2.5, 4, 6.3) from 1 us to 100 s, then +Inf.  Tenths keep the
 * bounds integral; a duration d in us falls in the first bucket with
 * 10 * d <= bound. */
#define CONNTIMES_DECADE(d) (d) * 10, (d) * 16, (d) * 25, (d) * 40, (d) * 63
static const apr_uint64_t conntimes_bounds[] = {
    CONNTIMES_DECADE(APR_UINT64_C(1)),
    CONNTIMES_DECADE(APR_UINT64_C(10)),
    CONNTIMES_DECADE(APR_UINT64_C(100)),
    CONNTIMES_DECADE(APR_UINT64_C(1000)),
    CONNTIMES_DECADE(APR_UINT64_C(10000)),
    CONNTIMES_DECADE(APR_UINT64_C(100000)),
    CONNTIMES_DECADE(APR_UINT64_C(1000000)),
    CONNTIMES_DECADE(APR_UINT64_C(10000000)),
    APR_UINT64_C(1000000000)
};
#define CT_NBOUND  (sizeof(conntimes_bounds) / sizeof(conntimes_bounds[0]))
#define CT_NBUCKET (CT_NBOUND + 1)

/* Slow requests listed. */
#define CT_NSLOW         32

/* Points at most in a chart of the page: one per pixel column of its plot,
 * 526 pixels wide (see conntimes_svg_chart()).  A longer series is merged
 * (see conntimes_window()); more points only make the page bigger. */
#define CT_CHART_POINTS  512

/* Yields a rare path waits for a lock held by another (see conntimes_lock). */
#define CT_LOCK_SPINS    1000

/* Handler name slots. */
#define CT_HANDLER_FREE  0
#define CT_HANDLER_READY 2
#define CT_HANDLER_LEN   64
#define CT_NO_HANDLER    "(none)"
#define CT_DEFAULT_HANDLER "default-handler"
#define CT_REDIRECT_HANDLER "redirect-handler"
#define CT_OVERFLOW_NAME "(other)"

#define CT_UNSET (-1)

/* Defaults. */
#define CT_DEF_MAX_HANDLERS   16
#define CT_DEF_INTERVAL       60
#define CT_DEF_SLOTS          1440
#define CT_DEF_SLOW           apr_time_from_sec(1)
#define CT_MAX_STRIPES        16

/* How long the status page waits for the kernel's list of listening
 * sockets (answered at once in practice) before it falls back. */
#define CT_DIAG_TIMEOUT       apr_time_from_msec(200)

/* ------------------------------------------------------------ types */

/* Shared memory: everything is made of 64-bit counters updated with
 * atomics, so that a request takes no lock; only the rare first request of
 * a handler name or of a time-series interval takes a tiny one. */
typedef struct {
    apr_uint64_t sum;                   /* microseconds */
    apr_uint64_t max;
    apr_uint64_t bucket[CT_NBUCKET];
} conntimes_hist_t;

/* Sources of arrival times, by conntimes_arrival_e.  They are counted in
 * the stripes with the phases: one counter in the header would be written
 * by every request on every CPU, and the header is read by all of them. */
#define CT_NARRIVAL 3

typedef struct {
    apr_uint64_t count;                 /* by readers, see conntimes_agg_sum */
    apr_uint64_t arrivals[CT_NARRIVAL];
    conntimes_hist_t phase[CT_NPHASE];
} conntimes_agg_t;

/* The open interval of the time series (see conntimes_series_turn()). */
typedef struct {
    volatile apr_uint64_t tag;          /* its number: seconds / interval */
    apr_uint64_t max[CT_NPHASE];        /* its maxima, which do not subtract */
    conntimes_agg_t base;               /* the stripes' totals at its start */
} conntimes_series_t;

typedef struct {
    apr_uint64_t sum;
    apr_uint32_t max;
    apr_uint32_t p50;
    apr_uint32_t p99;
    apr_uint32_t spare;
} conntimes_point_t;

typedef struct {
    volatile apr_uint64_t tag;          /* interval number + 1, 0 = empty */
    apr_uint64_t count;
    conntimes_point_t phase[CT_NPHASE];
} conntimes_closed_t;

typedef struct {
    volatile apr_uint32_t seq;          /* odd while being written */
    apr_uint32_t status;
    apr_time_t start;
    apr_uint32_t us[CT_NPHASE];
    apr_uint32_t background;
    char client[48];
    char method[16];
    char uri[200];
    char handler[CT_HANDLER_LEN];
} conntimes_slow_t;

typedef struct {
    volatile apr_uint32_t state;
    char name[CT_HANDLER_LEN - 4];
} conntimes_handler_t;

/* The connections one child process holds suspended.  Each child counts
 * in an entry of its own, so that the parent can drop the count of a child
 * that died (SIGKILL, a crash) without undoing it. */
typedef struct {
    volatile apr_uint32_t pid;          /* 0 = free */
    volatile apr_uint32_t suspended;
} conntimes_proc_t;

typedef struct {
    apr_uint32_t magic;
    apr_uint32_t layout;
    apr_uint32_t nstripes;
    apr_uint32_t nhandlers;             /* named slots; one more overflows */
    apr_uint32_t nslots;
    apr_uint32_t interval;              /* seconds */
    apr_uint32_t nprocs;                /* ServerLimit: entries of procs */
    apr_uint64_t size;
    apr_time_t created;
    volatile apr_uint64_t reset_time;
    volatile apr_uint32_t handler_lock;
    volatile apr_uint32_t slow_next;
    volatile apr_uint32_t series_lock;
    char token[40];
} conntimes_shm_hdr_t;

/* A process-local map of the segment. */
typedef struct {
    apr_shm_t *shm;
    conntimes_shm_hdr_t *hdr;
    conntimes_handler_t *handlers;
    char *stripes;
    apr_size_t stripe_size;
    conntimes_series_t *series;
    conntimes_closed_t *closed;
    conntimes_slow_t *slow;
    conntimes_proc_t *procs;
} conntimes_shm_t;

/* Kept in the process pool across restarts. */
typedef struct {
    conntimes_shm_t map;
    int valid;
} conntimes_retained_t;

typedef struct conntimes_req_t conntimes_req_t;

typedef struct {
    conn_rec *c;
    int fd;                             /* -1 when not a socket of ours */
    int secondary;                      /* HTTP/2 stream (c->master) */
    /* cppcheck-suppress unusedStructMember ; used where SO_TIMESTAMPNS is */
    int stamps;                         /* SO_TIMESTAMPNS known on fd */
    int requests;                       /* requests started so far */
    apr_time_t pickup;
    /* Kept by our network bucket, where the kernel stamps arrivals: */
    apr_socket_t *bucket_sock;          /* read through our bucket, or NULL */
    apr_time_t last_stamp;              /* the newest read's arrival */
    apr_time_t armed_stamp;             /* the first read's since armed */
    int armed;                          /* the in filter waits for a read */
    apr_time_t next_arrival;            /* first bytes of the next request */
    apr_time_t next_first_stamp;        /* of the read that saw them */
    int next_source;
    conntimes_req_t *reading;           /* waiting for its first bytes */
    conntimes_req_t *current;           /* read, its EOR not passed yet */
    conntimes_req_t *passing;           /* its EOR is being passed down */
    conntimes_req_t *setaside;          /* its EOR waits in the core filter */
    int suspended;                      /* counted in the suspended gauge */
    /* When a handler returned SUSPENDED, and for which request: kept here,
     * not in the request, which another worker may be finishing (and its
     * pool destroying) while the MPM runs the suspend hook. */
    apr_time_t suspended_at;
    int suspended_seq;
} conntimes_conn_t;

struct conntimes_req_t {
    conntimes_conn_t *cc;
    apr_time_t arrival;
    apr_time_t pickup;
    apr_time_t ready;
    apr_time_t headers;
    apr_time_t hstart;
    apr_time_t hend;
    apr_time_t released;                /* the MPM let its worker go */
    apr_time_t logged;                  /* end of the phases, when final */
    apr_time_t switched;                /* handed to another protocol (h2c) */
    const char *handler;
    int source;                         /* conntimes_arrival_e */
    int by_type;                        /* no handler set after fixups */
    int seq;                            /* its number on the connection */
    int suspended;
    int done;
    conntimes_phases_t ph;
};

typedef struct {
    int record;                         /* ConntimesRecord */
    int allow_reset;                    /* ConntimesAllowReset */
} conntimes_dir_conf_t;

typedef struct {
    int max_handlers;                   /* ConntimesMaxHandlers */
    int interval;                       /* ConntimesSeriesInterval */
    int slots;                          /* ConntimesSeriesSlots */
    int kernel_stamps;                  /* ConntimesKernelTimestamps */
    apr_interval_time_t slow;           /* ConntimesSlowThreshold */
    int slow_set;
} conntimes_srv_conf_t;

/* Read-side summary of one histogram. */
typedef struct {
    apr_uint64_t count;
    double avg, p50, p90, p99;          /* microseconds */
    apr_uint64_t sum, max;
} conntimes_stat_t;

/* ------------------------------------------------------------ globals */

/* Set once in post_config (parent) and inherited by the children. */
static conntimes_shm_t *conntimes_shm;
/* This child's entry of conntimes_shm->procs (child_init); NULL in the
 * parent, and in a child that found none free. */
static conntimes_proc_t *conntimes_proc;
static conntimes_srv_conf_t *conntimes_global;
static ap_filter_rec_t *conntimes_in_handle;
static ap_filter_rec_t *conntimes_out_handle;
/* mod_remoteip's PROXY protocol filter, when that module is loaded. */
static ap_filter_rec_t *conntimes_proxy_handle;

static APR_OPTIONAL_FN_TYPE(bgdeliver_request_info) *conntimes_bgd_info;
static APR_OPTIONAL_FN_TYPE(bgdeliver_get_totals) *conntimes_bgd_totals;

/* ------------------------------------------------------------ atomics */

/* Every request makes some twenty additions to the shared counters: where
 * the compiler has lock-free 64-bit atomics they are inlined, not calls
 * into libapr (whose functions use the same instructions, so readers that
 * go through APR see the same values).  Counters need no ordering. */
#if defined(__GCC_ATOMIC_LLONG_LOCK_FREE) && __GCC_ATOMIC_LLONG_LOCK_FREE == 2
#define CONNTIMES_ADD64(where, v) \
    ((void)__atomic_fetch_add((where), (v), __ATOMIC_RELAXED))
#define CONNTIMES_READ64(where) __atomic_load_n((where), __ATOMIC_RELAXED)
#define CONNTIMES_CAS64(where, with, cmp) \
    __atomic_compare_exchange_n((where), (cmp), (with), 0, \
                                __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#else
#define CONNTIMES_ADD64(where, v) ((void)apr_atomic_add64((where), (v)))
#define CONNTIMES_READ64(where) apr_atomic_read64(where)
#define CONNTIMES_CAS64(where, with, cmp) \
    (apr_atomic_cas64((where), (with), *(cmp)) == *(cmp) ? 1 \
     : (*(cmp) = apr_atomic_read64(where), 0))
#endif

/* A pointer published by one thread after the data it points to or keys
 * (release), and read with that data by others (acquire). */
#if defined(__GNUC__)
#define CONNTIMES_LOAD_PTR(where) __atomic_load_n((where), __ATOMIC_ACQUIRE)
#define CONNTIMES_STORE_PTR(where, v) \
    __atomic_store_n((where), (v), __ATOMIC_RELEASE)
#else
#define CONNTIMES_LOAD_PTR(where) \
    apr_atomic_casptr((volatile void **)(where), NULL, NULL)
#define CONNTIMES_STORE_PTR(where, v) \
    ((void)apr_atomic_xchgptr((volatile void **)(where), (void *)(v)))
#endif

/* Sets an empty key *where to v; returns what it held before (NULL: the
 * caller has taken it). */
static APR_INLINE const char *conntimes_claim_key(const char **where,
                                                  const char *v)
{
#if defined(__GNUC__)
    const char *was = NULL;

    __atomic_compare_exchange_n(where, &was, v, 0, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
    return was;
#else
    return apr_atomic_casptr((volatile void **)where, (void *)v, NULL);
#endif
}

static APR_INLINE void conntimes_max64(apr_uint64_t *where, apr_uint64_t v)
{
    apr_uint64_t cur = CONNTIMES_READ64(where);

    /* A failed exchange leaves in cur what another request stored. */
    while (v > cur) {
        if (CONNTIMES_CAS64(where, v, &cur)) {
            break;
        }
    }
}

/* The first bucket that can hold a duration of each bit length (in
 * tenths of a us): bounds step by about 1.6, so from there a value is at
 * most two bounds away.  Filled in pre_config. */
static apr_size_t conntimes_bucket_start[65];

static void conntimes_bucket_start_init(void)
{
    apr_size_t b = 0;
    int k;

    for (k = 1; k <= 64; k++) {
        apr_uint64_t lowest = APR_UINT64_C(1) << (k - 1);
        while (b < CT_NBOUND - 1 && conntimes_bounds[b] < lowest) {
            b++;
        }
        conntimes_bucket_start[k] = b;
    }
}

static apr_size_t conntimes_bucket_of(apr_uint64_t us)
{
    apr_uint64_t tenths = us * 10;
    apr_size_t b = 0;

    if (us > APR_UINT64_C(100000000)) {
        return CT_NBOUND;
    }
#if defined(__GNUC__)
    if (tenths) {
        b = conntimes_bucket_start[64 - __builtin_clzll(tenths)];
    }
#endif
    /* The last bound is 100 s, the largest duration that gets here. */
    while (tenths > conntimes_bounds[b]) {
        b++;
    }
    return b;
}

/* Locked instructions are most of what recording costs a request: a
 * phase that took no time adds nothing to its sum and cannot raise its
 * maximum. */
static void conntimes_agg_add(conntimes_agg_t *agg, const apr_uint64_t *us,
                              int arrival)
{
    int i;

    for (i = 0; i < CT_NPHASE; i++) {
        conntimes_hist_t *h = &agg->phase[i];
        if (us[i]) {
            CONNTIMES_ADD64(&h->sum, us[i]);
            conntimes_max64(&h->max, us[i]);
        }
        CONNTIMES_ADD64(&h->bucket[conntimes_bucket_of(us[i])], 1);
    }
    CONNTIMES_ADD64(&agg->arrivals[arrival], 1);
}

/* Readers sum stripes with plain atomic reads: a request being recorded
 * at that moment may be half counted, which the page can live with.  Every
 * request adds one to one bucket of each phase, so the count is that of
 * the total's histogram: the request path does not keep it. */
static void conntimes_agg_sum(conntimes_agg_t *into, conntimes_agg_t *from)
{
    int i;
    apr_size_t b;

    for (i = 0; i < CT_NARRIVAL; i++) {
        into->arrivals[i] += apr_atomic_read64(&from->arrivals[i]);
    }
    for (i = 0; i < CT_NPHASE; i++) {
        conntimes_hist_t *d = &into->phase[i], *s = &from->phase[i];
        apr_uint64_t m = apr_atomic_read64(&s->max);
        d->sum += apr_atomic_read64(&s->sum);
        if (m > d->max) {
            d->max = m;
        }
        for (b = 0; b < CT_NBUCKET; b++) {
            apr_uint64_t n = apr_atomic_read64(&s->bucket[b]);
            d->bucket[b] += n;
            if (i == CT_TOTAL) {
                into->count += n;
            }
        }
    }
}

/* ------------------------------------------------------------ statistics */

/* Percentile q (0..1) of a histogram, interpolating linearly inside the
 * bucket that holds it, whose top is the observed maximum when that lies
 * inside. */
static double conntimes_quantile(const conntimes_hist_t *h,
                                 apr_uint64_t count, double q)
{
    double rank = q * (double)count, cum = 0;
    apr_size_t b;

    if (!count) {
        return 0;
    }
    if (count == 1) {
        /* The only observation is the maximum: exact. */
        return (double)h->max;
    }
    for (b = 0; b < CT_NBUCKET; b++) {
        double n = (double)h->bucket[b];
        if (n > 0 && cum + n >= rank) {
            double lo = b ? (double)conntimes_bounds[b - 1] / 10.0 : 0;
            double hi = b < CT_NBOUND ? (double)conntimes_bounds[b] / 10.0
                                      : (double)h->max;
            /* The bucket that holds the maximum ends there. */
            if (hi > (double)h->max) {
                hi = (double)h->max;
            }
            return lo + (hi - lo) * ((rank - cum) / n);
        }
        cum += n;
    }
    return (double)h->max;
}

static void conntimes_stat(conntimes_stat_t *st, const conntimes_hist_t *h,
                           apr_uint64_t count)
{
    st->count = count;
    st->sum = h->sum;
    st->max = h->max;
    st->avg = count ? (double)h->sum / (double)count : 0;
    st->p50 = conntimes_quantile(h, count, 0.50);
    st->p90 = conntimes_quantile(h, count, 0.90);
    st->p99 = conntimes_quantile(h, count, 0.99);
}

/* Seconds with microsecond precision, exact for integral microseconds. */
static const char *conntimes_secs(apr_pool_t *p, double us)
{
    apr_uint64_t v = us < 0 ? 0 : (apr_uint64_t)(us + 0.5);
    return apr_psprintf(p, "%" APR_UINT64_T_FMT ".%06" APR_UINT64_T_FMT,
                        v / 1000000, v % 1000000);
}

/* A histogram bound (tenths of a us) as seconds, without trailing zeros. */
static const char *conntimes_bound_secs(apr_pool_t *p, apr_uint64_t tenths)
{
    char *s = apr_psprintf(p, "%" APR_UINT64_T_FMT ".%07" APR_UINT64_T_FMT,
                           tenths / 10000000, tenths % 10000000);
    char *e = s + strlen(s) - 1;

    while (*e == '0') {
        *e-- = '\0';
    }
    if (*e == '.') {
        *e = '\0';
    }
    return s;
}

/* ------------------------------------------------------------ shm map */

static apr_size_t conntimes_align(apr_size_t n)
{
    return (n + 63) & ~(apr_size_t)63;
}

/* Lay the regions out one after the other, each on its own cache line;
 * with a NULL base only the size is computed. */
static apr_size_t conntimes_layout(conntimes_shm_t *m, char *base,
                                   int nstripes, int nhandlers, int nslots,
                                   int nprocs)
{
    apr_size_t off_handlers, off_stripes, off_series, off_closed, off_slow;
    apr_size_t off_procs, end;
    apr_size_t stripe = conntimes_align(sizeof(conntimes_agg_t) * CT_NCLASS
                                        * (nhandlers + 1));

    off_handlers = conntimes_align(sizeof(conntimes_shm_hdr_t));
    off_stripes = off_handlers
                  + conntimes_align(sizeof(conntimes_handler_t) * nhandlers);
    off_series = off_stripes + stripe * nstripes;
    off_closed = off_series + conntimes_align(sizeof(conntimes_series_t));
    off_slow = off_closed
               + conntimes_align(sizeof(conntimes_closed_t) * nslots);
    off_procs = off_slow
                + conntimes_align(sizeof(conntimes_slow_t) * CT_NSLOW);
    end = off_procs + conntimes_align(sizeof(conntimes_proc_t) * nprocs);
    m->stripe_size = stripe;
    if (base) {
        m->hdr = (conntimes_shm_hdr_t *)base;
        m->handlers = (conntimes_handler_t *)(base + off_handlers);
        m->stripes = base + off_stripes;
        m->series = (conntimes_series_t *)(base + off_series);
        m->closed = (conntimes_closed_t *)(base + off_closed);
        m->slow = (conntimes_slow_t *)(base + off_slow);
        m->procs = (conntimes_proc_t *)(base + off_procs);
    }
    return end;
}

static conntimes_agg_t *conntimes_agg_at(conntimes_shm_t *m, int stripe,
                                         int cls, int slot)
{
    conntimes_agg_t *a = (conntimes_agg_t *)(m->stripes
                                             + m->stripe_size * stripe);
    return a + cls * (m->hdr->nhandlers + 1) + slot;
}

/* Stripe by CPU so that workers on different cores rarely share a cache
 * line; the thread id is a fallback where the CPU is unknown. */
static int conntimes_stripe(conntimes_shm_t *m)
{
    int n = (int)m->hdr->nstripes;
#if defined(__linux__)
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        return cpu % n;
    }
#endif
    return (int)(((apr_uintptr_t)apr_os_thread_current() >> 6) % (unsigned)n);
}

/* A child takes a free entry for its count of suspended connections. */
static conntimes_proc_t *conntimes_proc_claim(conntimes_shm_t *m)
{
    apr_uint32_t pid = (apr_uint32_t)getpid();
    apr_uint32_t i;

    for (i = 0; i < m->hdr->nprocs; i++) {
        if (apr_atomic_cas32(&m->procs[i].pid, pid, 0) == 0) {
            return &m->procs[i];
        }
    }
    return NULL;
}

/* The parent frees the entry of a child that is gone.  The count goes
 * first: with the pid first, a new child could take the entry and count in
 * it before the old count is wiped, and its own decrements would then run
 * the count below zero. */
static void conntimes_proc_free(conntimes_proc_t *e)
{
    apr_atomic_set32(&e->suspended, 0);
    apr_atomic_set32(&e->pid, 0);
}

/* Connections the MPM holds suspended now, in all children. */
static apr_uint32_t conntimes_suspended_now(conntimes_shm_t *m)
{
    apr_uint32_t i, n = 0;

    for (i = 0; i < m->hdr->nprocs; i++) {
        if (apr_atomic_read32(&m->procs[i].pid)) {
            n += apr_atomic_read32(&m->procs[i].suspended);
        }
    }
    return n;
}

static void conntimes_new_token(conntimes_shm_hdr_t *hdr)
{
    unsigned char raw[16];
    int i;

    if (apr_generate_random_bytes(raw, sizeof(raw)) != APR_SUCCESS) {
        apr_time_t t = apr_time_now() ^ (apr_time_t)getpid();
        memcpy(raw, &t, sizeof(t));
        memcpy(raw + 8, &t, sizeof(t));
    }
    for (i = 0; i < 16; i++) {
        apr_snprintf(hdr->token + 2 * i, 3, "%02x", raw[i]);
    }
}

/* A tiny lock for the rare paths (claiming a handler slot, turning the
 * time series, a reset), held for microseconds.  It holds the taker's
 * clock in ms, so that a lock whose holder seems dead (held for over a
 * second) is taken over.  Waits up to @spins yields (for ever when
 * negative, which the take-over bounds).  Returns the value the taker
 * stored, which conntimes_unlock() needs, or 0 when it could not be had. */
static apr_uint32_t conntimes_lock(volatile apr_uint32_t *lock, int spins)
{
    int i;

    for (i = 0; ; i++) {
        apr_uint32_t now_ms = (apr_uint32_t)(apr_time_as_msec(apr_time_now())
                                             | 1);
        apr_uint32_t held = apr_atomic_cas32(lock, now_ms, 0);
        if (held == 0) {
            return now_ms;
        }
        /* Signed: a holder that came after us is younger, not stale. */
        if ((apr_int32_t)(now_ms - held) > 1000
            && apr_atomic_cas32(lock, now_ms, held) == held) {
            return now_ms;
        }
        if (spins >= 0 && i >= spins) {
            return 0;
        }
        apr_thread_yield();
    }
}

/* Releases the lock only if it is still @mine: a holder that was merely
 * slow (descheduled for over a second) and got taken over must not
 * release the lock of the one that took it. */
static void conntimes_unlock(volatile apr_uint32_t *lock, apr_uint32_t mine)
{
    apr_atomic_cas32(lock, 0, mine);
}

/* ------------------------------------------------------------ handler slots */

/* Names are kept as printable ASCII, anything else shown as '?', and
 * compared that way: two names that differ only in bytes no output can show
 * share a slot, rather than being two series with one label value. */
static char conntimes_name_char(char c)
{
    unsigned char u = (unsigned char)c;
    return (u && (u < 0x20 || u >= 0x7f)) ? '?' : c;
}

static int conntimes_handler_is(const conntimes_handler_t *h,
                                const char *name)
{
    apr_size_t i;

    for (i = 0; i < sizeof(h->name) - 1; i++) {
        if (h->name[i] != conntimes_name_char(name[i])) {
            return 0;
        }
        if (!name[i]) {
            break;
        }
    }
    return 1;
}

/* Slot of a handler name: named slots are claimed once, under a tiny lock
 * that only this rare path takes; when the table is full, or the lock
 * cannot be had, the request goes to the overflow slot.  So does a handler
 * that calls itself by the overflow slot's name, which must stay unique. */
static int conntimes_handler_slot(conntimes_shm_t *m, const char *name)
{
    conntimes_shm_hdr_t *hdr = m->hdr;
    int n = (int)hdr->nhandlers, i;
    apr_uint32_t mine;

    for (i = 0; i < n; i++) {
        apr_uint32_t st = apr_atomic_read32(&m->handlers[i].state);
        if (st == CT_HANDLER_FREE) {
            break;
        }
        if (st == CT_HANDLER_READY
            && conntimes_handler_is(&m->handlers[i], name)) {
            return i;
        }
    }
    if (i == n || !strcmp(name, CT_OVERFLOW_NAME)
        || !(mine = conntimes_lock(&hdr->handler_lock, CT_LOCK_SPINS))) {
        return n;
    }
    for (i = 0; i < n; i++) {
        conntimes_handler_t *h = &m->handlers[i];
        if (apr_atomic_read32(&h->state) == CT_HANDLER_FREE) {
            apr_size_t k;
            for (k = 0; k < sizeof(h->name) - 1 && name[k]; k++) {
                h->name[k] = conntimes_name_char(name[k]);
            }
            h->name[k] = '\0';
            apr_atomic_set32(&h->state, CT_HANDLER_READY);
            break;
        }
        if (conntimes_handler_is(h, name)) {
            break;
        }
    }
    conntimes_unlock(&hdr->handler_lock, mine);
    return i;
}

/* ------------------------------------------------------------ time series */

static apr_uint32_t conntimes_u32(double v)
{
    return v >= 4294967295.0 ? 0xffffffffu : (apr_uint32_t)(v + 0.5);
}

/* Condense an open interval into its closed slot. */
static void conntimes_close_interval(conntimes_shm_t *m, apr_uint64_t tag,
                                     conntimes_agg_t *agg)
{
    conntimes_closed_t *cl = &m->closed[tag % m->hdr->nslots];
    int i;

    cl->count = agg->count;
    for (i = 0; i < CT_NPHASE; i++) {
        cl->phase[i].sum = agg->phase[i].sum;
        cl->phase[i].max = conntimes_u32((double)agg->phase[i].max);
        cl->phase[i].p50 = conntimes_u32(
            conntimes_quantile(&agg->phase[i], agg->count, 0.50));
        cl->phase[i].p99 = conntimes_u32(
            conntimes_quantile(&agg->phase[i], agg->count, 0.99));
    }
    apr_atomic_set64(&cl->tag, tag + 1);
}

static apr_uint64_t conntimes_interval_of(const conntimes_shm_t *m,
                                          apr_time_t t)
{
    return (apr_uint64_t)(apr_time_sec(t) / m->hdr->interval);
}

/* All stripes, classes and handler slots in one aggregate. */
static void conntimes_sum_all(conntimes_shm_t *m, conntimes_agg_t *into)
{
    int st, cls, slot, nh = (int)m->hdr->nhandlers + 1;

    memset(into, 0, sizeof(*into));
    for (st = 0; st < (int)m->hdr->nstripes; st++) {
        for (cls = 0; cls < CT_NCLASS; cls++) {
            for (slot = 0; slot < nh; slot++) {
                conntimes_agg_sum(into, conntimes_agg_at(m, st, cls, slot));
            }
        }
    }
}

/* The counters of @to less those of @from, into @d (which may be either);
 * unsigned, so exact even from a base that a reset took "below zero". */
static void conntimes_agg_diff(conntimes_agg_t *d, const conntimes_agg_t *to,
                               const conntimes_agg_t *from)
{
    int i;
    apr_size_t b;

    d->count = to->count - from->count;
    for (i = 0; i < CT_NARRIVAL; i++) {
        d->arrivals[i] = to->arrivals[i] - from->arrivals[i];
    }
    for (i = 0; i < CT_NPHASE; i++) {
        d->phase[i].sum = to->phase[i].sum - from->phase[i].sum;
        d->phase[i].max = 0;
        for (b = 0; b < CT_NBUCKET; b++) {
            d->phase[i].bucket[b] = to->phase[i].bucket[b]
                                    - from->phase[i].bucket[b];
        }
    }
}

/* The time series costs the request path no second aggregate: the open
 * interval is what the stripes gained since it opened, so only their
 * totals at that moment (the base) are kept, with its maxima, which do not
 * subtract.  The first request (or status page) that belongs to a newer
 * interval closes the open one as that difference, once, and makes the
 * current totals the next base.  It does so before the request is added,
 * which therefore counts in its own interval only; other requests of the
 * new interval wait for the lock meanwhile (tens of microseconds), and a
 * request whose interval is already closed counts in the open one.  After
 * a gap without requests the old interval is closed late with all that
 * came since its base, which is exactly its own.  A request recorded while
 * the stripes are being summed may land in either interval, as it may be
 * half counted on the status page. */
static void conntimes_series_close(conntimes_shm_t *m, apr_uint64_t tag)
{
    conntimes_series_t *se = m->series;
    conntimes_agg_t sum, d;
    int i;

    conntimes_sum_all(m, &sum);
    conntimes_agg_diff(&d, &sum, &se->base);
    for (i = 0; i < CT_NPHASE; i++) {
        /* One exchange: a maximum stored between a read and a zeroing
         * would be lost to both intervals. */
        d.phase[i].max = apr_atomic_xchg64(&se->max[i], 0);
    }
    if (tag && d.count) {
        conntimes_close_interval(m, tag, &d);
    }
    memcpy(&se->base, &sum, sizeof(sum));
}

/* Whether the series must turn from its open interval to @tag: a newer
 * interval, or one more than an interval older, which only a clock set back
 * explains (a request whose clock reading lost a race with the turn is one
 * interval late).  After a step back the open interval lies in the future,
 * where no status page looks: the series goes on from now. */
static int conntimes_series_must_turn(apr_uint64_t open, apr_uint64_t tag)
{
    return open < tag || open > tag + 1;
}

/* Turn the series to @tag, the interval of a request about to be recorded
 * or of a status page (see conntimes_series_must_turn()).  Without the
 * lock (held for over CT_LOCK_SPINS yields) the request counts in the open
 * interval. */
static void conntimes_series_turn(conntimes_shm_t *m, apr_uint64_t tag)
{
    conntimes_series_t *se = m->series;
    apr_uint64_t open = apr_atomic_read64(&se->tag);
    apr_uint32_t mine;

    /* A request that ended intervals ago, and is recorded only now (its
     * thread stalled: a paused VM, an overloaded host), must not be taken
     * for a clock set back: that would close the open interval without a
     * point and reopen an old one over its own.  Only the clock of now
     * tells; a late request counts in the open interval. */
    if (open > tag + 1) {
        tag = conntimes_interval_of(m, apr_time_now());
    }
    if (!conntimes_series_must_turn(open, tag)
        || !(mine = conntimes_lock(&m->hdr->series_lock, CT_LOCK_SPINS))) {
        return;
    }
    open = apr_atomic_read64(&se->tag);
    if (conntimes_series_must_turn(open, tag)) {
        /* A future interval gets no point: its slot in the ring is that of
         * an interval of the window.  Its requests stay in the totals. */
        conntimes_series_close(m, open < tag ? open : 0);
        apr_atomic_set64(&se->tag, tag);
    }
    conntimes_unlock(&m->hdr->series_lock, mine);
}

/* ------------------------------------------------------------ recording */

static void conntimes_copy_field(char *dst, apr_size_t len, const char *src)
{
    apr_cpystrn(dst, src ? src : "-", len);
}

/* An entry of the slow-request ring is written by one thread at a time:
 * the one that turns its sequence number from even to odd.  Another writer
 * (more slow requests at once than the ring has entries) or a reset finds
 * it odd and leaves it; readers skip it meanwhile. */
static int conntimes_slow_claim(conntimes_slow_t *e)
{
    apr_uint32_t seq = apr_atomic_read32(&e->seq);

    return !(seq & 1) && apr_atomic_cas32(&e->seq, seq + 1, seq) == seq;
}

static void conntimes_record_slow(conntimes_shm_t *m, request_rec *r,
                                  const conntimes_req_t *rs,
                                  const apr_uint64_t *us, int cls)
{
    apr_uint32_t idx = apr_atomic_inc32(&m->hdr->slow_next) % CT_NSLOW;
    conntimes_slow_t *e = &m->slow[idx];
    request_rec *last = r;
    int i;

    if (!conntimes_slow_claim(e)) {
        return;
    }
    while (last->next) {
        last = last->next;
    }
    e->start = rs->ph.start;
    e->status = (apr_uint32_t)last->status;
    e->background = (apr_uint32_t)cls;
    for (i = 0; i < CT_NPHASE; i++) {
        e->us[i] = conntimes_u32((double)us[i]);
    }
    conntimes_copy_field(e->client, sizeof(e->client), r->useragent_ip);
    conntimes_copy_field(e->method, sizeof(e->method), r->method);
    conntimes_copy_field(e->uri, sizeof(e->uri), r->unparsed_uri);
    conntimes_copy_field(e->handler, sizeof(e->handler),
                         rs->handler ? rs->handler : CT_NO_HANDLER);
    apr_atomic_inc32(&e->seq);
}

/* A sequence number that is only ever incremented, by writers and by a
 * reset alike, keeps its parity meaningful whatever their interleaving (a
 * reset that stored 0 in the middle of a write would invert it for good).
 * Its readers go through a compare-and-swap that changes nothing: a full
 * barrier, so that on weakly ordered CPUs the copy cannot be read outside
 * the two readings. */
static apr_uint32_t conntimes_seq_read(volatile apr_uint32_t *seq)
{
    return apr_atomic_cas32(seq, 0, 0);
}

/* Copies entry @idx of the slow-request ring into @e; 0 when the entry is
 * empty or was being written. */
static int conntimes_slow_copy(conntimes_shm_t *m, apr_uint32_t idx,
                               conntimes_slow_t *e)
{
    conntimes_slow_t *src = &m->slow[idx];
    apr_uint32_t seq = conntimes_seq_read(&src->seq);

    if (seq & 1) {
        return 0;
    }
    memcpy(e, src, sizeof(*e));
    if (conntimes_seq_read(&src->seq) != seq || !e->start) {
        return 0;
    }
    e->client[sizeof(e->client) - 1] = e->method[sizeof(e->method) - 1] = 0;
    e->uri[sizeof(e->uri) - 1] = e->handler[sizeof(e->handler) - 1] = 0;
    return 1;
}

static void conntimes_record(request_rec *r, conntimes_req_t *rs)
{
    conntimes_shm_t *m = conntimes_shm;
    apr_uint64_t us[CT_NPHASE];
    const conntimes_phases_t *ph = &rs->ph;
    int cls = ph->background ? CT_BG : CT_FG, slot, i;

    if (!m) {
        return;
    }
    us[CT_ACCEPT] = (apr_uint64_t)ph->accept;
    us[CT_QUEUE] = (apr_uint64_t)ph->queue;
    us[CT_READ] = (apr_uint64_t)ph->read;
    us[CT_FILTER] = (apr_uint64_t)ph->filter;
    us[CT_RUN] = (apr_uint64_t)ph->run;
    us[CT_DELIVER] = (apr_uint64_t)ph->deliver;
    us[CT_TOTAL] = (apr_uint64_t)ph->total;
    us[CT_WORKER] = (apr_uint64_t)ph->worker;
    us[CT_OFFWORKER] = (apr_uint64_t)ph->offworker;

    /* The interval is the one in which the request ended, the instant its
     * phases were closed at; a new one is opened before the request counts
     * (see conntimes_series_turn()). */
    conntimes_series_turn(m, conntimes_interval_of(m, rs->logged));
    slot = conntimes_handler_slot(m, rs->handler ? rs->handler
                                                 : CT_NO_HANDLER);
    conntimes_agg_add(conntimes_agg_at(m, conntimes_stripe(m), cls, slot), us,
                      ph->arrival);
    for (i = 0; i < CT_NPHASE; i++) {
        conntimes_max64(&m->series->max[i], us[i]);
    }

    if (conntimes_global && conntimes_global->slow > 0
        && ph->total >= conntimes_global->slow) {
        conntimes_record_slow(m, r, rs, us, cls);
    }
}

/* ------------------------------------------------------------ phases */

static conntimes_req_t *conntimes_req_of(const request_rec *r)
{
    while (r->main) {
        r = r->main;
    }
    while (r->prev) {
        r = r->prev;
        while (r->main) {
            r = r->main;
        }
    }
    return ap_get_module_config(r->request_config, &conntimes_module);
}

/* Cut [arrival, end] at the instants seen so far.  Instants never reached
 * take the value of the next one, and every instant is clamped to be no
 * earlier than the previous one, so the phases always sum to the total. */
static void conntimes_compute(request_rec *r, conntimes_req_t *rs,
                              apr_time_t end, int final,
                              conntimes_phases_t *ph)
{
    apr_time_t t[7];
    apr_interval_time_t on_worker;
    bgdeliver_info_t info;
    int i, bg = 0;

    memset(ph, 0, sizeof(*ph));
    memset(&info, 0, sizeof(info));
    if (conntimes_bgd_info && conntimes_bgd_info(r, &info)
        && info.background && info.handoff) {
        bg = 1;
    }

    /* The handler returned SUSPENDED: its run ended then, however late
     * the EOR that its callback sends later (which sets hend) passes. */
    if (rs->cc && rs->cc->suspended_at && rs->cc->suspended_seq == rs->seq
        && (!rs->hend || rs->cc->suspended_at < rs->hend)) {
        rs->hend = rs->cc->suspended_at;
        rs->suspended = 1;
    }
    t[0] = rs->arrival ? rs->arrival : rs->pickup;
    t[1] = rs->pickup;
    t[2] = rs->ready ? rs->ready : rs->pickup;
    t[6] = end;
    t[5] = bg ? info.handoff : (rs->hend ? rs->hend : (final ? end : 0));
    t[4] = rs->hstart ? rs->hstart : t[5];
    t[3] = rs->headers ? rs->headers : t[4];
    if (!final) {
        /* In progress: the first instant not reached yet ends at "now". */
        for (i = 1; i < 6; i++) {
            if (!t[i]) {
                t[i] = end;
            }
        }
    }
    for (i = 1; i < 7; i++) {
        if (t[i] < t[i - 1]) {
            t[i] = t[i - 1];
        }
    }

    ph->start = t[0];
    ph->queue = t[1] - t[0];
    ph->accept = t[2] - t[1];
    ph->read = t[3] - t[2];
    ph->filter = t[4] - t[3];
    ph->run = t[5] - t[4];
    ph->deliver = t[6] - t[5];
    ph->total = t[6] - t[0];
    ph->background = bg;
    ph->arrival = rs->source;

    /* How much of deliver a worker spent: the engine knows for background
     * deliveries; a suspended request left its worker at once; otherwise
     * the worker was held until the MPM let the connection go to write
     * completion (suspend_connection), or to the end.  The short slices of
     * write completion that follow count as off-worker. */
    if (bg) {
        on_worker = info.worker_time;
    }
    else if (rs->suspended) {
        on_worker = 0;
    }
    else if (rs->released) {
        on_worker = rs->released - t[5];
    }
    else {
        on_worker = ph->deliver;
    }
    if (on_worker < 0) {
        on_worker = 0;
    }
    if (on_worker > ph->deliver) {
        on_worker = ph->deliver;
    }
    ph->worker = ph->accept + ph->read + ph->filter + ph->run + on_worker;
    ph->offworker = ph->deliver - on_worker;
}

/* Detach a request from its connection's bookkeeping: runs when it is
 * logged, and as a pool cleanup for requests that die unlogged. */
static apr_status_t conntimes_req_cleanup(void *data)
{
    conntimes_req_t *rs = data;
    conntimes_conn_t *cc = rs->cc;

    if (cc) {
        if (cc->reading == rs) {
            cc->reading = NULL;
        }
        if (cc->current == rs) {
            cc->current = NULL;
        }
        if (cc->passing == rs) {
            cc->passing = NULL;
        }
        if (cc->setaside == rs) {
            cc->setaside = NULL;
        }
    }
    return APR_SUCCESS;
}

static void conntimes_finalize(request_rec *r, conntimes_req_t *rs)
{
    if (rs->done) {
        return;
    }
    rs->logged = apr_time_now();
    /* A request upgraded to another protocol ends at the switch: what
     * follows is the new protocol's (see conntimes_protocol_switch()). */
    conntimes_compute(r, rs, rs->switched ? rs->switched : rs->logged, 1,
                      &rs->ph);
    rs->done = 1;
    conntimes_req_cleanup(rs);
}

/* The optional function of include/mod_conntimes.h. */
static int conntimes_request_phases(request_rec *r, conntimes_phases_t *out)
{
    conntimes_req_t *rs = r ? conntimes_req_of(r) : NULL;

    if (!rs || !out) {
        return 0;
    }
    if (rs->done) {
        *out = rs->ph;
        return 1;
    }
    conntimes_compute(r, rs, apr_time_now(), 0, out);
    return 2;
}

/* ------------------------------------------------------------ arrival */

#if defined(__linux__) && defined(SO_TIMESTAMPNS)
/* The core input filter reads the client socket through one bucket that it
 * asks the insert_network_bucket hook for.  Ours reads exactly like APR's
 * socket bucket (8000-byte heap buckets, the socket's timeout, EOF as an
 * empty bucket) but with recvmsg(), so that the kernel's receive time stamp
 * comes with the bytes: no system call is added to a request. */

static apr_bucket *conntimes_net_bucket_create(conntimes_conn_t *cc,
                                               apr_bucket_alloc_t *list);

/* The stamp of what one recvmsg() returned (TCP gives the newest packet's),
 * or 0 when it carries none.  It is checked against the clock only where it
 * is taken as an arrival (conntimes_stamp_ok()), with the clock reading the
 * request needs there anyway. */
static apr_time_t conntimes_cmsg_stamp(struct msghdr *msg)
{
    struct cmsghdr *cm;

    for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            return apr_time_from_sec(ts.tv_sec) + ts.tv_nsec / 1000;
        }
    }
    return 0;
}

/* One recvmsg() that honours the socket's timeout the way apr_socket_recv()
 * does (mod_reqtimeout and the core set it): try, then poll and retry. */
static apr_status_t conntimes_net_recv(conntimes_conn_t *cc, char *buf,
                                       apr_size_t *len, apr_time_t *stamp,
                                       apr_read_type_e block)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct timespec))];
    } ctl;
    apr_interval_time_t timeout = 0;
    struct msghdr msg;
    struct iovec iov;
    ssize_t n;

    if (block == APR_BLOCK_READ) {
        apr_socket_timeout_get(cc->bucket_sock, &timeout);
    }
    for (;;) {
        memset(&msg, 0, sizeof(msg));
        iov.iov_base = buf;
        iov.iov_len = *len;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        n = recvmsg(cc->fd, &msg, MSG_DONTWAIT);
        if (n >= 0) {
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && timeout != 0) {
            struct pollfd pfd;
            int rc;
            pfd.fd = cc->fd;
            pfd.events = POLLIN;
            pfd.revents = 0;
            do {
                rc = poll(&pfd, 1, timeout < 0 ? -1
                                   : (int)((timeout + 999) / 1000));
            } while (rc < 0 && errno == EINTR);
            if (rc == 0) {
                return APR_TIMEUP;
            }
            if (rc < 0) {
                return apr_get_netos_error();
            }
            continue;
        }
        return apr_get_netos_error();
    }
    *len = (apr_size_t)n;
    *stamp = n > 0 ? conntimes_cmsg_stamp(&msg) : 0;
    return APR_SUCCESS;
}

static apr_status_t conntimes_net_bucket_read(apr_bucket *b, const char **str,
                                              apr_size_t *len,
                                              apr_read_type_e block)
{
    conntimes_conn_t *cc = b->data;
    apr_time_t stamp = 0;
    apr_status_t rv;
    char *buf;

    *str = NULL;
    *len = APR_BUCKET_BUFF_SIZE;
    buf = apr_bucket_alloc(*len, b->list);
    rv = conntimes_net_recv(cc, buf, len, &stamp, block);
    if (rv != APR_SUCCESS) {
        apr_bucket_free(buf);
        *len = 0;
        return rv;
    }
    if (*len == 0) {
        /* EOF: the socket stays open for the response. */
        apr_bucket_free(buf);
        b = apr_bucket_immortal_make(b, "", 0);
        *str = b->data;
        return APR_SUCCESS;
    }

    cc->last_stamp = stamp;
    if (cc->armed) {
        cc->armed_stamp = stamp;
        cc->armed = 0;
    }
    if (!stamp && !cc->stamps) {
        /* The listener's option did not reach this socket (a listener
         * opened by someone else): ask again, for the next reads. */
        int one = 1;
        cc->stamps = 1;
        if (setsockopt(cc->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one,
                       sizeof(one)) < 0) {
            ap_log_cerror(APLOG_MARK, APLOG_DEBUG, errno, cc->c,
                          "CT0001: cannot enable SO_TIMESTAMPNS on the "
                          "connection; arrival times fall back to the worker");
        }
    }
    else if (stamp) {
        cc->stamps = 1;
    }

    b = apr_bucket_heap_make(b, buf, *len, apr_bucket_free);
    ((apr_bucket_heap *)b->data)->alloc_len = APR_BUCKET_BUFF_SIZE;
    *str = buf;
    APR_BUCKET_INSERT_AFTER(b, conntimes_net_bucket_create(cc, b->list));
    return APR_SUCCESS;
}

static const apr_bucket_type_t conntimes_net_bucket_type = {
    "CONNTIMES_SOCKET", 5, APR_BUCKET_DATA,
    apr_bucket_destroy_noop,
    conntimes_net_bucket_read,
    apr_bucket_setaside_notimpl,
    apr_bucket_split_notimpl,
    apr_bucket_copy_notimpl
};

static apr_bucket *conntimes_net_bucket_create(conntimes_conn_t *cc,
                                               apr_bucket_alloc_t *list)
{
    apr_bucket *b = apr_bucket_alloc(sizeof(*b), list);

    APR_BUCKET_INIT(b);
    b->free = apr_bucket_free;
    b->list = list;
    b->type = &conntimes_net_bucket_type;
    b->length = (apr_size_t)-1;
    b->start = -1;
    b->data = cc;
    return b;
}

#endif

/* ------------------------------------------------------------ filters */

/* A kernel stamp from the future, or more than a day old, means the clock
 * was stepped since: the worker's view is taken instead. */
static int conntimes_stamp_ok(apr_time_t stamp, apr_time_t now)
{
    return stamp <= now && now - stamp <= apr_time_from_sec(86400);
}

/* Whether the first bytes of the connection are set-up that a filter
 * below ours consumes before the first request's: a TLS handshake, or a
 * PROXY protocol header (mod_remoteip puts its filter only on the
 * connections that must send one; it stays there, passing through, once
 * the header is read).  Set-up is accept time: the first read made for the
 * first request is then not the first piece of its request line. */
static int conntimes_setup_below(const conntimes_conn_t *cc, ap_filter_t *f)
{
    if (ap_ssl_conn_is_ssl(cc->c)) {
        return 1;
    }
    if (conntimes_proxy_handle) {
        for (f = f->next; f; f = f->next) {
            if (f->frec == conntimes_proxy_handle) {
                return 1;
            }
        }
    }
    return 0;
}

/* The instant a request became ready: `now`, when the core's line read
 * returned, unless the request line came in pieces (its first bytes and
 * the read that completed it have stamps a millisecond apart or more).
 * Such a line was being read since its first piece reached the worker:
 * the line read returned only once the rest arrived, and the wait for it
 * is read time, not accept time.  Not for the first request of a
 * connection with set-up (see conntimes_setup_below()): its first read is
 * the ClientHello or the PROXY header, and the wait from there to the
 * request's bytes is accept time. */
#define CONNTIMES_SPLIT apr_time_from_msec(1)
static apr_time_t conntimes_ready_of_split(ap_filter_t *f,
                                           const conntimes_conn_t *cc,
                                           const conntimes_req_t *rs,
                                           apr_time_t first_stamp,
                                           apr_time_t now)
{
    apr_time_t first;

    if (!first_stamp || cc->last_stamp - first_stamp < CONNTIMES_SPLIT
        || (cc->requests == 1 && conntimes_setup_below(cc, f))) {
        return now;
    }
    first = first_stamp > rs->pickup ? first_stamp : rs->pickup;
    return first < now ? first : now;
}

/* Connection input filter, above mod_ssl: notes when the first bytes of a
 * request reach the HTTP parser, and when they arrived: the kernel's stamp
 * of the first socket read made for them (for a new TLS connection, the
 * ClientHello), or of the read that brought them when they were already
 * buffered (pipelined requests).  Once a request has its bytes (body reads)
 * it only passes through. */
static apr_status_t conntimes_in_filter(ap_filter_t *f, apr_bucket_brigade *bb,
                                        ap_input_mode_t mode,
                                        apr_read_type_e block,
                                        apr_off_t readbytes)
{
    conntimes_conn_t *cc = f->ctx;
    conntimes_req_t *rs = cc->reading;
    apr_time_t now = 0;
    apr_time_t buffered_stamp;
    apr_status_t rv;
    int got;

    /* A request that has its first bytes reads the rest (headers, body);
     * between requests the first bytes of the next one may already have
     * been seen. */
    if ((cc->current && !rs) || (!cc->current && cc->next_arrival)) {
        return ap_get_brigade(f->next, bb, mode, block, readbytes);
    }
    /* A pipelined request whose first bytes the core holds already (the
     * pipeline check found them) arrived with the read that brought them,
     * even when the rest of its line takes a read of its own. */
    buffered_stamp = cc->c->data_in_input_filters ? cc->last_stamp : 0;
    /* Armed even before the core's first read has put our bucket in. */
    cc->armed = 1;
    rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
    got = rv == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb);
    /* Between requests only a blocking read starts the next request: a TLS
     * handshake or mod_http2's look for a preface, whose first bytes are
     * the first request's.  The non-blocking pipeline check after a
     * response may read a pipelined request (the stamp of that read is
     * found again below when the request asks for its bytes) or only
     * trailing CRLFs, which start nothing. */
    if (!cc->next_arrival && (rs || block == APR_BLOCK_READ)) {
        if (cc->bucket_sock) {
            apr_time_t stamp = buffered_stamp ? buffered_stamp
                               : !cc->armed ? cc->armed_stamp
                               : got ? cc->last_stamp : 0;
            if (stamp) {
                now = apr_time_now();
                if (conntimes_stamp_ok(stamp, now)) {
                    cc->next_arrival = cc->next_first_stamp = stamp;
                }
            }
            cc->next_source = CONNTIMES_ARRIVAL_KERNEL;
        }
        /* Set-up below us (a TLS handshake, a PROXY header) read the
         * connection's first bytes without a usable stamp (kernel stamps
         * off, or a listener without them): it began when the worker took
         * the connection, not when the request's bytes came up after it. */
        if (!cc->next_arrival && (rs ? cc->requests == 1 : !cc->requests)
            && conntimes_setup_below(cc, f)) {
            cc->next_arrival = cc->pickup;
            cc->next_source = CONNTIMES_ARRIVAL_WORKER;
        }
        if (!cc->next_arrival && got) {
            if (!now) {
                now = apr_time_now();
            }
            cc->next_arrival = now;
            cc->next_source = CONNTIMES_ARRIVAL_WORKER;
        }
    }
    if (got && rs) {
        rs->arrival = cc->next_arrival;
        rs->source = cc->next_source;
        /* The bytes are here: the reading taken for the arrival just above
         * is this instant as well.  The read that saw the first piece of
         * the line may be an earlier one: mod_http2's look for an h2c
         * preface before the request began. */
        rs->ready = conntimes_ready_of_split(f, cc, rs, cc->next_first_stamp,
                                             now ? now : apr_time_now());
        cc->next_arrival = cc->next_first_stamp = 0;
        cc->reading = NULL;
    }
    if (APLOGctrace4(cc->c)) {
        ap_log_cerror(APLOG_MARK, APLOG_TRACE4, rv, cc->c, "CT0012: read "
                      "mode %d%s for %s: %s, arrival %" APR_TIME_T_FMT " (%s)",
                      (int)mode, block == APR_BLOCK_READ ? "" : " nonblocking",
                      rs ? "a request" : "between requests",
                      APR_BRIGADE_EMPTY(bb) ? "no data" : "data",
                      rs ? rs->arrival : cc->next_arrival,
                      (rs ? rs->source : cc->next_source)
                      == CONNTIMES_ARRIVAL_KERNEL ? "kernel" : "worker");
    }
    cc->armed = 0;
    return rv;
}

/* Connection output filter, first of the connection chain: the EOR bucket
 * of a request follows the handler's return and the finalisation of the
 * response, so its passage ends the run phase. */
static apr_status_t conntimes_out_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    conntimes_conn_t *cc = f->ctx;
    conntimes_req_t *eor = NULL;
    apr_status_t rv;

    if (cc->current) {
        apr_bucket *b;
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            if (AP_BUCKET_IS_EOR(b)) {
                eor = cc->current;
                cc->current = NULL;
                if (!eor->hend) {
                    eor->hend = apr_time_now();
                }
                cc->passing = eor;
                break;
            }
        }
    }
    rv = ap_pass_brigade(f->next, bb);
    /* cc->passing is cleared when the request is logged (its pool is gone
     * then): still set means the EOR was set aside, to be written by the
     * MPM (write completion) on this worker or, once it lets the
     * connection go (suspend_connection), on another one later. */
    if (eor && cc->passing == eor) {
        cc->setaside = eor;
        cc->passing = NULL;
    }
    return rv;
}

/* ------------------------------------------------------------ log tags */

static apr_interval_time_t conntimes_phase_value(const conntimes_phases_t *ph,
                                                 int i)
{
    switch (i) {
    case CT_ACCEPT:    return ph->accept;
    case CT_QUEUE:     return ph->queue;
    case CT_READ:      return ph->read;
    case CT_FILTER:    return ph->filter;
    case CT_RUN:       return ph->run;
    case CT_DELIVER:   return ph->deliver;
    case CT_TOTAL:     return ph->total;
    case CT_WORKER:    return ph->worker;
    default:           return ph->offworker;
    }
}

static conntimes_req_t *conntimes_logged_req(request_rec *r)
{
    conntimes_req_t *rs = conntimes_req_of(r);

    if (rs && !rs->done) {
        conntimes_finalize(r, rs);
    }
    return rs;
}

/* A duration in us as us, ms (3 decimals) or s (6 decimals), written
 * backwards so that it ends at `end`; returns where it starts.  The log
 * handlers run for every request, so no printf here. */
static const char conntimes_digit_pairs[] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The two digits of v % 100 before s; returns where they start. */
static char *conntimes_put_pair(char *s, apr_uint64_t v)
{
    const char *d = conntimes_digit_pairs + 2 * (v % 100);

    s[-1] = d[1];
    s[-2] = d[0];
    return s - 2;
}

static char *conntimes_fmt_us(char *end, apr_uint64_t v, int frac)
{
    char *s = end;
    int i;

    /* Two digits per division: this runs for every field of every line. */
    for (i = frac; i >= 2; i -= 2) {
        s = conntimes_put_pair(s, v);
        v /= 100;
    }
    if (i) {
        *--s = (char)('0' + v % 10);
        v /= 10;
    }
    if (frac) {
        *--s = '.';
    }
    for (; v >= 100; v /= 100) {
        s = conntimes_put_pair(s, v);
    }
    if (v >= 10) {
        s = conntimes_put_pair(s, v);
    }
    else {
        *--s = (char)('0' + v);
    }
    return s;
}

/* What %{NAME[:UNIT][,...]}^CT asks for, parsed once per argument and
 * child: the fields with their decimals (0 us, 3 ms, 6 s). */
#define CONNTIMES_LOG_FIELDS 16
enum {
    CT_FIELD_CLASS = CT_NPHASE, CT_FIELD_HANDLER, CT_FIELD_ARRIVAL,
    CT_FIELD_NONE                       /* an unknown name or unit: "-" */
};
typedef struct {
    unsigned char what;                 /* a phase, or CT_FIELD_* */
    unsigned char frac;
} conntimes_field_t;

#define CONNTIMES_SPEC_TEXT 128
typedef struct {
    const char *key;                    /* the claimer's argument, or NULL */
    const char *arg;                    /* the same once filled, or NULL */
    int n;
    conntimes_field_t field[CONNTIMES_LOG_FIELDS];
    char text[CONNTIMES_SPEC_TEXT];     /* what *arg said when parsed */
} conntimes_spec_t;

/* One NAME[:UNIT] (`len` bytes at `name`). */
static conntimes_field_t conntimes_field_parse(const char *name,
                                               apr_size_t len)
{
    const char *colon = memchr(name, ':', len);
    apr_size_t nlen = colon ? (apr_size_t)(colon - name) : len;
    conntimes_field_t f = { CT_FIELD_NONE, 0 };
    int i;

    if (colon) {
        apr_size_t ulen = len - nlen - 1;
        if (ulen == 1 && colon[1] == 's') {
            f.frac = 6;
        }
        else if (ulen == 2 && colon[2] == 's'
                 && (colon[1] == 'm' || colon[1] == 'u')) {
            f.frac = colon[1] == 'm' ? 3 : 0;
        }
        else {
            /* "total:sec" must not log microseconds in a seconds column. */
            return f;
        }
    }
    for (i = 0; i < CT_NPHASE; i++) {
        if (!strncmp(name, conntimes_phase_names[i], nlen)
            && !conntimes_phase_names[i][nlen]) {
            f.what = (unsigned char)i;
            return f;
        }
    }
#define CONNTIMES_IS(word) (nlen == sizeof(word) - 1 \
                            && !strncmp(name, word, nlen))
    f.what = CONNTIMES_IS("class") ? CT_FIELD_CLASS
             : CONNTIMES_IS("handler") ? CT_FIELD_HANDLER
             : CONNTIMES_IS("arrival") ? CT_FIELD_ARRIVAL : CT_FIELD_NONE;
#undef CONNTIMES_IS
    return f;
}

static void conntimes_spec_parse(const char *arg, conntimes_spec_t *spec)
{
    const char *name = arg && *arg ? arg : "total";

    spec->n = 0;
    for (;;) {
        const char *comma = strchr(name, ',');
        apr_size_t l = comma ? (apr_size_t)(comma - name) : strlen(name);

        spec->field[spec->n++] = conntimes_field_parse(name, l);
        if (spec->n == CONNTIMES_LOG_FIELDS || !comma) {
            break;
        }
        name = comma + 1;
    }
}

/* The parsed arguments of a child.  mod_log_config passes each item the
 * same copy of its argument for every request: parsing it every time was a
 * quarter of the module's instructions per request (callgrind, the
 * "conntimes" nickname).  Lock-free: slots are taken in order, each by a
 * compare-and-swap of its key from NULL to the argument, so that an
 * argument takes one slot however many threads miss it at once (the first
 * requests of a child come together); the claimer fills the slot and
 * publishes the argument last, and until then the others parse their own
 * copy.  A hit is checked against the text that was parsed, so a caller
 * whose argument is not a lasting copy still gets the right fields (parsed
 * each time once its address has a slot).  Emptied at each configuration
 * (pre_config): a child sees one. */
#define CONNTIMES_SPECS 32
static conntimes_spec_t conntimes_specs[CONNTIMES_SPECS];

static const conntimes_spec_t *conntimes_spec_of(const char *arg,
                                                 conntimes_spec_t *parsed)
{
    apr_size_t len;
    int i, keyed = 0;

    for (i = 0; arg && i < CONNTIMES_SPECS; i++) {
        conntimes_spec_t *spec = &conntimes_specs[i];
        const char *key = CONNTIMES_LOAD_PTR(&spec->key);

        if (!key) {
            break;
        }
        if (key == arg) {
            if (CONNTIMES_LOAD_PTR(&spec->arg) == arg
                && !strcmp(spec->text, arg)) {
                return spec;
            }
            keyed = 1;                  /* being filled, or another text */
        }
    }
    conntimes_spec_parse(arg, parsed);
    if (!arg || keyed || (len = strlen(arg)) >= CONNTIMES_SPEC_TEXT) {
        return parsed;
    }
    for (; i < CONNTIMES_SPECS; i++) {
        conntimes_spec_t *spec = &conntimes_specs[i];
        const char *key = conntimes_claim_key(&spec->key, arg);

        if (key == arg) {
            break;                      /* being filled, or another text */
        }
        if (!key) {
            spec->n = parsed->n;
            memcpy(spec->field, parsed->field, sizeof(parsed->field));
            memcpy(spec->text, arg, len + 1);
            CONNTIMES_STORE_PTR(&spec->arg, arg);
            break;
        }
    }
    return parsed;
}

/* The text of one field for rs and its length; numbers go into buf
 * (CONNTIMES_NUM_MAX bytes). */
#define CONNTIMES_NUM_MAX 32
static const char *conntimes_field_text(apr_pool_t *p,
                                        const conntimes_req_t *rs,
                                        conntimes_field_t f, char *buf,
                                        apr_size_t *out_len)
{
    const char *text;

    if (f.what < CT_NPHASE) {
        char *end = buf + CONNTIMES_NUM_MAX;
        char *start = conntimes_fmt_us(end, (apr_uint64_t)
                                       conntimes_phase_value(&rs->ph, f.what),
                                       f.frac);
        *out_len = (apr_size_t)(end - start);
        return start;
    }
    switch (f.what) {
    case CT_FIELD_CLASS:
        text = conntimes_class_names[rs->ph.background ? CT_BG : CT_FG];
        break;
    case CT_FIELD_HANDLER:
        /* A RewriteRule's H= flag may take it from the URL: escaped as
         * mod_log_config escapes what the client sent. */
        text = rs->handler ? ap_escape_logitem(p, rs->handler)
                           : CT_NO_HANDLER;
        break;
    case CT_FIELD_ARRIVAL:
        text = rs->source == CONNTIMES_ARRIVAL_KERNEL ? "kernel"
               : rs->source == CONNTIMES_ARRIVAL_STREAM ? "stream" : "worker";
        break;
    default:
        text = "-";
    }
    *out_len = strlen(text);
    return text;
}

/* %{NAME[:UNIT][,NAME[:UNIT]...]}^CT: a phase in us (default), ms or s;
 * also "class", "handler" and "arrival"; an unknown name or unit logs "-"
 * (mod_log_config cannot refuse it at start-up).  Several, comma-separated,
 * give their values separated by spaces, as the "conntimes" nickname does.
 * It spares mod_log_config an item per value and per space, which wrk could
 * not tell from nine tags (bench/conntimes). */
static const char *conntimes_log_phase(request_rec *r, char *a)
{
    conntimes_req_t *rs = conntimes_logged_req(r);
    conntimes_spec_t parsed;
    const conntimes_spec_t *spec;
    const char *text[CONNTIMES_LOG_FIELDS];
    apr_size_t len[CONNTIMES_LOG_FIELDS], total = 0;
    char num[CONNTIMES_LOG_FIELDS][CONNTIMES_NUM_MAX];
    char *out, *o;
    int i;

    if (!rs) {
        return "-";
    }
    spec = conntimes_spec_of(a, &parsed);
    for (i = 0; i < spec->n; i++) {
        text[i] = conntimes_field_text(r->pool, rs, spec->field[i], num[i],
                                       &len[i]);
        total += len[i] + 1;
    }
    if (spec->n == 1) {
        return apr_pstrmemdup(r->pool, text[0], len[0]);
    }
    o = out = apr_palloc(r->pool, total);
    for (i = 0; i < spec->n; i++) {
        memcpy(o, text[i], len[i]);
        o += len[i];
        *o++ = ' ';
    }
    o[-1] = '\0';
    return out;
}

/* %{FORMAT}^CS: arrival of the request: seconds.microseconds (default),
 * "us", "ms" or "iso" (UTC); "-" for any other format. */
static const char *conntimes_log_start(request_rec *r, char *a)
{
    conntimes_req_t *rs = conntimes_logged_req(r);
    apr_time_t t;

    if (!rs) {
        return "-";
    }
    t = rs->ph.start;
    if (a && !strcmp(a, "us")) {
        return apr_psprintf(r->pool, "%" APR_TIME_T_FMT, t);
    }
    if (a && !strcmp(a, "ms")) {
        return apr_psprintf(r->pool, "%" APR_TIME_T_FMT, apr_time_as_msec(t));
    }
    if (a && !strcmp(a, "iso")) {
        apr_time_exp_t xt;
        apr_time_exp_gmt(&xt, t);
        return apr_psprintf(r->pool, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                            xt.tm_year + 1900, xt.tm_mon + 1, xt.tm_mday,
                            xt.tm_hour, xt.tm_min, xt.tm_sec, xt.tm_usec);
    }
    if (a && *a) {
        return "-";
    }
    {
        char buf[CONNTIMES_NUM_MAX], *end = buf + sizeof(buf);
        char *start = conntimes_fmt_us(end, (apr_uint64_t)t, 6);
        return apr_pstrmemdup(r->pool, start, (apr_size_t)(end - start));
    }
}

/* ------------------------------------------------------------ snapshot */

typedef struct {
    int nh;                             /* named slots + overflow */
    const char **names;                 /* per slot, NULL when unused */
    conntimes_agg_t all;
    conntimes_agg_t cls[CT_NCLASS];
    conntimes_agg_t *by;                /* [cls * nh + slot] */
    conntimes_agg_t *handler;           /* [slot], both classes */
    apr_uint64_t open_tag;              /* the series' open interval or 0 */
    conntimes_agg_t open;               /* its requests: all - base */
} conntimes_snap_t;

/* The sums for the status page.  With a non-zero @tag (the interval of
 * now) the time series is turned first if need be, and its open interval
 * is taken from these very sums: under the series lock, so that neither a
 * new interval nor a reset moves the base in between. */
static conntimes_snap_t *conntimes_snapshot(apr_pool_t *p, conntimes_shm_t *m,
                                            apr_uint64_t tag)
{
    conntimes_snap_t *s = apr_pcalloc(p, sizeof(*s));
    int st, cls, slot;
    apr_uint32_t locked = 0;

    s->nh = (int)m->hdr->nhandlers + 1;
    s->names = apr_pcalloc(p, sizeof(*s->names) * s->nh);
    s->by = apr_pcalloc(p, sizeof(*s->by) * s->nh * CT_NCLASS);
    s->handler = apr_pcalloc(p, sizeof(*s->handler) * s->nh);
    /* Under the claimers' lock: names read while a reset frees the slots
     * and new requests claim them again could show one name twice (two
     * Prometheus series with the same labels). */
    locked = conntimes_lock(&m->hdr->handler_lock, CT_LOCK_SPINS);
    for (slot = 0; slot < s->nh - 1; slot++) {
        if (apr_atomic_read32(&m->handlers[slot].state) == CT_HANDLER_READY) {
            s->names[slot] = apr_pstrdup(p, m->handlers[slot].name);
        }
    }
    if (locked) {
        conntimes_unlock(&m->hdr->handler_lock, locked);
        locked = 0;
    }
    s->names[s->nh - 1] = CT_OVERFLOW_NAME;
    if (tag) {
        conntimes_series_turn(m, tag);
        locked = conntimes_lock(&m->hdr->series_lock, CT_LOCK_SPINS);
    }
    for (st = 0; st < (int)m->hdr->nstripes; st++) {
        for (cls = 0; cls < CT_NCLASS; cls++) {
            for (slot = 0; slot < s->nh; slot++) {
                conntimes_agg_sum(&s->by[cls * s->nh + slot],
                                  conntimes_agg_at(m, st, cls, slot));
            }
        }
    }
    for (cls = 0; cls < CT_NCLASS; cls++) {
        for (slot = 0; slot < s->nh; slot++) {
            conntimes_agg_t *a = &s->by[cls * s->nh + slot];
            conntimes_agg_sum(&s->cls[cls], a);
            conntimes_agg_sum(&s->handler[slot], a);
            conntimes_agg_sum(&s->all, a);
        }
    }
    if (locked) {
        conntimes_series_t *se = m->series;
        int i;
        s->open_tag = apr_atomic_read64(&se->tag);
        conntimes_agg_diff(&s->open, &s->all, &se->base);
        for (i = 0; i < CT_NPHASE; i++) {
            s->open.phase[i].max = apr_atomic_read64(&se->max[i]);
        }
        conntimes_unlock(&m->hdr->series_lock, locked);
    }
    return s;
}

/* A point of the time series: one interval, or consecutive ones merged. */
typedef struct {
    apr_uint64_t tag;                   /* its first interval */
    apr_uint64_t intervals;             /* how many it covers */
    apr_uint64_t count;
    double avg[CT_NPHASE];
    double p99[CT_NPHASE];              /* merged: the highest */
} conntimes_pt_t;

/* The window of the series shown, as points of @per intervals each.  They
 * are aligned on multiples of @per (counted from @base), so that a merged
 * point keeps its intervals from one page to the next as the window moves:
 * only the two at its ends may cover fewer. */
typedef struct {
    apr_uint64_t first, last;           /* its intervals */
    apr_uint64_t per, base;
    int npts;
} conntimes_window_t;

static int conntimes_window_npts(const conntimes_window_t *w)
{
    return (int)((w->last - w->base) / w->per
                 - (w->first - w->base) / w->per + 1);
}

/* The window of the series that ends at interval @tag, in @max points at
 * most: all of its intervals, merged @per to a point when they are more.
 * Aligned, n intervals may need one point more than n / per: the smallest
 * @per that fits is searched from n / max up, and n / (max - 1) always
 * fits.  A single point cannot be aligned and starts with the window. */
static void conntimes_window(conntimes_window_t *w, const conntimes_shm_t *m,
                             apr_uint64_t tag, apr_uint64_t max)
{
    apr_uint64_t n, nslots = m->hdr->nslots;

    w->last = tag;
    w->first = tag + 1 >= nslots ? tag + 1 - nslots : 0;
    n = w->last - w->first + 1;
    w->base = max > 1 ? 0 : w->first;
    w->per = n > max ? (n + max - 1) / max : 1;
    while ((apr_uint64_t)conntimes_window_npts(w) > max) {
        w->per++;
    }
    w->npts = conntimes_window_npts(w);
}

/* Point @i of the window: the sums of its intervals (the open one from the
 * snapshot, earlier ones from their closed slots), averaged by count, and
 * the highest of their p99s, which bounds the p99 of them all; the
 * intervals' histograms are not kept.  0 when nothing was recorded. */
static int conntimes_window_point(conntimes_shm_t *m,
                                  const conntimes_snap_t *s,
                                  const conntimes_window_t *w, int i,
                                  conntimes_pt_t *pt)
{
    apr_uint64_t from, to, tag;
    int k;

    from = w->base + ((w->first - w->base) / w->per + (apr_uint64_t)i) * w->per;
    to = from + w->per - 1;
    from = from < w->first ? w->first : from;
    to = to > w->last ? w->last : to;
    memset(pt, 0, sizeof(*pt));
    pt->tag = from;
    pt->intervals = to - from + 1;
    for (tag = from; tag <= to; tag++) {
        conntimes_closed_t *cl = &m->closed[tag % m->hdr->nslots];
        if (tag == s->open_tag) {
            const conntimes_agg_t *a = &s->open;
            pt->count += a->count;
            for (k = 0; k < CT_NPHASE; k++) {
                double q = conntimes_quantile(&a->phase[k], a->count, 0.99);
                pt->avg[k] += (double)a->phase[k].sum;
                pt->p99[k] = q > pt->p99[k] ? q : pt->p99[k];
            }
        }
        else if (apr_atomic_read64(&cl->tag) == tag + 1 && cl->count) {
            pt->count += cl->count;
            for (k = 0; k < CT_NPHASE; k++) {
                pt->avg[k] += (double)cl->phase[k].sum;
                pt->p99[k] = cl->phase[k].p99 > pt->p99[k]
                             ? cl->phase[k].p99 : pt->p99[k];
            }
        }
    }
    for (k = 0; k < CT_NPHASE && pt->count; k++) {
        pt->avg[k] /= (double)pt->count;
    }
    return pt->count > 0;
}

#if defined(__linux__)
static int conntimes_diag_is_wildcard(const struct inet_diag_msg *dm)
{
    return !dm->id.idiag_src[0]
           && (dm->idiag_family == AF_INET
               || !(dm->id.idiag_src[1] | dm->id.idiag_src[2]
                    | dm->id.idiag_src[3]));
}

/* Whether a listening socket the kernel listed is bound where one of
 * ap_listeners is.  Wildcards match across families: the bucket duplicates
 * of "Listen 80" (bound to [::]) are bound to 0.0.0.0, as httpd resolves
 * their address anew. */
static int conntimes_diag_is_listener(const struct inet_diag_msg *dm)
{
    ap_listen_rec *lr;

    for (lr = ap_listeners; lr; lr = lr->next) {
        apr_sockaddr_t *sa = lr->bind_addr;
        if (!sa || sa->port != ntohs(dm->id.idiag_sport)) {
            continue;
        }
        if (apr_sockaddr_is_wildcard(sa)) {
            if (conntimes_diag_is_wildcard(dm)) {
                return 1;
            }
        }
        else if (sa->family == dm->idiag_family
                 && sa->ipaddr_len <= (int)sizeof(dm->id.idiag_src)
                 && !memcmp(sa->ipaddr_ptr, dm->id.idiag_src,
                            sa->ipaddr_len)) {
            return 1;
        }
    }
    return 0;
}

/* One sock_diag dump of the listening TCP sockets of a family on the
 * netlink socket nl (non-blocking), adding the accept queue (idiag_rqueue)
 * and backlog (idiag_wqueue) of ours; *matched counts them.  Fails rather
 * than waits past the deadline or reads a partial list. */
static apr_status_t conntimes_diag_dump(int nl, int family,
                                        apr_time_t deadline, long *queued,
                                        long *limit, int *matched)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg;
    struct sockaddr_nl kernel;
    long buf[8192 / sizeof(long)];   /* aligned for the headers */

    memset(&msg, 0, sizeof(msg));
    msg.nlh.nlmsg_len = sizeof(msg);
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.req.sdiag_family = family;
    msg.req.sdiag_protocol = IPPROTO_TCP;
    msg.req.idiag_states = 1 << TCP_LISTEN;
    memset(&kernel, 0, sizeof(kernel));
    kernel.nl_family = AF_NETLINK;
    if (sendto(nl, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel,
               sizeof(kernel)) < 0) {
        return errno;
    }
    for (;;) {
        const struct nlmsghdr *h;
        ssize_t n = recv(nl, buf, sizeof(buf), MSG_TRUNC);
        int len;

        if (n < 0) {
            apr_time_t left = deadline - apr_time_now();
            struct pollfd pfd;

            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                return errno;
            }
            if (left <= 0) {
                return APR_TIMEUP;
            }
            pfd.fd = nl;
            pfd.events = POLLIN;
            (void)poll(&pfd, 1, (int)apr_time_as_msec(left) + 1);
            continue;
        }
        if ((size_t)n > sizeof(buf)) {
            return APR_EGENERAL;
        }
        len = (int)n;
        for (h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len);
             h = NLMSG_NEXT(h, len)) {
            const struct inet_diag_msg *dm = NLMSG_DATA(h);

            if (h->nlmsg_type == NLMSG_DONE) {
                /* A dump the kernel could not finish ends with an error
                 * code here. */
                if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))
                    && *(const int *)NLMSG_DATA(h) < 0) {
                    return APR_EGENERAL;
                }
                return APR_SUCCESS;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                return APR_EGENERAL;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY
                || h->nlmsg_len < NLMSG_LENGTH(sizeof(*dm))
                || !conntimes_diag_is_listener(dm)) {
                continue;
            }
            *queued += (long)dm->idiag_rqueue;
            *limit += (long)dm->idiag_wqueue;
            (*matched)++;
        }
    }
}

/* The accept queues of every listening socket bound where one of
 * ap_listeners is, as the kernel lists them: with ListenCoresBucketsRatio
 * the MPM opens a SO_REUSEPORT duplicate of each listener per bucket, kept
 * to itself (not in ap_listeners, and closed in the children of the other
 * buckets), so the kernel is the only place this child can see them all.
 * What it cannot tell: a SO_REUSEPORT socket of another process on the same
 * address and port (which needs our user) is counted too.  0 when netlink
 * cannot answer (seccomp, no sock_diag) or lists none of ours. */
static int conntimes_diag_accept_queue(long *queued, long *limit)
{
    apr_time_t deadline = apr_time_now() + CT_DIAG_TIMEOUT;
    long q = 0, l = 0;
    int matched = 0;
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    NETLINK_SOCK_DIAG);

    if (nl < 0) {
        return 0;
    }
    if (conntimes_diag_dump(nl, AF_INET, deadline, &q, &l, &matched)
            != APR_SUCCESS
        || conntimes_diag_dump(nl, AF_INET6, deadline, &q, &l, &matched)
            != APR_SUCCESS
        || !matched) {
        close(nl);
        return 0;
    }
    close(nl);
    *queued = q;
    *limit = l;
    return 1;
}
#endif

/* Connections waiting in the kernel's accept queues of our listeners, in
 * every bucket (see conntimes_diag_accept_queue); -1 when unknown.  Without
 * sock_diag, what TCP_INFO tells of ap_listeners is the best there is (for
 * a listening socket Linux reports the queue length in tcpi_unacked and its
 * limit in tcpi_sacked): the first bucket only, and nothing in the children
 * of the other buckets, which have closed them. */
static void conntimes_accept_queue(long *queued, long *limit)
{
    *queued = -1;
    *limit = -1;
#if defined(__linux__)
    if (conntimes_diag_accept_queue(queued, limit)) {
        return;
    }
#endif
#if defined(__linux__) && defined(TCP_INFO)
    {
        ap_listen_rec *lr;
        for (lr = ap_listeners; lr; lr = lr->next) {
            struct tcp_info ti;
            socklen_t len = sizeof(ti);
            apr_os_sock_t fd;
            if (!lr->sd || apr_os_sock_get(&fd, lr->sd) != APR_SUCCESS
                || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
                continue;
            }
            *queued = (*queued < 0 ? 0 : *queued) + (long)ti.tcpi_unacked;
            *limit = (*limit < 0 ? 0 : *limit) + (long)ti.tcpi_sacked;
        }
    }
#endif
}

/* ------------------------------------------------------------ output: text */

static void conntimes_put_auto(request_rec *r, conntimes_shm_t *m,
                               conntimes_snap_t *s)
{
    conntimes_stat_t st;
    long queued, limit;
    int i;

    conntimes_accept_queue(&queued, &limit);
    ap_rprintf(r, "ConntimesRequests: %" APR_UINT64_T_FMT "\n", s->all.count);
    ap_rprintf(r, "ConntimesRequestsForeground: %" APR_UINT64_T_FMT "\n",
               s->cls[CT_FG].count);
    ap_rprintf(r, "ConntimesRequestsBackground: %" APR_UINT64_T_FMT "\n",
               s->cls[CT_BG].count);
    ap_rprintf(r, "ConntimesSinceReset: %" APR_TIME_T_FMT "\n",
               apr_time_sec(apr_time_now() - (apr_time_t)apr_atomic_read64(
                                                  &m->hdr->reset_time)));
    for (i = 0; i < CT_NPHASE; i++) {
        const char *k = conntimes_phase_keys[i];
        conntimes_stat(&st, &s->all.phase[i], s->all.count);
        ap_rprintf(r, "Conntimes%sSumUs: %" APR_UINT64_T_FMT "\n", k, st.sum);
        ap_rprintf(r, "Conntimes%sAvgUs: %.0f\n", k, st.avg);
        ap_rprintf(r, "Conntimes%sP50Us: %.0f\n", k, st.p50);
        ap_rprintf(r, "Conntimes%sP90Us: %.0f\n", k, st.p90);
        ap_rprintf(r, "Conntimes%sP99Us: %.0f\n", k, st.p99);
        ap_rprintf(r, "Conntimes%sMaxUs: %" APR_UINT64_T_FMT "\n", k, st.max);
    }
    ap_rprintf(r, "ConntimesArrivalsKernel: %" APR_UINT64_T_FMT "\n",
               s->all.arrivals[CONNTIMES_ARRIVAL_KERNEL]);
    ap_rprintf(r, "ConntimesArrivalsWorker: %" APR_UINT64_T_FMT "\n",
               s->all.arrivals[CONNTIMES_ARRIVAL_WORKER]);
    ap_rprintf(r, "ConntimesArrivalsStream: %" APR_UINT64_T_FMT "\n",
               s->all.arrivals[CONNTIMES_ARRIVAL_STREAM]);
    if (queued >= 0) {
        ap_rprintf(r, "ConntimesAcceptQueue: %ld\n", queued);
        ap_rprintf(r, "ConntimesAcceptQueueLimit: %ld\n", limit);
    }
    ap_rprintf(r, "ConntimesSuspended: %u\n", conntimes_suspended_now(m));
    if (conntimes_bgd_totals) {
        bgdeliver_totals_t t;
        memset(&t, 0, sizeof(t));
        conntimes_bgd_totals(&t);
        ap_rprintf(r, "ConntimesBackgroundInFlight: %u\n", t.in_flight);
    }
    ap_rprintf(r, "ConntimesShmBytes: %" APR_UINT64_T_FMT "\n", m->hdr->size);
}

/* ------------------------------------------------------------ output: json */

/* The length of the valid UTF-8 sequence of two to four bytes at s, or 0
 * (an overlong form, a surrogate or a code point past U+10FFFF is not
 * one).  The pages are UTF-8: such text is shown as it is, and other bytes
 * above 0x7f as the Latin-1 characters of their values.  Stops at the
 * terminating NUL, which is no continuation byte. */
static apr_size_t conntimes_utf8_len(const unsigned char *s)
{
    unsigned char lo = 0x80, hi = 0xbf;
    apr_size_t n, i;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
    }
    else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        lo = s[0] == 0xe0 ? 0xa0 : lo;
        hi = s[0] == 0xed ? 0x9f : hi;
    }
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        lo = s[0] == 0xf0 ? 0x90 : lo;
        hi = s[0] == 0xf4 ? 0x8f : hi;
    }
    else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }
    }
    return n;
}

static const char *conntimes_json_str(apr_pool_t *p, const char *s)
{
    apr_size_t n = 2, u;
    const unsigned char *c;
    char *out, *o;

    for (c = (const unsigned char *)s; *c; c++) {
        if ((u = conntimes_utf8_len(c)) > 0) {
            n += u;
            c += u - 1;
            continue;
        }
        n += (*c < 0x20 || *c >= 0x7f || strchr("\"\\<>&'", *c)) ? 6 : 1;
    }
    o = out = apr_palloc(p, n + 1);
    *o++ = '"';
    for (c = (const unsigned char *)s; *c; c++) {
        if ((u = conntimes_utf8_len(c)) > 0) {
            memcpy(o, c, u);
            o += u;
            c += u - 1;
        }
        else if (*c < 0x20 || *c >= 0x7f || strchr("\"\\<>&'", *c)) {
            apr_snprintf(o, 7, "\\u%04x", *c);
            o += 6;
        }
        else {
            *o++ = (char)*c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static void conntimes_json_phases(request_rec *r, const conntimes_agg_t *a)
{
    conntimes_stat_t st;
    int i;

    ap_rputs("{", r);
    for (i = 0; i < CT_NPHASE; i++) {
        conntimes_stat(&st, &a->phase[i], a->count);
        ap_rprintf(r, "%s\"%s\":{\"count\":%" APR_UINT64_T_FMT
                   ",\"sum\":%s,\"avg\":%s,\"p50\":%s,\"p90\":%s,"
                   "\"p99\":%s,\"max\":%s}", i ? "," : "",
                   conntimes_phase_names[i], st.count,
                   conntimes_secs(r->pool, (double)st.sum),
                   conntimes_secs(r->pool, st.avg),
                   conntimes_secs(r->pool, st.p50),
                   conntimes_secs(r->pool, st.p90),
                   conntimes_secs(r->pool, st.p99),
                   conntimes_secs(r->pool, (double)st.max));
    }
    ap_rputs("}", r);
}

/* @points: the most points of the series, 0 for all of them. */
static void conntimes_put_json(request_rec *r, conntimes_shm_t *m,
                               conntimes_snap_t *s, int allow_reset,
                               apr_uint64_t points)
{
    conntimes_shm_hdr_t *hdr = m->hdr;
    apr_time_t now = apr_time_now();
    conntimes_window_t w;
    long queued, limit;
    int i, cls, slot, n;

    conntimes_accept_queue(&queued, &limit);
    ap_rprintf(r, "{\"version\":%d,\"mpm\":%s,\"now\":%s,\"since\":%s,"
               "\"requests\":%" APR_UINT64_T_FMT ",",
               CONNTIMES_API_VERSION,
               conntimes_json_str(r->pool, ap_show_mpm()),
               conntimes_secs(r->pool, (double)now),
               conntimes_secs(r->pool,
                              (double)apr_atomic_read64(&hdr->reset_time)),
               s->all.count);
    ap_rprintf(r, "\"arrivals\":{\"kernel\":%" APR_UINT64_T_FMT
               ",\"worker\":%" APR_UINT64_T_FMT
               ",\"stream\":%" APR_UINT64_T_FMT "},",
               s->all.arrivals[CONNTIMES_ARRIVAL_KERNEL],
               s->all.arrivals[CONNTIMES_ARRIVAL_WORKER],
               s->all.arrivals[CONNTIMES_ARRIVAL_STREAM]);
    ap_rprintf(r, "\"current\":{\"accept_queue\":%ld,\"accept_queue_limit\":"
               "%ld,\"suspended\":%u", queued, limit,
               conntimes_suspended_now(m));
    if (conntimes_bgd_totals) {
        bgdeliver_totals_t t;
        memset(&t, 0, sizeof(t));
        conntimes_bgd_totals(&t);
        ap_rprintf(r, ",\"background_in_flight\":%u", t.in_flight);
    }
    ap_rputs("},\"phases\":", r);
    conntimes_json_phases(r, &s->all);
    ap_rputs(",\"classes\":{", r);
    for (cls = 0; cls < CT_NCLASS; cls++) {
        ap_rprintf(r, "%s\"%s\":{\"requests\":%" APR_UINT64_T_FMT
                   ",\"phases\":", cls ? "," : "", conntimes_class_names[cls],
                   s->cls[cls].count);
        conntimes_json_phases(r, &s->cls[cls]);
        ap_rputs("}", r);
    }
    ap_rputs("},\"handlers\":[", r);
    for (slot = 0, n = 0; slot < s->nh; slot++) {
        if (!s->names[slot] || !s->handler[slot].count) {
            continue;
        }
        ap_rprintf(r, "%s{\"handler\":%s,\"requests\":%" APR_UINT64_T_FMT
                   ",\"phases\":", n++ ? "," : "",
                   conntimes_json_str(r->pool, s->names[slot]),
                   s->handler[slot].count);
        conntimes_json_phases(r, &s->handler[slot]);
        ap_rputs("}", r);
    }
    conntimes_window(&w, m, conntimes_interval_of(m, now),
                     points ? points : hdr->nslots);
    ap_rprintf(r, "],\"series\":{\"interval\":%u,\"slots\":%u,\"points\":[",
               hdr->interval, hdr->nslots);
    for (n = 0, i = 0; i < w.npts; i++) {
        conntimes_pt_t pt;
        int k;
        if (!conntimes_window_point(m, s, &w, i, &pt)) {
            continue;
        }
        ap_rprintf(r, "%s{\"t\":%" APR_UINT64_T_FMT ",\"count\":%"
                   APR_UINT64_T_FMT, n++ ? "," : "", pt.tag * hdr->interval,
                   pt.count);
        /* Only merged points say so: ?json alone keeps its old shape. */
        if (w.per > 1) {
            ap_rprintf(r, ",\"intervals\":%" APR_UINT64_T_FMT, pt.intervals);
        }
        ap_rputs(",\"avg\":{", r);
        for (k = 0; k < CT_NPHASE; k++) {
            ap_rprintf(r, "%s\"%s\":%s", k ? "," : "", conntimes_phase_names[k],
                       conntimes_secs(r->pool, pt.avg[k]));
        }
        ap_rputs("},\"p99\":{", r);
        for (k = 0; k < CT_NPHASE; k++) {
            ap_rprintf(r, "%s\"%s\":%s", k ? "," : "", conntimes_phase_names[k],
                       conntimes_secs(r->pool, pt.p99[k]));
        }
        ap_rputs("}}", r);
    }
    ap_rputs("]},\"slow\":[", r);
    for (i = 0, n = 0; i < CT_NSLOW; i++) {
        conntimes_slow_t e;
        int k;
        if (!conntimes_slow_copy(m, (apr_uint32_t)i, &e)) {
            continue;
        }
        ap_rprintf(r, "%s{\"start\":%s,\"status\":%u,\"class\":\"%s\","
                   "\"client\":%s,\"method\":%s,\"uri\":%s,\"handler\":%s",
                   n++ ? "," : "", conntimes_secs(r->pool, (double)e.start),
                   e.status, conntimes_class_names[e.background ? 1 : 0],
                   conntimes_json_str(r->pool, e.client),
                   conntimes_json_str(r->pool, e.method),
                   conntimes_json_str(r->pool, e.uri),
                   conntimes_json_str(r->pool, e.handler));
        for (k = 0; k < CT_NPHASE; k++) {
            ap_rprintf(r, ",\"%s\":%s", conntimes_phase_names[k],
                       conntimes_secs(r->pool, (double)e.us[k]));
        }
        ap_rputs("}", r);
    }
    ap_rputs("]", r);
    if (allow_reset) {
        ap_rprintf(r, ",\"reset_token\":\"%s\"", hdr->token);
    }
    ap_rprintf(r, ",\"shm_bytes\":%" APR_UINT64_T_FMT "}\n", hdr->size);
}

/* ------------------------------------------------------------ output: prometheus */

/* Label values must be valid UTF-8, with \ and " escaped.  Handler names
 * are printable ASCII already (conntimes_handler_slot()); the mapping
 * costs a scrape nothing and keeps this independent of that. */
static const char *conntimes_prom_label(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, 2 * strlen(s) + 1), *o = out;

    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            *o++ = '\\';
        }
        *o++ = conntimes_name_char(*s);
    }
    *o = '\0';
    return out;
}

static void conntimes_put_prometheus(request_rec *r, conntimes_shm_t *m,
                                     conntimes_snap_t *s)
{
    conntimes_shm_hdr_t *hdr = m->hdr;
    long queued, limit;
    int cls, slot, i;
    apr_size_t b;

    ap_rputs("# HELP conntimes_request_phase_seconds Time requests spent in "
             "each phase (accept, queue, read, filter, run, deliver; total, "
             "worker and offworker time).\n"
             "# TYPE conntimes_request_phase_seconds histogram\n", r);
    for (i = 0; i < CT_NPHASE; i++) {
        for (cls = 0; cls < CT_NCLASS; cls++) {
            for (slot = 0; slot < s->nh; slot++) {
                conntimes_agg_t *a = &s->by[cls * s->nh + slot];
                const char *labels;
                apr_uint64_t cum = 0;
                if (!s->names[slot] || !a->count) {
                    continue;
                }
                labels = apr_psprintf(r->pool,
                                      "phase=\"%s\",class=\"%s\",handler=\"%s\"",
                                      conntimes_phase_names[i],
                                      conntimes_class_names[cls],
                                      conntimes_prom_label(r->pool,
                                                           s->names[slot]));
                for (b = 0; b < CT_NBUCKET; b++) {
                    cum += a->phase[i].bucket[b];
                    ap_rprintf(r, "conntimes_request_phase_seconds_bucket{%s,"
                               "le=\"%s\"} %" APR_UINT64_T_FMT "\n", labels,
                               b < CT_NBOUND
                                   ? conntimes_bound_secs(r->pool,
                                                          conntimes_bounds[b])
                                   : "+Inf", cum);
                }
                ap_rprintf(r, "conntimes_request_phase_seconds_sum{%s} %s\n",
                           labels, conntimes_secs(r->pool,
                                                  (double)a->phase[i].sum));
                ap_rprintf(r, "conntimes_request_phase_seconds_count{%s} %"
                           APR_UINT64_T_FMT "\n", labels, cum);
            }
        }
    }
    ap_rputs("# HELP conntimes_request_phase_max_seconds Longest time a "
             "request spent in each phase since the last reset.\n"
             "# TYPE conntimes_request_phase_max_seconds gauge\n", r);
    for (i = 0; i < CT_NPHASE; i++) {
        for (cls = 0; cls < CT_NCLASS; cls++) {
            if (!s->cls[cls].count) {
                continue;
            }
            ap_rprintf(r, "conntimes_request_phase_max_seconds{phase=\"%s\","
                       "class=\"%s\"} %s\n", conntimes_phase_names[i],
                       conntimes_class_names[cls],
                       conntimes_secs(r->pool,
                                      (double)s->cls[cls].phase[i].max));
        }
    }
    ap_rputs("# HELP conntimes_requests_total Requests timed since the last "
             "reset, by delivery class.\n"
             "# TYPE conntimes_requests_total counter\n", r);
    for (cls = 0; cls < CT_NCLASS; cls++) {
        ap_rprintf(r, "conntimes_requests_total{class=\"%s\"} %"
                   APR_UINT64_T_FMT "\n", conntimes_class_names[cls],
                   s->cls[cls].count);
    }
    ap_rputs("# HELP conntimes_arrivals_total Requests by the source of their "
             "arrival time.\n"
             "# TYPE conntimes_arrivals_total counter\n", r);
    ap_rprintf(r, "conntimes_arrivals_total{source=\"kernel\"} %"
               APR_UINT64_T_FMT "\n"
               "conntimes_arrivals_total{source=\"worker\"} %"
               APR_UINT64_T_FMT "\n"
               "conntimes_arrivals_total{source=\"stream\"} %"
               APR_UINT64_T_FMT "\n",
               s->all.arrivals[CONNTIMES_ARRIVAL_KERNEL],
               s->all.arrivals[CONNTIMES_ARRIVAL_WORKER],
               s->all.arrivals[CONNTIMES_ARRIVAL_STREAM]);
    conntimes_accept_queue(&queued, &limit);
    if (queued >= 0) {
        ap_rprintf(r, "# HELP conntimes_accept_queue_connections Connections "
                   "waiting in the kernel's accept queues of the listeners.\n"
                   "# TYPE conntimes_accept_queue_connections gauge\n"
                   "conntimes_accept_queue_connections %ld\n"
                   "# HELP conntimes_accept_queue_limit_connections Sum of the "
                   "listeners' accept queue limits.\n"
                   "# TYPE conntimes_accept_queue_limit_connections gauge\n"
                   "conntimes_accept_queue_limit_connections %ld\n",
                   queued, limit);
    }
    ap_rprintf(r, "# HELP conntimes_suspended_connections Connections the MPM "
               "holds suspended now.\n"
               "# TYPE conntimes_suspended_connections gauge\n"
               "conntimes_suspended_connections %u\n",
               conntimes_suspended_now(m));
    if (conntimes_bgd_totals) {
        bgdeliver_totals_t t;
        memset(&t, 0, sizeof(t));
        conntimes_bgd_totals(&t);
        ap_rprintf(r, "# HELP conntimes_background_in_flight Deliveries "
                   "mod_bgdeliver is running now.\n"
                   "# TYPE conntimes_background_in_flight gauge\n"
                   "conntimes_background_in_flight %u\n", t.in_flight);
    }
    ap_rprintf(r, "# HELP conntimes_reset_timestamp_seconds When the "
               "aggregates were last reset (or created).\n"
               "# TYPE conntimes_reset_timestamp_seconds gauge\n"
               "conntimes_reset_timestamp_seconds %s\n"
               "# HELP conntimes_shared_memory_bytes Size of the shared memory "
               "segment.\n"
               "# TYPE conntimes_shared_memory_bytes gauge\n"
               "conntimes_shared_memory_bytes %" APR_UINT64_T_FMT "\n",
               conntimes_secs(r->pool,
                              (double)apr_atomic_read64(&hdr->reset_time)),
               hdr->size);
}

/* ------------------------------------------------------------ output: html */

/* HTML text: the markup characters, both quotes, and every byte outside
 * printable ASCII as a numeric reference (names and URIs are not known to
 * be UTF-8). */
static const char *conntimes_html(apr_pool_t *p, const char *s)
{
    const unsigned char *c;
    apr_size_t n = 1, u;
    char *out, *o;

    s = s ? s : "";
    for (c = (const unsigned char *)s; *c; c++) {
        if ((u = conntimes_utf8_len(c)) > 0) {
            n += u;
            c += u - 1;
            continue;
        }
        n += (*c < 0x20 || *c >= 0x7f || strchr("<>&\"'", *c)) ? 6 : 1;
    }
    o = out = apr_palloc(p, n);
    for (c = (const unsigned char *)s; *c; c++) {
        if ((u = conntimes_utf8_len(c)) > 0) {
            memcpy(o, c, u);
            o += u;
            c += u - 1;
        }
        else if (*c < 0x20 || *c >= 0x7f || strchr("<>&\"'", *c)) {
            o += apr_snprintf(o, 7, "&#%d;", *c);
        }
        else {
            *o++ = (char)*c;
        }
    }
    *o = '\0';
    return out;
}

/* Human duration with a unit that keeps 3 significant digits. */
static const char *conntimes_human(apr_pool_t *p, double us)
{
    if (us < 1000) {
        return apr_psprintf(p, "%.0f&#160;&#181;s", us);
    }
    if (us < 1000000) {
        return apr_psprintf(p, "%.*f&#160;ms", us < 10000 ? 2 : 1, us / 1000);
    }
    return apr_psprintf(p, "%.*f&#160;s", us < 10000000 ? 3 : 1, us / 1000000);
}

static void conntimes_html_table(request_rec *r, const conntimes_agg_t *a)
{
    conntimes_stat_t st;
    int i;

    ap_rputs("<table class=\"ph\"><tr><th>phase</th><th>count</th><th>avg</th>"
             "<th>p50</th><th>p90</th><th>p99</th><th>max</th>"
             "<th>share</th></tr>\n", r);
    for (i = 0; i < CT_NPHASE; i++) {
        double share;
        conntimes_stat(&st, &a->phase[i], a->count);
        share = a->phase[CT_TOTAL].sum
                ? 100.0 * (double)st.sum / (double)a->phase[CT_TOTAL].sum : 0;
        ap_rprintf(r, "<tr%s><td>%s</td><td>%" APR_UINT64_T_FMT "</td>"
                   "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td><span class=\"bar\" style=\"width:%.0fpx\"></span> "
                   "%.1f%%</td></tr>\n", i >= CT_TOTAL ? " class=\"sum\"" : "",
                   conntimes_phase_names[i], st.count,
                   conntimes_human(r->pool, st.avg),
                   conntimes_human(r->pool, st.p50),
                   conntimes_human(r->pool, st.p90),
                   conntimes_human(r->pool, st.p99),
                   conntimes_human(r->pool, (double)st.max),
                   share > 100 ? 100 : share, share);
    }
    ap_rputs("</table>\n", r);
}

/* log10 for chart coordinates, without pulling in libm: whole decades by
 * division, the rest from the series of ln(x) = 2 atanh((x-1)/(x+1)). */
static double conntimes_log10(double v)
{
    double d = 0, z, z2, term, sum = 0;
    int k;

    if (v <= 0) {
        return 0;
    }
    while (v >= 10) {
        v /= 10;
        d++;
    }
    while (v < 1) {
        v *= 10;
        d--;
    }
    z = (v - 1) / (v + 1);
    z2 = z * z;
    term = z;
    for (k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return d + 2 * sum / 2.302585092994046;
}

/* The series' window, as the page's heading says it: "24 hours",
 * "1 minute", "90 seconds". */
static const char *conntimes_span_text(apr_pool_t *p, apr_uint32_t secs)
{
    static const struct { apr_uint32_t secs; const char *unit; } units[] = {
        { 3600, "hour" }, { 60, "minute" }, { 1, "second" }
    };
    int u = 0;

    while (secs % units[u].secs) {
        u++;
    }
    return apr_psprintf(p, "%u %s%s", secs / units[u].secs, units[u].unit,
                        secs == units[u].secs ? "" : "s");
}

/* What a point of the charts is, said after "p99": " per 60 s", or when
 * merged " (highest of 3 intervals per point) per 3 × 60 s". */
static const char *conntimes_point_text(apr_pool_t *p,
                                        const conntimes_window_t *w,
                                        apr_uint32_t iv)
{
    if (w->per == 1) {
        return apr_psprintf(p, " per %u s", iv);
    }
    return apr_psprintf(p, " (highest of %" APR_UINT64_T_FMT " intervals per "
                        "point) per %" APR_UINT64_T_FMT " &#215; %u s",
                        w->per, w->per, iv);
}

/* One SVG chart of a phase over the series window: average (solid) and p99
 * (dashed) on a log scale, with gaps where nothing was recorded.  A point
 * sits in the middle of the time its intervals cover. */
static void conntimes_svg_chart(request_rec *r, conntimes_shm_t *m,
                                const conntimes_window_t *w,
                                const conntimes_pt_t *pts, int phase)
{
    const int W = 600, H = 150, L = 52, R = 22, T = 20, B = 22;
    double lo = 1e9, hi = 0, dlo, dhi;
    apr_uint32_t iv = m->hdr->interval;
    int i, k, d, has = 0, npts = w->npts;
    apr_uint64_t nint = w->last - w->first + 1;
    apr_time_t span = (apr_time_t)nint * iv;

    /* An average is above its p99 when a single outlier lies in the top
     * 1 %: the range spans both lines of every point. */
    for (i = 0; i < npts; i++) {
        double a = pts[i].avg[phase], q = pts[i].p99[phase];
        if (!pts[i].count) {
            continue;
        }
        has = 1;
        if ((a < q ? a : q) < lo) {
            lo = a < q ? a : q;
        }
        if ((a > q ? a : q) > hi) {
            hi = a > q ? a : q;
        }
    }
    /* Decades (of microseconds) shown: at least two, around the data. */
    dlo = 0;
    dhi = 2;
    if (has) {
        dlo = lo < 1 ? 0 : (double)(int)conntimes_log10(lo);
        dhi = hi < 1 ? 1 : (double)(int)conntimes_log10(hi) + 1;
        if (dhi - dlo < 2) {
            dhi = dlo + 2;
        }
    }
    ap_rprintf(r, "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" "
               "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">"
               "<title>%s: average and p99%s</title>"
               "<text x=\"%d\" y=\"13\" class=\"t\">%s</text>",
               W, H, W, H, conntimes_phase_names[phase],
               conntimes_point_text(r->pool, w, iv), L,
               conntimes_phase_names[phase]);
    for (d = (int)dlo; d <= (int)dhi; d++) {
        static const char *const lab[] = {
            "1µs", "10µs", "100µs", "1ms", "10ms", "100ms", "1s", "10s",
            "100s", "1000s", "10⁴s"
        };
        double y = T + (H - T - B) * (1 - (d - dlo) / (dhi - dlo));
        ap_rprintf(r, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" "
                   "class=\"g\"/><text x=\"%d\" y=\"%.1f\" class=\"y\">%s"
                   "</text>", L, W - R, y, y, L - 4, y + 4,
                   d < 11 ? lab[d] : "");
    }
    for (k = 0; k <= 8; k++) {
        apr_time_t at = (apr_time_t)(w->first * iv) + span * k / 8;
        apr_time_exp_t xt;
        double x = L + (double)(W - L - R) * k / 8;
        apr_time_exp_lt(&xt, apr_time_from_sec(at));
        ap_rprintf(r, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" "
                   "class=\"g\"/><text x=\"%.1f\" y=\"%d\" class=\"x\">"
                   "%02d:%02d</text>", x, x, T, H - B, x, H - 6,
                   xt.tm_hour, xt.tm_min);
    }
    for (k = 0; k < 2; k++) {
        int open = 0;
        for (i = 0; i < npts; i++) {
            double v, x, y;
            if (!pts[i].count) {
                if (open) {
                    ap_rputs("\"/>", r);
                    open = 0;
                }
                continue;
            }
            v = k ? pts[i].p99[phase] : pts[i].avg[phase];
            v = v < 1 ? 0 : conntimes_log10(v);
            if (v < dlo) {
                v = dlo;
            }
            else if (v > dhi) {
                v = dhi;
            }
            x = L + (double)(W - L - R)
                    * ((double)(pts[i].tag - w->first)
                       + (double)pts[i].intervals / 2) / (double)nint;
            y = T + (H - T - B) * (1 - (v - dlo) / (dhi - dlo));
            if (!open) {
                ap_rprintf(r, "<polyline class=\"%s\" points=\"",
                           k ? "p99" : "avg");
                open = 1;
            }
            ap_rprintf(r, "%.1f,%.1f ", x, y);
            /* A lone point needs a visible mark. */
            if ((i + 1 == npts || !pts[i + 1].count)
                && (i == 0 || !pts[i - 1].count)) {
                ap_rprintf(r, "%.1f,%.1f ", x + 1.5, y);
            }
        }
        if (open) {
            ap_rputs("\"/>", r);
        }
    }
    if (!has) {
        ap_rprintf(r, "<text x=\"%d\" y=\"%d\" class=\"none\">no requests in "
                   "this window</text>", W / 2, H / 2);
    }
    ap_rputs("</svg></figure>\n", r);
}

static void conntimes_put_html(request_rec *r, conntimes_shm_t *m,
                               conntimes_snap_t *s, int allow_reset)
{
    conntimes_shm_hdr_t *hdr = m->hdr;
    apr_time_t now = apr_time_now();
    conntimes_window_t w;
    conntimes_pt_t *pts;
    long queued, limit;
    int i, n, slot, cls;
    char when[APR_RFC822_DATE_LEN];

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs("<!DOCTYPE html>\n", r);
    ap_rprintf(r, "<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<title>Request phases &#8212; %s</title>\n<style>\n"
               "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;"
               "color:#222}\n"
               "h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.4em;"
               "border-bottom:1px solid #ccc}\n"
               "table{border-collapse:collapse;margin:.3em 0}\n"
               "td,th{padding:2px 9px;text-align:right;border-bottom:1px "
               "solid #eee;white-space:nowrap}\n"
               "th{background:#f3f3f3}td:first-child,th:first-child"
               "{text-align:left}\ntr.sum td{color:#555;font-style:italic}\n"
               ".bar{display:inline-block;height:9px;background:#4a7ebb;"
               "vertical-align:middle}\n"
               "figure{display:inline-block;margin:4px 10px 4px 0}\n"
               "td.l{text-align:left}table.slow{font-size:12px}\n"
               "svg{background:#fcfcfc;border:1px solid #ddd}\n"
               "svg .g{stroke:#e4e4e4;stroke-width:1}svg text{font:10px "
               "sans-serif;fill:#555}\nsvg .y{text-anchor:end}svg .x"
               "{text-anchor:middle}svg .t{font-weight:bold;font-size:12px;"
               "fill:#222}\nsvg .none{text-anchor:middle;fill:#999}\n"
               "svg .avg{fill:none;stroke:#2f6db5;stroke-width:1.5}\n"
               "svg .p99{fill:none;stroke:#c0392b;stroke-width:1.2;"
               "stroke-dasharray:4 2}\n.k{color:#2f6db5}.q{color:#c0392b}\n"
               "code{background:#f3f3f3;padding:0 3px}\n"
               "</style></head><body>\n", conntimes_html(r->pool,
                                                         ap_get_server_name(r)));
    apr_rfc822_date(when, (apr_time_t)apr_atomic_read64(&hdr->reset_time));
    ap_rprintf(r, "<h1>Request phases &#8212; %s</h1>\n<p>MPM <b>%s</b>, "
               "%" APR_UINT64_T_FMT " requests timed since %s "
               "(%" APR_UINT64_T_FMT " foreground, %" APR_UINT64_T_FMT
               " background). Arrival time stamps: %" APR_UINT64_T_FMT
               " from the kernel, %" APR_UINT64_T_FMT " seen by a worker, %"
               APR_UINT64_T_FMT " HTTP/2 streams.</p>\n",
               conntimes_html(r->pool, ap_get_server_name(r)),
               conntimes_html(r->pool, ap_show_mpm()), s->all.count, when,
               s->cls[CT_FG].count, s->cls[CT_BG].count,
               s->all.arrivals[CONNTIMES_ARRIVAL_KERNEL],
               s->all.arrivals[CONNTIMES_ARRIVAL_WORKER],
               s->all.arrivals[CONNTIMES_ARRIVAL_STREAM]);

    conntimes_accept_queue(&queued, &limit);
    ap_rputs("<h2>Now</h2>\n<table><tr><th>what</th><th>count</th></tr>\n", r);
    if (queued >= 0) {
        ap_rprintf(r, "<tr><td>connections in the kernel's accept queue "
                   "(limit %ld)</td><td>%ld</td></tr>\n", limit, queued);
    }
    ap_rprintf(r, "<tr><td>connections suspended by the MPM</td><td>%u</td>"
               "</tr>\n", conntimes_suspended_now(m));
    if (conntimes_bgd_totals) {
        bgdeliver_totals_t t;
        memset(&t, 0, sizeof(t));
        conntimes_bgd_totals(&t);
        ap_rprintf(r, "<tr><td>background deliveries in flight</td>"
                   "<td>%u</td></tr>\n", t.in_flight);
    }
    ap_rputs("</table>\n<h2>All requests</h2>\n", r);
    conntimes_html_table(r, &s->all);
    /* Per class only when there is more than one. */
    for (cls = 0; cls < CT_NCLASS; cls++) {
        if (!s->cls[cls].count || s->cls[cls].count == s->all.count) {
            continue;
        }
        ap_rprintf(r, "<h2>%s delivery</h2>\n",
                   cls == CT_FG ? "Foreground" : "Background");
        conntimes_html_table(r, &s->cls[cls]);
    }

    ap_rputs("<h2>By handler</h2>\n<table><tr><th>handler</th><th>requests"
             "</th><th>queue avg</th><th>filter avg</th><th>run avg</th>"
             "<th>run p99</th><th>deliver avg</th><th>total avg</th>"
             "<th>total p99</th><th>total max</th></tr>\n", r);
    for (slot = 0; slot < s->nh; slot++) {
        conntimes_agg_t *a = &s->handler[slot];
        conntimes_stat_t q, f, run, d, t;
        if (!s->names[slot] || !a->count) {
            continue;
        }
        conntimes_stat(&q, &a->phase[CT_QUEUE], a->count);
        conntimes_stat(&f, &a->phase[CT_FILTER], a->count);
        conntimes_stat(&run, &a->phase[CT_RUN], a->count);
        conntimes_stat(&d, &a->phase[CT_DELIVER], a->count);
        conntimes_stat(&t, &a->phase[CT_TOTAL], a->count);
        ap_rprintf(r, "<tr><td><code>%s</code></td><td>%" APR_UINT64_T_FMT
                   "</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
                   conntimes_html(r->pool, s->names[slot]), a->count,
                   conntimes_human(r->pool, q.avg),
                   conntimes_human(r->pool, f.avg),
                   conntimes_human(r->pool, run.avg),
                   conntimes_human(r->pool, run.p99),
                   conntimes_human(r->pool, d.avg),
                   conntimes_human(r->pool, t.avg),
                   conntimes_human(r->pool, t.p99),
                   conntimes_human(r->pool, (double)t.max));
    }
    ap_rputs("</table>\n", r);

    conntimes_window(&w, m, conntimes_interval_of(m, now), CT_CHART_POINTS);
    pts = apr_palloc(r->pool, sizeof(*pts) * w.npts);
    for (i = 0; i < w.npts; i++) {
        conntimes_window_point(m, s, &w, i, &pts[i]);
    }
    ap_rprintf(r, "<h2>Last %s</h2>\n<p><span class=\"k\">&#9473; average"
               "</span> &#160; <span class=\"q\">&#9476; p99</span>%s, "
               "log scale; server local time.</p>\n",
               conntimes_span_text(r->pool, hdr->nslots * hdr->interval),
               conntimes_point_text(r->pool, &w, hdr->interval));
    for (i = 0; i < CT_NPHASE; i++) {
        if (i == CT_WORKER || i == CT_OFFWORKER) {
            continue;
        }
        conntimes_svg_chart(r, m, &w, pts, i);
    }

    ap_rprintf(r, "<h2>Recent slow requests (total &#8805; %s)</h2>\n",
               conntimes_human(r->pool, conntimes_global
                               ? (double)conntimes_global->slow : 0));
    ap_rputs("<table class=\"slow\"><tr><th>arrival</th><th>client</th>"
             "<th>request</th>"
             "<th>status</th><th>handler</th><th>class</th>", r);
    for (i = 0; i < CT_NPHASE; i++) {
        ap_rprintf(r, "<th>%s</th>", conntimes_phase_names[i]);
    }
    ap_rputs("</tr>\n", r);
    for (n = 0; n < CT_NSLOW; n++) {
        /* Newest first: the ring is written at slow_next - 1 backwards. */
        apr_uint32_t idx = (apr_atomic_read32(&hdr->slow_next) + 2 * CT_NSLOW
                            - 1 - (apr_uint32_t)n) % CT_NSLOW;
        conntimes_slow_t e;
        char date[APR_CTIME_LEN];
        int k;
        if (!conntimes_slow_copy(m, idx, &e)) {
            continue;
        }
        apr_ctime(date, e.start);
        ap_rprintf(r, "<tr><td>%s</td><td>%s</td><td class=\"l\"><code>%s %s"
                   "</code></td><td>%u</td><td class=\"l\"><code>%s</code>"
                   "</td><td>%s</td>",
                   date, conntimes_html(r->pool, e.client),
                   conntimes_html(r->pool, e.method),
                   conntimes_html(r->pool, e.uri), e.status,
                   conntimes_html(r->pool, e.handler),
                   conntimes_class_names[e.background ? 1 : 0]);
        for (k = 0; k < CT_NPHASE; k++) {
            ap_rprintf(r, "<td>%s</td>",
                       conntimes_human(r->pool, (double)e.us[k]));
        }
        ap_rputs("</tr>\n", r);
    }
    ap_rputs("</table>\n", r);

    ap_rprintf(r, "<p>Shared memory: %" APR_UINT64_T_FMT " bytes, %u stripes, "
               "%u handler slots. Other formats: <a href=\"?auto\">auto</a>, "
               "<a href=\"?json\">json</a>, <a href=\"?prometheus\">"
               "prometheus</a>.</p>\n", hdr->size, hdr->nstripes,
               hdr->nhandlers);
    if (allow_reset) {
        ap_rprintf(r, "<form method=\"post\" action=\"%s\"><input "
                   "type=\"hidden\" name=\"reset\" value=\"%s\"><button "
                   "type=\"submit\">Reset the aggregates</button></form>\n",
                   conntimes_html(r->pool, ap_escape_uri(r->pool, r->uri)),
                   hdr->token);
    }
    ap_rputs("</body></html>\n", r);
}

/* ------------------------------------------------------------ status handler */

static void conntimes_reset(conntimes_shm_t *m)
{
    conntimes_shm_hdr_t *hdr = m->hdr;
    conntimes_agg_t sum;
    apr_uint32_t mine;
    int i;

    /* Counters are zeroed in place: a request recorded at this very moment
     * may keep a part of its sample, which is the price of never locking
     * the request path.  The time series is history and stays: its open
     * interval is what the stripes gained since its base, so what is
     * zeroed here is taken off the base too.  The base may go "below
     * zero"; the counters are unsigned and every later difference (stripes
     * - base) still comes out right, modulo 2^64.  Under the series lock,
     * so that no new interval and no status page sees half of it. */
    mine = conntimes_lock(&hdr->series_lock, -1);
    conntimes_sum_all(m, &sum);
    conntimes_agg_diff(&m->series->base, &m->series->base, &sum);
    memset(m->stripes, 0, m->stripe_size * hdr->nstripes);
    conntimes_unlock(&hdr->series_lock, mine);
    /* Under the claimers' lock, so that no slot is claimed between being
     * freed and having its name cleared. */
    mine = conntimes_lock(&hdr->handler_lock, -1);
    for (i = 0; i < (int)hdr->nhandlers; i++) {
        apr_atomic_set32(&m->handlers[i].state, CT_HANDLER_FREE);
        memset(m->handlers[i].name, 0, sizeof(m->handlers[i].name));
    }
    conntimes_unlock(&hdr->handler_lock, mine);
    /* Emptied the way a writer writes (see conntimes_seq_read()); an entry
     * being written now keeps its request, which ended at the reset. */
    for (i = 0; i < CT_NSLOW; i++) {
        if (conntimes_slow_claim(&m->slow[i])) {
            m->slow[i].start = 0;
            apr_atomic_inc32(&m->slow[i].seq);
        }
    }
    conntimes_new_token(hdr);
    apr_atomic_set64(&hdr->reset_time, (apr_uint64_t)apr_time_now());
}

/* POST with the reset token of the page: a plain form can send it, a page
 * on another site cannot know it. */
static int conntimes_handle_reset(request_rec *r, conntimes_shm_t *m,
                                  const conntimes_dir_conf_t *dc)
{
    apr_array_header_t *pairs = NULL;
    const char *token = NULL;
    int rc;

    if (dc->allow_reset != 1) {
        ap_discard_request_body(r);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "CT0002: reset refused: "
                      "ConntimesAllowReset is not On for %s", r->uri);
        return HTTP_FORBIDDEN;
    }
    rc = ap_parse_form_data(r, NULL, &pairs, 8, 1024);
    if (rc != OK) {
        return rc;
    }
    while (pairs && !apr_is_empty_array(pairs)) {
        ap_form_pair_t *pair = (ap_form_pair_t *)apr_array_pop(pairs);
        if (!strcmp(pair->name, "reset")) {
            apr_off_t len;
            apr_size_t size;
            char *buf;
            apr_brigade_length(pair->value, 1, &len);
            size = (apr_size_t)len;
            buf = apr_palloc(r->pool, size + 1);
            apr_brigade_flatten(pair->value, buf, &size);
            buf[size] = '\0';
            token = buf;
        }
    }
    if (!token || strcmp(token, m->hdr->token)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "CT0003: reset refused: "
                      "missing or wrong reset token");
        return HTTP_FORBIDDEN;
    }
    conntimes_reset(m);
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "CT0004: aggregates reset "
                  "by %s", r->useragent_ip);
    apr_table_setn(r->headers_out, "Location",
                   ap_construct_url(r->pool, ap_escape_uri(r->pool, r->uri),
                                    r));
    return HTTP_SEE_OTHER;
}

/* Format from the query (?auto, ?json, ?prometheus) or, without one, from
 * the Accept header, the way Prometheus scrapers and API clients ask: the
 * media range with the highest q wins, and q=0 refuses a format.  On a tie
 * Prometheus comes first (scrapers list several of its versions), then
 * HTML (browsers that also list application/json want the page). */
static const char *conntimes_format(request_rec *r)
{
    static const char *const formats[] = { "prometheus", "html", "json" };
    double best_q[3] = { -1, -1, -1 }, any_q = -1;
    const char *accept;
    char *list, *range, *state;
    int i, best = 0;

    if (r->args) {
        if (!strcmp(r->args, "auto") || !strncmp(r->args, "auto&", 5)) {
            return "auto";
        }
        if (!strcmp(r->args, "json") || !strncmp(r->args, "json&", 5)) {
            return "json";
        }
        if (!strcmp(r->args, "prometheus")
            || !strncmp(r->args, "prometheus&", 11)) {
            return "prometheus";
        }
    }
    accept = apr_table_get(r->headers_in, "Accept");
    if (!accept) {
        return "html";
    }
    list = apr_pstrdup(r->pool, accept);
    for (range = apr_strtok(list, ",", &state); range;
         range = apr_strtok(NULL, ",", &state)) {
        char *param, *pstate, *type = apr_strtok(range, ";", &pstate);
        double q = 1;
        int v004 = 0, which;

        if (!type) {
            continue;
        }
        apr_collapse_spaces(type, type);
        while ((param = apr_strtok(NULL, ";", &pstate)) != NULL) {
            apr_collapse_spaces(param, param);
            if ((param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
                q = atof(param + 2);
            }
            else if (!strncasecmp(param, "version=", 8)) {
                /* The text format (0.0.4), also as Prometheus 3 names
                 * its successor (1.0.0), which this exposition is valid
                 * for: its metric and label names are plain. */
                const char *v = param + 8;
                apr_size_t vlen = strlen(v);
                if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                    v++;
                    vlen -= 2;
                }
                v004 = (vlen == 5 && (!strncmp(v, "0.0.4", 5)
                                      || !strncmp(v, "1.0.0", 5)));
            }
        }
        if (!strcasecmp(type, "application/openmetrics-text")
            || (v004 && !strcasecmp(type, "text/plain"))) {
            which = 0;
        }
        else if (!strcasecmp(type, "text/html")
                 || !strcasecmp(type, "application/xhtml+xml")) {
            which = 1;
        }
        else if (!strcmp(type, "*/*") || !strcasecmp(type, "text/*")) {
            /* A wildcard stands for the page unless text/html itself is
             * named (text/html;q=0, * / * refuses it). */
            if (q > any_q) {
                any_q = q;
            }
            continue;
        }
        else if (!strcasecmp(type, "application/json")) {
            which = 2;
        }
        else {
            continue;
        }
        if (q > best_q[which]) {
            best_q[which] = q;
        }
    }
    if (best_q[1] < 0) {
        best_q[1] = any_q;
    }
    for (i = 1; i < 3; i++) {
        if (best_q[i] > best_q[best]) {
            best = i;
        }
    }
    /* Nothing acceptable (every q=0, or only other types): the page, as
     * httpd's own handlers answer such requests. */
    return best_q[best] > 0 ? formats[best] : "html";
}

/* The points=N of a JSON answer's query (see conntimes_put_json()): 0
 * without one, -1 with @bad set when N is not a whole number from 1 up.  A
 * number too big for 64 bits means as much as any above the slots: all. */
static apr_int64_t conntimes_query_points(request_rec *r, const char **bad)
{
    char *args, *arg, *state, *end;
    apr_int64_t points = 0;

    if (!r->args) {
        return 0;
    }
    args = apr_pstrdup(r->pool, r->args);
    for (arg = apr_strtok(args, "&", &state); arg;
         arg = apr_strtok(NULL, "&", &state)) {
        if (strncmp(arg, "points=", 7)) {
            continue;
        }
        arg += 7;
        points = apr_strtoi64(arg, &end, 10);
        if (!apr_isdigit(*arg) || *end || points < 1) {
            *bad = arg;
            return -1;
        }
    }
    return points;
}

static int conntimes_status_handler(request_rec *r)
{
    conntimes_dir_conf_t *dc;
    conntimes_snap_t *s;
    const char *fmt, *bad;
    apr_int64_t points = 0;
    int allow_reset;

    if (!r->handler || strcmp(r->handler, CONNTIMES_HANDLER)) {
        return DECLINED;
    }
    /* The Allow header of a 405, and of the core's answer to OPTIONS, is
     * made from allowed_methods, not from r->allowed. */
    ap_allow_methods(r, REPLACE_ALLOW, "GET", "POST", NULL);
    if (r->method_number == M_OPTIONS) {
        return DECLINED;
    }
    if (r->method_number != M_GET && r->method_number != M_POST) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!conntimes_shm) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "CT0005: no shared memory "
                      "(CT0007 at start-up): the status is not available");
        return HTTP_SERVICE_UNAVAILABLE;
    }
    dc = ap_get_module_config(r->per_dir_config, &conntimes_module);
    allow_reset = dc->allow_reset == 1;
    if (r->method_number == M_POST) {
        return conntimes_handle_reset(r, conntimes_shm, dc);
    }

    fmt = conntimes_format(r);
    if (!strcmp(fmt, "json")
        && (points = conntimes_query_points(r, &bad)) < 0) {
        /* Shown by the core's error page, which does not escape it. */
        apr_table_setn(r->notes, "error-notes", apr_pstrcat(r->pool,
                       "points=", ap_escape_html(r->pool, bad), ": the most "
                       "points of the series must be a whole number from 1 "
                       "up.", NULL));
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "CT0014: bad query: "
                      "points=%s is not a whole number from 1 up",
                      ap_escape_logitem(r->pool, bad));
        return HTTP_BAD_REQUEST;
    }
    apr_table_mergen(r->headers_out, "Vary", "Accept");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    if (!strcmp(fmt, "json")) {
        ap_set_content_type(r, "application/json");
    }
    else if (!strcmp(fmt, "prometheus")) {
        ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    }
    else if (!strcmp(fmt, "auto")) {
        ap_set_content_type(r, "text/plain; charset=utf-8");
    }
    else {
        ap_set_content_type(r, "text/html; charset=utf-8");
        /* The page has no script; nothing may load from elsewhere. */
        apr_table_setn(r->headers_out, "Content-Security-Policy",
                       "default-src 'none'; style-src 'unsafe-inline'; "
                       "img-src 'self'; form-action 'self'");
    }
    if (r->header_only) {
        return OK;
    }
    /* Only the page and JSON show the time series. */
    s = conntimes_snapshot(r->pool, conntimes_shm,
                           !strcmp(fmt, "json") || !strcmp(fmt, "html")
                           ? conntimes_interval_of(conntimes_shm,
                                                   apr_time_now())
                           : 0);
    if (!strcmp(fmt, "json")) {
        conntimes_put_json(r, conntimes_shm, s, allow_reset,
                           (apr_uint64_t)points);
    }
    else if (!strcmp(fmt, "prometheus")) {
        conntimes_put_prometheus(r, conntimes_shm, s);
    }
    else if (!strcmp(fmt, "auto")) {
        conntimes_put_auto(r, conntimes_shm, s);
    }
    else {
        conntimes_put_html(r, conntimes_shm, s, allow_reset);
    }
    return OK;
}

/* mod_status section: the phase table on /server-status, the key lines
 * on /server-status?auto. */
static int conntimes_status_hook(request_rec *r, int flags)
{
    conntimes_snap_t *s;

    if (!conntimes_shm) {
        return OK;
    }
    s = conntimes_snapshot(r->pool, conntimes_shm, 0);
    if (flags & AP_STATUS_SHORT) {
        conntimes_put_auto(r, conntimes_shm, s);
        return OK;
    }
    ap_rputs("<hr />\n<h2>Request phases (mod_conntimes)</h2>\n", r);
    if (flags & AP_STATUS_NOTABLE) {
        conntimes_stat_t st;
        int i;
        for (i = 0; i < CT_NPHASE; i++) {
            conntimes_stat(&st, &s->all.phase[i], s->all.count);
            ap_rprintf(r, "<dt>%s: avg %s, p99 %s</dt>\n",
                       conntimes_phase_names[i],
                       conntimes_human(r->pool, st.avg),
                       conntimes_human(r->pool, st.p99));
        }
        return OK;
    }
    ap_rprintf(r, "<p>%" APR_UINT64_T_FMT " requests timed; suspended "
               "connections: %u.</p>\n", s->all.count,
               conntimes_suspended_now(conntimes_shm));
    conntimes_html_table(r, &s->all);
    return OK;
}

/* ------------------------------------------------------------ connection hooks */

static conntimes_conn_t *conntimes_conn_of(conn_rec *c)
{
    return ap_get_module_config(c->conn_config, &conntimes_module);
}

/* The suspended gauge counts a connection once, until it is resumed or
 * its pool goes. */
static apr_status_t conntimes_conn_unsuspend(void *data)
{
    conntimes_conn_t *cc = data;

    if (cc->suspended) {
        cc->suspended = 0;
        apr_atomic_dec32(&conntimes_proc->suspended);
    }
    return APR_SUCCESS;
}

/* pre_connection at REALLY_FIRST: the earliest moment a worker is known to
 * hold the connection, before mod_ssl and the others set theirs up.  The
 * filters go on every connection, secondary (HTTP/2 stream) ones included,
 * but outgoing proxy connections are not requests of ours. */
static int conntimes_pre_connection(conn_rec *c, void *csd)
{
    conntimes_conn_t *cc;

    if (c->outgoing) {
        return DECLINED;
    }
    cc = apr_pcalloc(c->pool, sizeof(*cc));
    cc->pickup = apr_time_now();
    cc->c = c;
    cc->fd = -1;
    cc->secondary = c->master != NULL;
    if (!cc->secondary && csd) {
        apr_os_sock_t fd;
        if (apr_os_sock_get(&fd, (apr_socket_t *)csd) == APR_SUCCESS) {
            cc->fd = fd;
        }
    }
    ap_set_module_config(c->conn_config, &conntimes_module, cc);
    /* Registered now, on the connection's only thread: when a handler
     * suspends it, another worker may already be using c->pool. */
    apr_pool_cleanup_register(c->pool, cc, conntimes_conn_unsuspend,
                              apr_pool_cleanup_null);
    if (!cc->secondary) {
        ap_add_input_filter_handle(conntimes_in_handle, cc, NULL, c);
    }
    ap_add_output_filter_handle(conntimes_out_handle, cc, NULL, c);
    return DECLINED;
}

#if defined(__linux__) && defined(SO_TIMESTAMPNS)
/* insert_network_bucket: seeds the core input filter with our socket bucket
 * on the connections we watch, when kernel stamps are wanted. */
static apr_status_t conntimes_insert_network_bucket(conn_rec *c,
                                                    apr_bucket_brigade *bb,
                                                    apr_socket_t *sock)
{
    conntimes_conn_t *cc;

    if (!conntimes_global || !conntimes_global->kernel_stamps || c->master
        || !(cc = conntimes_conn_of(c)) || cc->fd < 0) {
        return AP_DECLINED;
    }
    cc->bucket_sock = sock;
    APR_BRIGADE_INSERT_TAIL(bb, conntimes_net_bucket_create(cc,
                                                            c->bucket_alloc));
    return APR_SUCCESS;
}
#endif

/* pre_read_request: a new request begins on the connection.  The first one
 * was picked up with the connection; a later one when its read starts (on
 * the event MPM right after the listener handed the connection over, on
 * the others right after the previous response). */
static void conntimes_pre_read_request(request_rec *r, conn_rec *c)
{
    conntimes_conn_t *cc = conntimes_conn_of(c);
    conntimes_req_t *rs;

    if (!cc) {
        return;
    }
    rs = apr_pcalloc(r->pool, sizeof(*rs));
    rs->cc = cc;
    rs->pickup = cc->requests++ ? apr_time_now() : cc->pickup;
    rs->seq = cc->requests;
    rs->source = CONNTIMES_ARRIVAL_WORKER;
    if (!cc->secondary) {
        cc->reading = rs;
    }
    cc->current = rs;
    ap_set_module_config(r->request_config, &conntimes_module, rs);
    apr_pool_cleanup_register(r->pool, rs, conntimes_req_cleanup,
                              apr_pool_cleanup_null);
}

/* An internal redirect begins (post_read_request runs again).  The
 * handler that runs next names the request when the first one only
 * redirected (mod_rewrite's redirect-handler, whose "run" was none: it
 * starts over, so that a target refused in its access phase has run 0, as
 * it would have without the detour) or when this is a local ErrorDocument
 * (the error page's handler).  A CGI's local Location: keeps its own. */
static void conntimes_redirected(request_rec *r)
{
    conntimes_req_t *rs = conntimes_req_of(r);

    if (!rs || !rs->handler) {
        return;
    }
    if (!strcmp(rs->handler, CT_REDIRECT_HANDLER)) {
        rs->hstart = 0;
        rs->handler = NULL;
    }
    else if (ap_is_HTTP_ERROR(r->prev->status)) {
        rs->handler = NULL;
    }
}

/* post_read_request at REALLY_FIRST: the headers are parsed; later modules'
 * post_read_request work counts as filter time. */
static int conntimes_post_read_request(request_rec *r)
{
    conntimes_req_t *rs;

    if (r->main) {
        return DECLINED;
    }
    if (r->prev) {
        conntimes_redirected(r);
        return DECLINED;
    }
    rs = ap_get_module_config(r->request_config, &conntimes_module);
    if (!rs) {
        return DECLINED;
    }
    rs->headers = apr_time_now();
    if (rs->cc && rs->cc->secondary) {
        /* mod_http2 stamped the stream when its headers were complete on
         * the primary connection: from then on it waited for a worker. */
        rs->ready = rs->pickup;
        if (r->request_time && r->request_time <= rs->pickup) {
            rs->arrival = r->request_time;
            rs->source = CONNTIMES_ARRIVAL_STREAM;
        }
    }
    return DECLINED;
}

/* fixups at REALLY_LAST: a request that no directive or module gave a
 * handler is dispatched by ap_invoke_handler() on its content type, which
 * mod_mime derives from the file name that the client chose.  Such a
 * request is the default handler's (modules that still claim requests by
 * their MIME type are counted there too): otherwise a client could fill
 * the bounded handler table with "image/png", "application/pdf" ... */
static int conntimes_fixups(request_rec *r)
{
    conntimes_req_t *rs;

    if (!r->main && (rs = conntimes_req_of(r)) != NULL) {
        rs->by_type = !r->handler;
    }
    return DECLINED;
}

/* handler at REALLY_FIRST, declining: the content handler is about to run.
 * Sub-requests belong to their main request's run phase; after an internal
 * redirect the request may take the new handler's name (see
 * conntimes_redirected()). */
static int conntimes_handler_start(request_rec *r)
{
    conntimes_req_t *rs;

    if (r->main || !(rs = conntimes_req_of(r))) {
        return DECLINED;
    }
    if (!rs->hstart) {
        rs->hstart = apr_time_now();
    }
    if (!rs->handler) {
        /* ap_invoke_handler names the default handler "". */
        rs->handler = r->handler && *r->handler && !rs->by_type
                      ? r->handler : CT_DEFAULT_HANDLER;
    }
    return DECLINED;
}

/* protocol_switch at REALLY_FIRST, declining: the core's upgrade handler
 * answered the request 101 and hands the connection to another protocol,
 * which serves the request itself from now on (mod_http2 runs the whole
 * h2c connection inside this call and serves the request as stream 1,
 * timed and recorded on its secondary connection).  The HTTP/1.1 request
 * ends here: its run and deliver are 0 (the 101 was sent before the
 * switch; our handler hook comes after the core's upgrade handler), and it
 * is logged but not recorded, or the upgrade would count twice, once with
 * the whole HTTP/2 connection as this request's filter time.  The switch
 * of a new connection by ALPN has no request. */
static int conntimes_protocol_switch(conn_rec *c, request_rec *r,
                                     server_rec *s, const char *protocol)
{
    conntimes_req_t *rs;

    (void)c;
    (void)s;
    (void)protocol;
    if (r && !r->main && (rs = conntimes_req_of(r)) != NULL
        && !rs->switched) {
        rs->switched = apr_time_now();
        if (!rs->hend) {
            /* Its EOR passes only once the new protocol is done. */
            rs->hend = rs->switched;
        }
    }
    return DECLINED;
}

/* The event MPM calls suspend_connection whenever a worker lets go of a
 * connection (write completion, keep-alive, WAITIO, SUSPENDED) and
 * resume_connection when one takes it back.  A response still being written
 * is off-worker from here on; a handler that returned SUSPENDED ends its run
 * phase here. */
static void conntimes_suspend_connection(conn_rec *c, request_rec *r)
{
    conntimes_conn_t *cc = conntimes_conn_of(c);
    apr_time_t now = 0;

    (void)r;
    if (!cc) {
        return;
    }
    /* Most hand-offs are keep-alive waits with nothing to note: the clock
     * is read only for a response still being written or a handler that
     * returned SUSPENDED. */
    if (cc->setaside && !cc->setaside->released) {
        now = apr_time_now();
        cc->setaside->released = now;
    }
    if (c->cs && c->cs->state == CONN_STATE_SUSPENDED) {
        if (cc->suspended_seq != cc->requests) {
            cc->suspended_at = now ? now : apr_time_now();
            cc->suspended_seq = cc->requests;
        }
        if (!cc->suspended && conntimes_proc) {
            cc->suspended = 1;
            apr_atomic_inc32(&conntimes_proc->suspended);
        }
    }
}

static void conntimes_resume_connection(conn_rec *c, request_rec *r)
{
    conntimes_conn_t *cc = conntimes_conn_of(c);

    (void)r;
    if (cc) {
        conntimes_conn_unsuspend(cc);
    }
}

/* log_transaction at REALLY_FIRST: close the phases before mod_log_config
 * formats them (at MIDDLE) and add them to the aggregates. */
static int conntimes_log_transaction(request_rec *r)
{
    conntimes_req_t *rs = conntimes_req_of(r);
    conntimes_dir_conf_t *dc;
    request_rec *last = r;

    if (!rs) {
        return DECLINED;
    }
    conntimes_finalize(r, rs);
    while (last->next) {
        last = last->next;
    }
    dc = ap_get_module_config(last->per_dir_config, &conntimes_module);
    /* An upgraded request is recorded by the new protocol (h2c: stream 1). */
    if (dc->record != 0 && !rs->switched) {
        conntimes_record(r, rs);
    }
    return DECLINED;
}

/* ------------------------------------------------------------ start-up */

/* The nickname is put in front of the configuration tree, so that a
 * LogFormat of the administrator with the same nickname, read later,
 * replaces it. */
static void conntimes_add_nickname(apr_pool_t *p)
{
    ap_directive_t *d;

    if (!ap_find_linked_module("mod_log_config.c")) {
        return;
    }
    d = apr_pcalloc(p, sizeof(*d));
    d->directive = "LogFormat";
    d->args = "\"%h %l %u %t \\\"%r\\\" %>s %b \\\"%{Referer}i\\\" "
              "\\\"%{User-Agent}i\\\" %^CS %{queue:s,accept:s,read:s,"
              "filter:s,run:s,deliver:s,total:s,worker:s,class}^CT\" "
              CONNTIMES_NICKNAME;
    d->filename = "mod_conntimes.c (built-in nickname)";
    d->line_num = 0;
    d->next = ap_conftree;
    ap_conftree = d;
}

static int conntimes_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                                apr_pool_t *ptemp)
{
    APR_OPTIONAL_FN_TYPE(ap_register_log_handler) *reg;

    (void)plog;
    (void)ptemp;
    conntimes_bucket_start_init();
    /* The last configuration's log items went with its pool. */
    memset(conntimes_specs, 0, sizeof(conntimes_specs));
    reg = APR_RETRIEVE_OPTIONAL_FN(ap_register_log_handler);
    if (reg) {
        reg(pconf, "^CT", conntimes_log_phase, 1);
        reg(pconf, "^CS", conntimes_log_start, 1);
        conntimes_add_nickname(pconf);
    }
    return OK;
}

/* Map (or create) the segment.  It lives in the process pool so that it
 * survives restarts: a graceful restart finds it in the retained data and
 * new children go on counting where the old ones were; only a change of
 * its layout (handler slots, series size, CPU count, ServerLimit, or a
 * module whose CONNTIMES_LAYOUT_VERSION differs: the retained data outlives
 * the DSO) starts a new one. */
static apr_status_t conntimes_shm_attach(server_rec *s,
                                         conntimes_srv_conf_t *g)
{
    conntimes_retained_t *ret;
    apr_pool_t *pproc = s->process->pool;
    conntimes_shm_t probe;
    apr_size_t size;
    apr_status_t rv;
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    int nstripes = ncpu < 1 ? 1 : ncpu > CT_MAX_STRIPES ? CT_MAX_STRIPES
                                                          : (int)ncpu;
    int nprocs = 0;
    char *base;

    ret = ap_retained_data_get(CONNTIMES_RETAINED_KEY);
    if (!ret) {
        ret = ap_retained_data_create(CONNTIMES_RETAINED_KEY, sizeof(*ret));
    }
    /* Two entries per process slot of the MPM (ServerLimit): after a
     * graceful restart a child of the old generation that is still
     * finishing can lose its slot to a new child and go on running beside
     * it (MPM_CHILD_LOST_SLOT), so there can be more processes than slots
     * for a while. */
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &nprocs) != APR_SUCCESS
        || nprocs < 1) {
        nprocs = 1;
    }
    nprocs *= 2;
    size = conntimes_layout(&probe, NULL, nstripes, g->max_handlers,
                            g->slots, nprocs);
    if (ret->valid) {
        conntimes_shm_hdr_t *h = ret->map.hdr;
        if (h->magic == CONNTIMES_SHM_MAGIC
            && h->layout == CONNTIMES_LAYOUT_VERSION
            && h->nstripes == (apr_uint32_t)nstripes
            && h->nhandlers == (apr_uint32_t)g->max_handlers
            && h->nslots == (apr_uint32_t)g->slots
            && h->interval == (apr_uint32_t)g->interval
            && h->nprocs == (apr_uint32_t)nprocs) {
            conntimes_shm = &ret->map;
            return APR_SUCCESS;
        }
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "CT0006: layout changed "
                     "(handler slots, series, CPUs, ServerLimit or module "
                     "version): starting a new shared memory segment; "
                     "earlier aggregates are dropped");
        /* The parent's mapping only: children of the old generation keep
         * theirs until they exit. */
        ret->valid = 0;
        conntimes_shm = NULL;
        apr_shm_destroy(ret->map.shm);
    }
    rv = apr_shm_create(&ret->map.shm, size, NULL, pproc);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "CT0007: cannot create "
                     "%" APR_SIZE_T_FMT " bytes of anonymous shared memory: "
                     "no aggregates, time series or status page until a "
                     "restart can create it; the log tags still work", size);
        return rv;
    }
    base = apr_shm_baseaddr_get(ret->map.shm);
    memset(base, 0, size);
    conntimes_layout(&ret->map, base, nstripes, g->max_handlers, g->slots,
                     nprocs);
    ret->map.hdr->magic = CONNTIMES_SHM_MAGIC;
    ret->map.hdr->layout = CONNTIMES_LAYOUT_VERSION;
    ret->map.hdr->nstripes = (apr_uint32_t)nstripes;
    ret->map.hdr->nhandlers = (apr_uint32_t)g->max_handlers;
    ret->map.hdr->nslots = (apr_uint32_t)g->slots;
    ret->map.hdr->interval = (apr_uint32_t)g->interval;
    ret->map.hdr->nprocs = (apr_uint32_t)nprocs;
    ret->map.hdr->size = size;
    ret->map.hdr->created = apr_time_now();
    ret->map.hdr->reset_time = (apr_uint64_t)ret->map.hdr->created;
    conntimes_new_token(ret->map.hdr);
    ret->valid = 1;
    conntimes_shm = &ret->map;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "CT0008: shared memory "
                 "%" APR_SIZE_T_FMT " bytes (%d stripes of %" APR_SIZE_T_FMT
                 ", %d handler slots, %d x %d s series, %d processes)", size,
                 nstripes, ret->map.stripe_size, g->max_handlers, g->slots,
                 g->interval, nprocs);
    return APR_SUCCESS;
}

/* Ask the kernel to stamp arriving data on every listener, or to stop:
 * accepted sockets inherit the option, and listeners survive restarts, so
 * "ConntimesKernelTimestamps Off" must clear what an earlier generation
 * set, or the kernel goes on stamping every packet for nobody. */
static void conntimes_stamp_listeners(server_rec *s, int on)
{
#if defined(__linux__) && defined(SO_TIMESTAMPNS)
    ap_listen_rec *lr;
    int n = 0;

    for (lr = ap_listeners; lr; lr = lr->next) {
        apr_os_sock_t fd;
        if (!lr->sd || apr_os_sock_get(&fd, lr->sd) != APR_SUCCESS) {
            continue;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) < 0) {
            if (on) {
                ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, "CT0009: "
                             "cannot set SO_TIMESTAMPNS on a listener; "
                             "arrivals on it are taken when a worker sees "
                             "the request");
            }
            continue;
        }
        n++;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "CT0010: kernel arrival time "
                 "stamps %s on %d listener(s)", on ? "enabled" : "disabled",
                 n);
#else
    if (on) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "CT0011: no kernel arrival "
                     "time stamps on this platform; arrivals are taken when "
                     "a worker sees the request");
    }
#endif
}

static void conntimes_apply_defaults(conntimes_srv_conf_t *g)
{
    if (g->max_handlers == CT_UNSET) {
        g->max_handlers = CT_DEF_MAX_HANDLERS;
    }
    if (g->interval == CT_UNSET) {
        g->interval = CT_DEF_INTERVAL;
    }
    if (g->slots == CT_UNSET) {
        g->slots = CT_DEF_SLOTS;
    }
    if (g->kernel_stamps == CT_UNSET) {
        g->kernel_stamps = 1;
    }
    if (!g->slow_set) {
        g->slow = CT_DEF_SLOW;
    }
}

/* A kept segment can still hold the entries of children that a restart
 * reaped without the child_status hook: a process that is gone holds no
 * connections. */
static void conntimes_procs_sweep(conntimes_shm_t *m)
{
    apr_uint32_t i;

    for (i = 0; i < m->hdr->nprocs; i++) {
        apr_uint32_t pid = apr_atomic_read32(&m->procs[i].pid);
        if (pid && kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
            conntimes_proc_free(&m->procs[i]);
        }
    }
}

/* post_config: the shared memory and the listener option are set up in the
 * real run only, not in the dry run of the first start-up. */
static int conntimes_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                                 apr_pool_t *ptemp, server_rec *s)
{
    conntimes_srv_conf_t *g = ap_get_module_config(s->module_config,
                                                   &conntimes_module);

    (void)pconf;
    (void)plog;
    (void)ptemp;
    conntimes_apply_defaults(g);
    conntimes_global = g;
    /* Registered anew with each configuration, as ours are. */
    conntimes_proxy_handle = ap_get_input_filter_handle("REMOTEIP_INPUT");
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    /* Without its segment the module still times and logs requests: a
     * graceful restart that cannot map a new one (a changed layout) must
     * not stop a server that runs, for the sake of its statistics. */
    if (conntimes_shm_attach(s, g) == APR_SUCCESS) {
        conntimes_procs_sweep(conntimes_shm);
    }
    conntimes_stamp_listeners(s, g->kernel_stamps ? 1 : 0);
    APR_REGISTER_OPTIONAL_FN(conntimes_request_phases);
    return OK;
}

/* child_init: the entry this child counts its suspended connections in.
 * There are two per process slot (ServerLimit); a child that finds none
 * (even more processes than that, while old ones finish after several
 * quick restarts) does not count. */
static void conntimes_child_init(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild;
    if (!conntimes_shm) {
        return;
    }
    conntimes_proc = conntimes_proc_claim(conntimes_shm);
    if (!conntimes_proc) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "CT0013: all %u "
                     "entries of the suspended-connection gauge are taken "
                     "(more than twice ServerLimit child processes); the "
                     "connections this child suspends are not counted",
                     conntimes_shm->hdr->nprocs);
    }
}

/* child_status (in the parent): a child that exited, however it ended,
 * takes its count of suspended connections with it. */
static void conntimes_child_status(server_rec *s, pid_t pid,
                                   ap_generation_t gen, int slot,
                                   mpm_child_status state)
{
    conntimes_shm_t *m = conntimes_shm;
    apr_uint32_t i;

    (void)s;
    (void)gen;
    (void)slot;
    if (state != MPM_CHILD_EXITED || !m) {
        return;
    }
    for (i = 0; i < m->hdr->nprocs; i++) {
        if (apr_atomic_read32(&m->procs[i].pid) == (apr_uint32_t)pid) {
            conntimes_proc_free(&m->procs[i]);
            return;
        }
    }
}

static void conntimes_retrieve_optional_fns(void)
{
    conntimes_bgd_info = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_request_info);
    conntimes_bgd_totals = APR_RETRIEVE_OPTIONAL_FN(bgdeliver_get_totals);
}

/* ------------------------------------------------------------ configuration */

static void *conntimes_create_dir_conf(apr_pool_t *p, char *dir)
{
    conntimes_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)dir;
    dc->record = CT_UNSET;
    dc->allow_reset = CT_UNSET;
    return dc;
}

static void *conntimes_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    conntimes_dir_conf_t *base = basev, *add = addv;
    conntimes_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    dc->record = add->record != CT_UNSET ? add->record : base->record;
    dc->allow_reset = add->allow_reset != CT_UNSET ? add->allow_reset
                                                   : base->allow_reset;
    return dc;
}

static void *conntimes_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    conntimes_srv_conf_t *g = apr_pcalloc(p, sizeof(*g));

    (void)s;
    g->max_handlers = CT_UNSET;
    g->interval = CT_UNSET;
    g->slots = CT_UNSET;
    g->kernel_stamps = CT_UNSET;
    return g;
}

/* Every server directive is global (GLOBAL_ONLY): a virtual host simply
 * carries the main server's values. */
static void *conntimes_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    conntimes_srv_conf_t *g = apr_pcalloc(p, sizeof(*g));

    (void)addv;
    *g = *(conntimes_srv_conf_t *)basev;
    return g;
}

static const char *conntimes_set_int(cmd_parms *cmd, const char *arg,
                                     int *where, int min, int max)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char *end;
    apr_int64_t v;

    if (err) {
        return err;
    }
    v = apr_strtoi64(arg, &end, 10);
    if (!apr_isdigit(*arg) || *end || v < min || v > max) {
        return apr_psprintf(cmd->pool, "%s: bad value '%s': must be a whole "
                            "number from %d to %d", cmd->cmd->name, arg,
                            min, max);
    }
    *where = (int)v;
    return NULL;
}

static const char *conntimes_set_max_handlers(cmd_parms *cmd, void *d,
                                              const char *arg)
{
    conntimes_srv_conf_t *g = ap_get_module_config(cmd->server->module_config,
                                                   &conntimes_module);
    (void)d;
    return conntimes_set_int(cmd, arg, &g->max_handlers, 1, 256);
}

static const char *conntimes_set_interval(cmd_parms *cmd, void *d,
                                          const char *arg)
{
    conntimes_srv_conf_t *g = ap_get_module_config(cmd->server->module_config,
                                                   &conntimes_module);
    (void)d;
    return conntimes_set_int(cmd, arg, &g->interval, 10, 3600);
}

static const char *conntimes_set_slots(cmd_parms *cmd, void *d,
                                       const char *arg)
{
    conntimes_srv_conf_t *g = ap_get_module_config(cmd->server->module_config,
                                                   &conntimes_module);
    (void)d;
    return conntimes_set_int(cmd, arg, &g->slots, 10, 100000);
}

static const char *conntimes_set_flag(cmd_parms *cmd, const char *arg,
                                      int *where)
{
    if (!strcasecmp(arg, "on")) {
        *where = 1;
    }
    else if (!strcasecmp(arg, "off")) {
        *where = 0;
    }
    else {
        return apr_psprintf(cmd->pool, "%s: bad value '%s': must be On or "
                            "Off", cmd->cmd->name, arg);
    }
    return NULL;
}

static const char *conntimes_set_kernel_stamps(cmd_parms *cmd, void *d,
                                               const char *arg)
{
    conntimes_srv_conf_t *g = ap_get_module_config(cmd->server->module_config,
                                                   &conntimes_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    return err ? err : conntimes_set_flag(cmd, arg, &g->kernel_stamps);
}

/* ap_timeout_parameter_parse() looks at the first letters of the unit
 * only: "10sec" would be 10 s and "5hours" 5 h.  Exactly its units. */
static int conntimes_time_unit_ok(const char *arg)
{
    static const char *const units[] = { "", "ms", "s", "mi", "min", "h",
                                         NULL };
    const char *unit = arg + strspn(arg, "0123456789");
    int i;

    for (i = 0; units[i]; i++) {
        if (!strcmp(unit, units[i])) {
            return 1;
        }
    }
    return 0;
}

static const char *conntimes_set_slow(cmd_parms *cmd, void *d,
                                      const char *arg)
{
    conntimes_srv_conf_t *g = ap_get_module_config(cmd->server->module_config,
                                                   &conntimes_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_interval_time_t t;

    (void)d;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "off")) {
        t = 0;
    }
    else if (!apr_isdigit(*arg) || !conntimes_time_unit_ok(arg)
             || ap_timeout_parameter_parse(arg, &t, "ms") != APR_SUCCESS
             || t < 0 || t > apr_time_from_sec(86400)) {
        return apr_psprintf(cmd->pool, "%s: bad value '%s': must be Off or a "
                            "duration up to one day, in ms by default or "
                            "with a unit (ms, s, mi or min, h), e.g. 500 or 2s",
                            cmd->cmd->name, arg);
    }
    g->slow = t;
    g->slow_set = 1;
    return NULL;
}

static const char *conntimes_set_record(cmd_parms *cmd, void *d,
                                        const char *arg)
{
    return conntimes_set_flag(cmd, arg,
                              &((conntimes_dir_conf_t *)d)->record);
}

static const char *conntimes_set_allow_reset(cmd_parms *cmd, void *d,
                                             const char *arg)
{
    return conntimes_set_flag(cmd, arg,
                              &((conntimes_dir_conf_t *)d)->allow_reset);
}

/* ------------------------------------------------------------ hooks */

static void conntimes_register_hooks(apr_pool_t *p)
{
    /* mod_log_config creates its tag table in its own REALLY_FIRST
     * pre_config: register after it, as mod_logio does. */
    static const char *const after_log_config[] = { "mod_log_config.c", NULL };

    (void)p;
    ap_hook_pre_config(conntimes_pre_config, after_log_config, NULL,
                       APR_HOOK_REALLY_FIRST);
    /* Shared memory and listener time stamps, once the listeners exist
     * (the MPM opens them in open_logs). */
    ap_hook_post_config(conntimes_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(conntimes_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_status(conntimes_child_status, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_optional_fn_retrieve(conntimes_retrieve_optional_fns, NULL, NULL,
                                 APR_HOOK_MIDDLE);
    /* First of all pre_connection hooks: the pick-up time is the earliest
     * moment a worker holds the connection, before mod_ssl's set-up. */
    ap_hook_pre_connection(conntimes_pre_connection, NULL, NULL,
                           APR_HOOK_REALLY_FIRST);
#if defined(__linux__) && defined(SO_TIMESTAMPNS)
    /* The core's own socket bucket runs REALLY_LAST; an MPM or protocol
     * module that brings its own runs before us and keeps it. */
    ap_hook_insert_network_bucket(conntimes_insert_network_bucket, NULL, NULL,
                                  APR_HOOK_LAST);
#endif
    ap_hook_pre_read_request(conntimes_pre_read_request, NULL, NULL,
                             APR_HOOK_REALLY_FIRST);
    /* First: other modules' post_read_request work is filter time. */
    ap_hook_post_read_request(conntimes_post_read_request, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    /* Last: the handler that the other fixups chose, if any. */
    ap_hook_fixups(conntimes_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    /* First, declining: marks the start of the content handler whichever
     * module then takes the request. */
    ap_hook_handler(conntimes_handler_start, NULL, NULL,
                    APR_HOOK_REALLY_FIRST);
    ap_hook_handler(conntimes_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* First, declining: an HTTP/1.1 request upgraded to another protocol
     * (h2c) ends at the switch. */
    ap_hook_protocol_switch(conntimes_protocol_switch, NULL, NULL,
                            APR_HOOK_REALLY_FIRST);
    /* Event MPM only: a worker lets go of / takes back a connection. */
    ap_hook_suspend_connection(conntimes_suspend_connection, NULL, NULL,
                               APR_HOOK_MIDDLE);
    ap_hook_resume_connection(conntimes_resume_connection, NULL, NULL,
                              APR_HOOK_MIDDLE);
    /* Before mod_log_config (MIDDLE), so the tags see closed phases. */
    ap_hook_log_transaction(conntimes_log_transaction, NULL, NULL,
                            APR_HOOK_REALLY_FIRST);
    APR_OPTIONAL_HOOK(ap, status_hook, conntimes_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);

    /* Input: above mod_ssl (CONNECTION + 5) so that "ready" is when the
     * plain text is there, after the TLS handshake.  Output: the first
     * connection filter, to see the EOR bucket as soon as it is sent. */
    conntimes_in_handle = ap_register_input_filter(CONNTIMES_FILTER_IN,
                                                   conntimes_in_filter, NULL,
                                                   AP_FTYPE_CONNECTION);
    conntimes_out_handle = ap_register_output_filter(CONNTIMES_FILTER_OUT,
                                                     conntimes_out_filter,
                                                     NULL,
                                                     AP_FTYPE_CONNECTION);
}

/* ------------------------------------------------------------ directives */

static const command_rec conntimes_cmds[] = {
    AP_INIT_TAKE1("ConntimesRecord", conntimes_set_record, NULL,
                  RSRC_CONF | ACCESS_CONF | OR_OPTIONS,
                  "On (default) or Off: add the requests of this scope to the "
                  "aggregates and the time series"),
    AP_INIT_TAKE1("ConntimesAllowReset", conntimes_set_allow_reset, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "On or Off (default): the conntimes-status handler here "
                  "accepts a POST that resets the aggregates"),
    AP_INIT_TAKE1("ConntimesMaxHandlers", conntimes_set_max_handlers, NULL,
                  RSRC_CONF,
                  "Handler names aggregated separately, 1-256 (default 16); "
                  "more go to \"(other)\""),
    AP_INIT_TAKE1("ConntimesSeriesInterval", conntimes_set_interval, NULL,
                  RSRC_CONF,
                  "Seconds per point of the time series, 10-3600 (default 60)"),
    AP_INIT_TAKE1("ConntimesSeriesSlots", conntimes_set_slots, NULL,
                  RSRC_CONF,
                  "Points kept in the time series, 10-100000 (default 1440)"),
    AP_INIT_TAKE1("ConntimesKernelTimestamps", conntimes_set_kernel_stamps,
                  NULL, RSRC_CONF,
                  "On (default) or Off: take arrival times from the kernel "
                  "(SO_TIMESTAMPNS)"),
    AP_INIT_TAKE1("ConntimesSlowThreshold", conntimes_set_slow, NULL,
                  RSRC_CONF,
                  "Total time from which a request is listed as slow "
                  "(default 1s; Off disables the list)"),
    { NULL }
};

/* ------------------------------------------------------------ module */

AP_DECLARE_MODULE(conntimes) = {
    STANDARD20_MODULE_STUFF,
    conntimes_create_dir_conf,          /* per-directory config creator */
    conntimes_merge_dir_conf,           /* per-directory config merger */
    conntimes_create_srv_conf,          /* per-server config creator */
    conntimes_merge_srv_conf,           /* per-server config merger */
    conntimes_cmds,                     /* command table */
    conntimes_register_hooks,           /* hook registration */
    AP_MODULE_FLAG_NONE                 /* flags */
};
