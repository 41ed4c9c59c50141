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
 * mod_bgdeliver: deliver responses to slow clients without holding a worker.
 *
 * How a response travels:
 *
 *  1. A handler hook at APR_HOOK_REALLY_FIRST sees a request configured for
 *     background delivery (BgDeliver On, or another module asked through
 *     bgdeliver_request_background()).  It inserts the BGDELIVER filter and
 *     runs the real handlers itself.  BGDELIVER sits after every HTTP
 *     protocol filter (headers, Range, chunking) and before the connection
 *     filters (TLS, core), so it captures the exact bytes the client will
 *     receive: file buckets stay file buckets, memory beyond
 *     BgDeliverMemoryLimit is spooled to an unlinked temporary file.
 *  2. When the handler has finished, our hook returns SUSPENDED: the worker
 *     is free.  A process_connection hook at APR_HOOK_REALLY_FIRST wraps the
 *     HTTP processing, sees the SUSPENDED state before the MPM does and
 *     turns it into CONN_STATE_ASYNC_WAITIO, which the event MPM (2.4.63+)
 *     polls without a worker and hands back to process_connection when the
 *     socket is ready.
 *  3. Each time the connection comes back, the pump moves a slice of the
 *     captured data to the connection filters, never with a FLUSH and never
 *     more than the core output filter sets aside without blocking, and
 *     parks the connection again: on socket writability when the client is
 *     slow, or until a time (pacing) by briefly putting a Linux timerfd
 *     under the socket's descriptor number (see bgd_timed_wait_arm()).
 *     Where it can (see bgd_engine_can_take()) an engine thread of the
 *     child takes over instead, once a worker has found the socket full or
 *     a pulse is due: it waits for the socket in its own epoll and writes
 *     around the filter chain (plain HTTP) or through mod_ssl (HTTPS),
 *     without a trip through the MPM each time (see "engine thread"
 *     below).
 *  4. After the last byte, ap_process_request_after_handler() logs the
 *     request (true bytes, true duration) and hands the connection back to
 *     the MPM for keep-alive.
 *
 * Where the engine cannot run asynchronously (prefork/worker MPMs, HTTP/2
 * streams, internal redirects, a stopping child) responses are delivered
 * normally; paced responses are then paced inside the worker, the way
 * mod_ratelimit does, and the documentation says so.
 *
 * Slow-read defence: the engine thread, as a watchdog, shuts down the
 * socket of a delivery that sits parked past its deadline (idle timeout,
 * minimum read rate, maximum time); the MPM then wakes the connection and
 * the pump ends it.  Caps per client address and server-wide are checked
 * before the handler runs.  In-flight deliveries of all children are kept
 * in a shared memory table for the bgdeliver-status handler and
 * mod_status.
 */

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "util_filter.h"
#include "mod_status.h"
#include "scoreboard.h"

#include "apr_atomic.h"
#include "apr_buckets.h"
#include "apr_file_info.h"
#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_optional.h"
#include "apr_portable.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_thread_cond.h"
#include "apr_thread_mutex.h"
#include "apr_thread_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#if defined(__linux__)
#include <linux/sockios.h>
#include <linux/sock_diag.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/timerfd.h>
#define BGD_HAVE_TIMED_WAIT 1
#define BGD_POLL_WRITABLE EPOLLOUT
#define BGD_POLL_HANGUP EPOLLRDHUP
#else
#define BGD_HAVE_TIMED_WAIT 0
#define BGD_POLL_WRITABLE 0
#define BGD_POLL_HANGUP 0
#endif

#include "mod_bgdeliver.h"

module AP_MODULE_DECLARE_DATA bgdeliver_module;

#define BGD_VERSION "mod_bgdeliver/1.0"
#define BGD_STATUS_HANDLER "bgdeliver-status"

#define BGD_UNSET             (-1)
/* Below 64 KiB the core output filter sets a response aside without
 * blocking (FlushMaxThreshold), so background delivery gains nothing. */
#define BGD_DEFAULT_MIN_SIZE  (64 * 1024)
#define BGD_DEFAULT_MEM_LIMIT (32 * 1024)
#define BGD_DEFAULT_SPOOL_MAX ((apr_off_t)1024 * 1024 * 1024)
#define BGD_DEFAULT_MIN_RATE  256
#define BGD_DEFAULT_GRACE     apr_time_from_sec(30)
#define BGD_DEFAULT_MAX_DELIVERIES 4096
/* Line time a paced delivery may be behind its schedule and still catch
 * up at once: two pulses, and no less than this (see
 * bgd_pace_after_dry()). */
#define BGD_PACE_CATCH_UP     apr_time_from_msec(200)
/* The smallest pass: one bucket buffer (see bgd_slice_size()).  Exactly
 * APR_BUCKET_BUFF_SIZE, not 8 KiB: a file range read into memory comes in
 * reads of that size, and the 192 bytes left over by an 8 KiB pass would
 * take an 8 KiB allocator block of their own. */
#define BGD_SLICE_BYTES       APR_BUCKET_BUFF_SIZE
/* The smallest pass to a socket with less room than BGD_SLICE_BYTES but
 * not nearly full: a client that drains while a worker fills its socket is
 * not chased with tiny writes.  At least the 4 KiB under which the core
 * output filter does not write but sets aside: under TLS a pass is one
 * record (bgd_read_pass()), and a smaller one would be kept back. */
#define BGD_SLICE_MIN         4096
/* The largest pass of bytes in memory (generated data, anything under
 * TLS).  The core output filter turns a pass holding FlushMaxThreshold
 * (64 KiB by default) of memory buckets into a blocking write: stay well
 * below it. */
#define BGD_SLICE_MEM_MAX     (32 * 1024)
/* The largest pass of a file range over plain HTTP.  With sendfile, what
 * the socket does not take stays a reference to the file (in our queue, or
 * the core's); read into memory (EnableSendfile Off), a pass is never
 * bigger than the socket's room.  Big passes matter to a fast client: one
 * got 0.8x stock Apache's sendfile throughput with passes of 1 MB, 1.0x
 * with 16 MB (bench/bgdeliver). */
#define BGD_SENDFILE_SLICE    (16 * 1024 * 1024)
/* What the child's pass-block allocator keeps for reuse: 128 slow
 * readers' blocks, or two of a direct write's (BGD_DIRECT_READ). */
#define BGD_BLOCKS_KEEP       (128 * 8192)
/* Free blocks given back at the hand-off (bgd_conn_release_free()). */
#define BGD_RELEASE_BLOCKS    16
/* A socket with this much room in its send buffer belongs to a fast
 * client (see bgd_slice_size()). */
#define BGD_ROOM_FAST         (256 * 1024)
#define BGD_SPOOL_LIMIT_MIN   (32 * 1024)
/* What one worker visit may send before it yields to other connections. */
#define BGD_VISIT_BYTES       (4 * 1024 * 1024)
#define BGD_VISIT_TIME        apr_time_from_msec(2)
/* A producer with nothing ready yet is asked again this much later, then
 * twice as late each time up to the maximum (an idle event stream costs a
 * few wake-ups a second): it polls on a timer, never in a loop. */
#define BGD_PRODUCER_RETRY     apr_time_from_msec(10)
#define BGD_PRODUCER_RETRY_MAX apr_time_from_msec(250)
#define BGD_WATCHDOG_PERIOD   apr_time_from_msec(100)
/* A timed wait at least this long (a line's latency, above all) has the
 * engine thread watch the socket for the client's hang-up meanwhile: the
 * delivery, its slot and its descriptors would otherwise outlive the
 * client until the wait ends.  Shorter waits (a modem's pulses) are not
 * worth the two epoll_ctl() calls each. */
#define BGD_GONE_WATCH_MIN    apr_time_from_sec(1)
/* Each timed wake-up costs a trip through the MPM's listener and worker
 * queue (~50 us of CPU, measured): beyond this many wake-ups per second
 * a child lengthens its pulses instead of burning a core. */
#define BGD_DEFAULT_WAKEUPS   3000
/* Engine threads per child (BgDeliverEngineThreads): one, as nginx runs
 * one event loop per worker process; more for children that must fill
 * several cores with fast clients (or encrypt for many over HTTPS). */
#define BGD_DEFAULT_ENGINE_THREADS 1
#define BGD_MAX_ENGINE_THREADS 64
#define BGD_RATE_WINDOW       apr_time_from_sec(1)

#define BGD_OVERFLOW_FALLBACK 1
#define BGD_OVERFLOW_REJECT   2

/* ------------------------------------------------------------------ types */

typedef struct bgd_dir_conf_t {
    int enabled;                        /* BgDeliver */
    apr_off_t min_size;                 /* BgDeliverMinSize */
    apr_off_t mem_limit;                /* BgDeliverMemoryLimit */
    apr_off_t spool_max;                /* BgDeliverSpoolLimit */
    apr_off_t min_rate;                 /* BgDeliverMinRate */
    apr_interval_time_t min_rate_grace;
    apr_interval_time_t idle_timeout;   /* BgDeliverIdleTimeout */
    apr_interval_time_t max_time;       /* BgDeliverMaxTime */
    int overflow;                       /* BgDeliverOverflow */
    int retry_after;
} bgd_dir_conf_t;

typedef struct bgd_srv_conf_t {
    const char *spool_dir;              /* BgDeliverSpoolDir */
    int max_per_client;                 /* BgDeliverMaxPerClient */
    int client_bits4;                   /* BgDeliverClientPrefix */
    int client_bits6;
} bgd_srv_conf_t;

/* One client for BgDeliverMaxPerClient: a host of IPv4 (NAT puts a home
 * behind one address), a /64 of IPv6 (a home or a phone gets one, and
 * picks a new address in it at will; counted per address, a client could
 * rotate its way past any cap). */
#define BGD_DEFAULT_CLIENT_BITS4 32
#define BGD_DEFAULT_CLIENT_BITS6 64

/* The owner of a dead child's slot while a reaper frees it: the reaper's
 * pid with the top bit set (no pid has it), so that a reaper that dies
 * in between leaves a slot the next one can take back. */
#define BGD_SLOT_REAPING 0x80000000U

/* One in-flight delivery as seen by every child (shared memory).  The
 * owner is the only writer; `seq` is odd while it writes so that readers
 * can retry instead of locking.  `owner` is the owner's pid, 0 when free:
 * one word, so that claiming, releasing and reaping a dead owner's slot
 * are each a single compare-and-swap on exactly the value seen (a reaper
 * can never free a slot that a live child has claimed meanwhile). */
typedef struct bgd_slot_t {
    volatile apr_uint32_t owner;
    volatile apr_uint32_t seq;
    pid_t pid;
    int https;
    int mode;                           /* 0 its handler still runs, then
                                         * 1 background, 2 paced in worker */
    /* Counted as started and not yet as ended: what a slot reaped from a
     * dead child counts as (aborted), so that the totals still add up. */
    volatile apr_uint32_t counted;
    apr_time_t started;
    apr_time_t updated;
    apr_off_t sent;
    apr_off_t total;
    apr_off_t target_rate;
    apr_off_t current_rate;
    char client[48];
    /* The client's address for BgDeliverMaxPerClient: 4 (IPv4, also
     * mapped in IPv6) or 6 in addr_family, 0 while the slot is free. */
    apr_byte_t addr_family;
    apr_byte_t addr[16];
    char vhost[64];
    char method[16];
    char label[24];
    char uri[192];
} bgd_slot_t;

typedef struct bgd_shm_t {
    apr_uint32_t magic;
    apr_uint32_t nslots;
    volatile apr_uint64_t started;
    volatile apr_uint64_t completed;
    volatile apr_uint64_t aborted;
    volatile apr_uint64_t dropped;
    volatile apr_uint64_t fallbacks;
    volatile apr_uint64_t rejected;
    volatile apr_uint64_t bytes;
    /* writes of the engine threads, by thread index in their child */
    volatile apr_uint64_t engine_writes[BGD_MAX_ENGINE_THREADS];
    volatile apr_uint32_t in_flight;
    volatile apr_uint64_t reaped_at;    /* last bgd_slots_reap(), any child */
    bgd_slot_t slots[1];
} bgd_shm_t;

/* Changes with the layout of bgd_shm_t: the table outlives a graceful
 * restart, and a new build must not read an old layout. */
#define BGD_SHM_MAGIC 0x42474436u       /* "BGD6" */

typedef struct bgd_retained_t {
    apr_shm_t *shm;
    bgd_shm_t *table;
    apr_uint32_t nslots;
} bgd_retained_t;

/* What one pump visit ends with. */
typedef enum {
    BGD_PUMP_DONE,                      /* last byte handed to the core */
    BGD_PUMP_WAIT_SOCKET,               /* core holds data: wait writable */
    BGD_PUMP_WAIT_TIMER,                /* pacing: wait until next_tick */
    BGD_PUMP_YIELD,                     /* visit budget used: let others run */
    BGD_PUMP_ERROR                      /* client gone, file changed, ... */
} bgd_pump_e;

/* How the engine thread can write for a delivery, if at all
 * (bgd_engine_can_take()). */
enum {
    BGD_ENGINE_NONE,
    BGD_ENGINE_DIRECT,                  /* to the socket, around the chain */
    BGD_ENGINE_CHAIN                    /* through mod_ssl and the core */
};

typedef struct bgd_conn_t bgd_conn_t;
typedef struct bgd_engine_t bgd_engine_t;

/* A file whose bytes the response references; re-checked before each
 * slice so that a file truncated or rewritten under us aborts the
 * delivery instead of sending wrong bytes.  Size and mtime only: a file
 * renamed over (ctime changes with the link count) still has its bytes. */
typedef struct bgd_file_ref_t {
    apr_file_t *orig;                   /* the handler's handle */
    apr_file_t *fd;                     /* ours, in c->pool (see below) */
    apr_off_t size;
    apr_time_t mtime;
    apr_time_t checked;                 /* pump visit that last checked it */
} bgd_file_ref_t;

typedef struct bgd_job_t {
    request_rec *r;
    request_rec *top;                   /* whose end logs r (see below) */
    conn_rec *c;
    bgd_conn_t *bc;                     /* set once handed to the MPM */
    const bgd_dir_conf_t *conf;
    ap_filter_t *capture;               /* our BGDELIVER filter */
    apr_bucket_brigade *queue;          /* captured wire bytes not yet sent */
    apr_bucket_brigade *slice;          /* scratch for one pass */
    apr_array_header_t *files;          /* bgd_file_ref_t */

    bgdeliver_pacing_t pacing;
    bgdeliver_producer_fn *producer;
    void *baton;
    apr_bucket_brigade *produced;       /* the producer's, reused */
    apr_interval_time_t producer_retry; /* its next poll, when it is idle */
    apr_time_t producer_idle_start;     /* first empty answer in a row */
    apr_interval_time_t producer_wait;  /* earlier idle runs, in total */
    int api_used;                       /* a handler API call has the body */
    int file_short;                     /* a read found a file shorter: the
                                         * bytes read may be the kernel's
                                         * zeros, never to be sent */

    apr_file_t *spool;
    apr_off_t spool_size;
    apr_off_t spool_freed;              /* punched out: has left */
    apr_off_t mem_bytes;
    apr_off_t captured;                 /* wire bytes captured */
    apr_off_t sent;                     /* wire bytes passed on */
    apr_off_t body_at_capture;          /* r->bytes_sent when captured */

    apr_time_t handoff;
    apr_time_t finished;
    apr_time_t pace_start;
    apr_interval_time_t pace_lost;      /* line time nothing was there for */
    apr_time_t next_tick;
    apr_time_t last_progress;
    /* Where the client's count of bytes read starts (bgd_job_acked()):
     * the first bytes captured of an unpaced response, whose handler's
     * writes the idle rule watches (bgd_capture_rules()); then, for every
     * response, the hand-off, where the clock of BgDeliverMinRate starts. */
    apr_time_t rule_origin;
    apr_off_t sent_at_origin;
    apr_off_t queued_at_origin;         /* in the socket then (pipelined) */
    apr_off_t progress_acked;           /* the client had read, last look */
    apr_time_t rules_checked;           /* that look (bgd_capture_rules()) */
    unsigned int capture_watched:1;     /* the idle rule ran in the capture */
    apr_time_t rate_mark_time;
    apr_off_t rate_mark_sent;
    apr_interval_time_t worker_time;
    apr_uint32_t slices;
    int slot;

    unsigned int requested:1;           /* another module asked for it */
    unsigned int fell_back:1;           /* counted as a fallback */
    unsigned int capturing:1;
    unsigned int started:1;             /* capture set up */
    unsigned int eos:1;
    unsigned int body_broken:1;         /* the handler's backend broke off */
    unsigned int flush_hint:1;
    unsigned int foreground:1;          /* the rest goes out normally */
    unsigned int background:1;          /* handed to the MPM */
    unsigned int in_worker:1;           /* paced inside the worker */
    unsigned int line_wait:1;           /* handler waits for its line */
    unsigned int spool_failed:1;        /* BGD010/BGD011: memory only */
    unsigned int bodiless:1;
    unsigned int drain:1;               /* ignore pacing (child stopping) */
    unsigned int counted_paced:1;       /* in bgd_paced_jobs */
    unsigned int tls:1;                 /* writes go through mod_ssl */
    unsigned int unarmed:1;             /* a timed wait failed (BGD018) */
    const char *outcome;
    const char *kill_reason;            /* set by the watchdog */
} bgd_job_t;

struct bgd_conn_t {
    conn_rec *c;
    bgd_job_t *job;
    int nested;                         /* inside our own process_connection */
    int fd;                             /* the socket's descriptor number */
    int sock_dup;                       /* the socket while a timer is on fd */
    apr_socket_t *dup_socket;           /* sock_dup for the core output
                                         * filter (bgd_engine_pump()) */
    int timer_armed;
    /* The engine thread's pump ended the delivery, and how: the worker
     * that gets the connection back does not pump again (a changed file
     * would be logged twice). */
    int engine_ended;
    bgd_pump_e engine_end;
    /* The engine it was last parked with (bgd_park()); the fields below
     * are protected by that engine's mutex. */
    bgd_engine_t *engine;
    /* watchdog list */
    bgd_conn_t *wd_next;
    bgd_conn_t *wd_prev;
    int wd_listed;
    apr_time_t wd_deadline;
    const char *wd_reason;
    /* pace heap of the engine thread */
    int pace_index;                     /* in engine->heap, or -1 */
    /* the engine thread's wait for writability, or its watch for the
     * client's hang-up during a long timed wait */
    int stream_on;                      /* sock_dup is in engine->epfd */
    int watch_gone;                     /* ... for a hang-up, not to write */
    int hangup_seen;                    /* the watch fired: for the worker */
    int half_closed;                    /* a hang-up with a request after */
    apr_uint64_t stream_key;            /* its key in engine->streams */
    int in_load;                        /* counted in engine->load */
    /* the child's list of connections with a job (bgd_live_*) */
    bgd_conn_t *live_next;
    bgd_conn_t *live_prev;
    int live_listed;
    /* File handles of earlier deliveries left in c->pool (see
     * bgd_adopt_file()). */
    unsigned int pool_handles;
};

/* The due time is kept in the heap itself: sifting then reads one array,
 * not the connections. */
typedef struct {
    apr_time_t due;                     /* the next pulse */
    bgd_conn_t *bc;
} bgd_pace_entry_t;

/* An engine thread, and what it waits for.  A child runs
 * BgDeliverEngineThreads of them.  A connection belongs to one from the
 * moment a worker parks it (bgd_park()) until a worker takes it back
 * (bgd_wd_unlist()), and goes to the least loaded one each time. */
struct bgd_engine_t {
    int index;
    /* Everything below, and the engine fields of the connections parked
     * here. */
    apr_thread_mutex_t *mutex;
#if !BGD_HAVE_TIMED_WAIT
    apr_thread_cond_t *wake;            /* the thread sleeps on it */
#endif
    apr_thread_cond_t *write_done;      /* a write ended (BGD_PACE_BUSY) */
    apr_thread_t *thread;
    volatile int exit;
    bgd_conn_t *wd_head;                /* MPM waits with a deadline */
    /* None of their deadlines is earlier (bgd_watchdog_scan_locked()). */
    apr_time_t wd_due;
    /* Paced deliveries whose pulses the thread writes: a binary min-heap
     * on the due time of their next pulse. */
    bgd_pace_entry_t *heap;
    int pace_count;
    int pace_size;
    /* The thread sleeps in epoll_wait(): the sockets it writes to, and an
     * eventfd by which workers wake it.  A socket's registration carries a
     * key, not the connection: an event the thread has already fetched may
     * be for a connection that a worker took back meanwhile. */
    int epfd;
    int evfd;
    apr_hash_t *streams;                /* key -> bgd_conn_t */
    apr_pool_t *pool;                   /* streams grows from it */
    apr_uint64_t seq;
    /* Connections it writes for (in the heap or the poller), read
     * unlocked by bgd_engine_pick(). */
    volatile apr_uint32_t load;
};

/* ---------------------------------------------------------- module state */

static ap_filter_rec_t *bgd_capture_filter_handle;
static ap_filter_rec_t *bgd_unmapped_filter_handle;
static int bgd_mpm_can_waitio;          /* async engine available */
static int bgd_max_deliveries = BGD_UNSET;  /* BgDeliverMaxDeliveries */
static int bgd_max_wakeups = BGD_UNSET;     /* BgDeliverMaxWakeups */
static volatile apr_uint32_t bgd_paced_jobs;    /* paced, in this child */
static bgd_retained_t *bgd_retained;
static bgd_shm_t *bgd_table;
static volatile apr_uint32_t bgd_child_stopping_flag;  /* no new ones */
static volatile apr_uint32_t bgd_child_draining_flag;  /* and hurry */
static int bgd_my_generation;
static pid_t bgd_my_pid;

static int bgd_engine_threads = BGD_UNSET;  /* BgDeliverEngineThreads */
static bgd_engine_t *bgd_engines;
static int bgd_engine_count;            /* running in this child */
/* The connections of this child that hold a job: at a hard stop the MPM
 * exits without closing those it waits for, and their requests would
 * never be logged (bgd_child_exit()). */
static apr_thread_mutex_t *bgd_live_mutex;
static bgd_conn_t *bgd_live_head;
#define BGD_PACE_BUSY  (-2)             /* pace_index: the thread writes */
static APR_OPTIONAL_FN_TYPE(ap_logio_add_bytes_out) *bgd_logio_add_bytes_out;

/* Whether paced deliveries must drain at full speed: after a hard stop,
 * or once the parent runs a newer generation (a graceful restart), which
 * a child notices by itself too: prefork runs child_stopping only after
 * its request, and event and worker do not run it again for a child that
 * was already retiring. */
static int bgd_draining(void)
{
    return apr_atomic_read32(&bgd_child_draining_flag)
           || (ap_scoreboard_image
               && ap_scoreboard_image->global->running_generation
                  != bgd_my_generation);
}

/* ------------------------------------------------------------- helpers */

static bgd_dir_conf_t *bgd_dir_conf(request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &bgdeliver_module);
}

#define BGD_DEFAULT(field, dflt) \
    conf->field = conf->field != BGD_UNSET ? conf->field : (dflt)

/* The values in force for r: what its sections set, and the defaults for
 * the rest.  Only here: a merge that filled in defaults would make two
 * merged <Location> sections (merged with each other before they are
 * merged over <Directory> and the server) override with defaults what the
 * outer scopes set. */
static const bgd_dir_conf_t *bgd_resolved_conf(request_rec *r)
{
    bgd_dir_conf_t *conf = apr_pmemdup(r->pool, bgd_dir_conf(r),
                                       sizeof(*conf));

    BGD_DEFAULT(min_size, BGD_DEFAULT_MIN_SIZE);
    BGD_DEFAULT(mem_limit, BGD_DEFAULT_MEM_LIMIT);
    BGD_DEFAULT(spool_max, BGD_DEFAULT_SPOOL_MAX);
    BGD_DEFAULT(min_rate, BGD_DEFAULT_MIN_RATE);
    BGD_DEFAULT(min_rate_grace, BGD_DEFAULT_GRACE);
    BGD_DEFAULT(idle_timeout, 0);
    BGD_DEFAULT(max_time, 0);
    BGD_DEFAULT(overflow, BGD_OVERFLOW_FALLBACK);
    BGD_DEFAULT(retry_after, 0);
    return conf;
}

static bgd_job_t *bgd_req_job(const request_rec *r)
{
    return ap_get_module_config(r->request_config, &bgdeliver_module);
}

/* Whether the default handler serves r: ap_invoke_handler() names it ""
 * or after the content type, which has a '/' and never a ':' (unlike
 * "proxy:unix:/run/php/...|fcgi://..." handlers), except the historic
 * application/x-httpd-* script types. */
static int bgd_default_handler(const request_rec *r)
{
    const char *h = r->handler;

    return !h || !*h || !strcmp(h, "default-handler")
           || (ap_strchr_c(h, '/') && !ap_strchr_c(h, ':')
               && strncmp(h, "application/x-httpd-", 20));
}

/* The status pages that say why the server is full: never delivered by
 * the engine, neither captured nor paced, so that a cap (BgDeliverOverflow
 * reject) cannot refuse them under a <Location /> with BgDeliver On, nor
 * a client's chosen modem line slow them down. */
static int bgd_status_page(const request_rec *r)
{
    return r->handler && (!strcmp(r->handler, "server-status")
                          || !strcmp(r->handler, BGD_STATUS_HANDLER)
                          || !strcmp(r->handler, "conntimes-status"));
}

/* Whether a filter that may make the body bigger than the file (SSI,
 * substitutions: the resource filters) will see r's output. */
static int bgd_resource_filtered(const request_rec *r)
{
    ap_filter_t *f;

    for (f = r->output_filters; f && f != r->proto_output_filters;
         f = f->next) {
        if (f->frec->ftype < AP_FTYPE_CONTENT_SET) {
            return 1;
        }
    }
    return 0;
}

/* Whether the response keeps a schedule: a rate, or a first byte held
 * back by a latency (the C API allows a latency alone). */
static int bgd_job_timed(const bgd_job_t *job)
{
    return job->pacing.rate > 0 || job->pacing.latency > 0;
}

/* When a paced response's first byte is due: the anchor of its schedule
 * (pace_start, once the capture has begun to forward). */
static apr_time_t bgd_pace_origin(const bgd_job_t *job)
{
    return job->r->request_time + job->pacing.latency;
}

static apr_off_t bgd_min_rate_for(const bgd_job_t *job)
{
    apr_off_t floor = job->conf->min_rate;
    /* A paced delivery is slow on purpose: only ask half its own pace,
     * rounded down (at 1 or 2 B/s, "half plus one" was the line's own rate
     * and dropped clients that were on schedule); none below 2 B/s, where
     * Timeout still applies. */
    if (job->pacing.rate > 0 && job->pacing.rate / 2 < (double)floor) {
        floor = (apr_off_t)(job->pacing.rate / 2);
    }
    return floor;
}

/* When BgDeliverMaxTime ends the response; 0 for no limit. */
static apr_time_t bgd_max_time_end(const bgd_job_t *job)
{
    return job->conf->max_time > 0
           ? job->r->request_time + job->conf->max_time : 0;
}

/* The connection's socket descriptor, for a worker that has it (not the
 * engine thread, whose socket is the duplicate bc->sock_dup), or -1. */
static int bgd_conn_fd(conn_rec *c)
{
    apr_socket_t *csd = ap_get_conn_socket(c);
    apr_os_sock_t fd;

    return csd && apr_os_sock_get(&fd, csd) == APR_SUCCESS ? (int)fd : -1;
}

/* The request whose response the client gets: a sub-request's output is
 * its main request's body. */
static const request_rec *bgd_main_request(const request_rec *r)
{
    while (r->main) {
        r = r->main;
    }
    return r;
}

/* What the socket's send queue holds, or -1 where that is not known (no
 * SIOCOUTQ; an HTTP/2 stream, which shares its socket with the others). */
static apr_off_t bgd_job_socket_queued(const bgd_job_t *job)
{
#ifdef SIOCOUTQ
    int fd, queued = 0;

    if (!job->c->master && (fd = bgd_conn_fd(job->c)) >= 0
        && ioctl(fd, SIOCOUTQ, &queued) == 0) {
        return queued;
    }
#endif
    (void)job;
    return -1;
}

/* How much the client has read since the rules' clock started: what it
 * was sent and what the socket held then, less what the socket holds
 * now (`queued`, from bgd_job_socket_queued()).  Bytes still queued are
 * not read yet: the kernel grows the send buffer of a connection that
 * keeps it full, to megabytes, which counted as read would let a client
 * far below BgDeliverMinRate pass for minutes.  The bytes of an earlier
 * response still queued when this one started (a pipelined request) are
 * the client's reading as much: it takes them first.  TLS records make
 * the queue a little larger than the data they carry: the error is on
 * the strict side and below 1 %.  Where the queue is unknown, what was
 * handed over is all we know. */
static apr_off_t bgd_job_acked_at(const bgd_job_t *job, apr_off_t queued)
{
    apr_off_t offered = job->sent - job->sent_at_origin
                        + job->queued_at_origin;

    if (queued < 0) {
        return job->sent - job->sent_at_origin;
    }
    return offered > queued ? offered - queued : 0;
}

static apr_off_t bgd_job_acked(const bgd_job_t *job)
{
    return bgd_job_acked_at(job, bgd_job_socket_queued(job));
}

/* The count of bytes read starts over (see rule_origin); so does the idle
 * clock, unless the capture kept it (keep_idle). */
static void bgd_rules_start(bgd_job_t *job, apr_time_t now, int keep_idle)
{
    apr_off_t queued = bgd_job_socket_queued(job);

    job->rule_origin = now;
    job->sent_at_origin = job->sent;
    job->queued_at_origin = queued > 0 ? queued : 0;
    job->progress_acked = 0;
    if (!keep_idle) {
        job->last_progress = now;
    }
}

/* When the client has been idle too long (BgDeliverIdleTimeout, or the
 * server's Timeout, what stock Apache allows a write that makes no
 * progress: the MPM's own Timeout cannot apply, since every wait of ours
 * is a new one, bounded by bgd_wait_bound()); 0 for never. */
static apr_time_t bgd_idle_deadline(const bgd_job_t *job,
                                    const char **reason)
{
    /* A paced delivery's own latency is no idleness of the client. */
    apr_time_t idle_since = job->pace_start > job->last_progress
                            ? job->pace_start : job->last_progress;

    if (job->conf->idle_timeout > 0) {
        *reason = "idle-timeout";
        return idle_since + job->conf->idle_timeout;
    }
    if (job->r->server->timeout > 0) {
        *reason = "timeout";
        return idle_since + job->r->server->timeout;
    }
    *reason = NULL;
    return 0;
}

/* The earliest time at which this delivery breaks a slow-read rule if it
 * makes no further progress; 0 when no rule applies.  The minimum rate
 * counts what the client has taken, which changes without a pass of ours:
 * a deadline that passes is checked again (bgd_rule_broken(), the
 * watchdog) before it drops anyone. */
static apr_time_t bgd_deadline(const bgd_job_t *job, const char **reason)
{
    const bgd_dir_conf_t *conf = job->conf;
    apr_time_t deadline = bgd_idle_deadline(job, reason);
    apr_time_t max_end;
    apr_off_t min_rate;

    min_rate = bgd_min_rate_for(job);
    /* Counted from the hand-off: before it the client may well wait for
     * a slow handler, which is nobody's slow reading.  Nor while a
     * producer has nothing: the client has taken all there was, and the
     * wait lasts until a worker asks the producer again, however busy the
     * workers are (it is counted as excused once the data comes). */
    if (min_rate > 0 && job->handoff && !job->producer_idle_start) {
        apr_time_t origin = job->rule_origin;
        apr_time_t t = origin + conf->min_rate_grace;
        apr_time_t need = origin
                          + (apr_time_t)((double)bgd_job_acked(job)
                                         / (double)min_rate
                                         * APR_USEC_PER_SEC);
        /* A paced delivery's own latency does not count against it, nor
         * does the time its producer had nothing to send (the client had
         * taken everything: last_progress marks the latest empty answer). */
        apr_interval_time_t excused = job->producer_wait
            + (job->producer_idle_start
               ? job->last_progress - job->producer_idle_start : 0);
        if (job->pace_start > origin) {
            excused += job->pace_start - origin;
        }
        t += excused;
        need += excused;
        if (need > t) {
            t = need;
        }
        if (!deadline || t < deadline) {
            deadline = t;
            *reason = "min-rate";
        }
    }
    max_end = bgd_max_time_end(job);
    if (max_end && (!deadline || max_end < deadline)) {
        deadline = max_end;
        *reason = "max-time";
    }
    return deadline;
}

/* The slow-read rule this delivery has broken by `now`, or NULL; its
 * deadline (0 for none) in *deadline.  A response whose last byte the
 * kernel already has is complete, whatever time it is. */
static const char *bgd_rule_broken(const bgd_job_t *job, apr_time_t now,
                                   apr_time_t *deadline)
{
    const char *reason;

    *deadline = bgd_deadline(job, &reason);
    if (!*deadline || now < *deadline
        || (job->eos && job->sent >= job->captured
            && !job->c->data_in_output_filters)) {
        return NULL;
    }
    return reason;
}

/* --------------------------------------------------- shared status table */

static bgd_slot_t *bgd_slot(int i)
{
    return (bgd_table && i >= 0 && (apr_uint32_t)i < bgd_table->nslots)
           ? &bgd_table->slots[i] : NULL;
}

static void bgd_slot_begin_write(bgd_slot_t *s)
{
    apr_atomic_inc32(&s->seq);
}

static void bgd_slot_end_write(bgd_slot_t *s)
{
    apr_atomic_inc32(&s->seq);
}

/* A reader's view of seq, through a compare-and-swap that changes
 * nothing: a full barrier, so that on weakly ordered CPUs the copy of the
 * slot cannot be read outside the two readings. */
static apr_uint32_t bgd_slot_seq_read(bgd_slot_t *s)
{
    return apr_atomic_cas32(&s->seq, 0, 0);
}

static void bgd_copy(char *dst, apr_size_t size, const char *src)
{
    apr_cpystrn(dst, src ? src : "", size);
}

static void bgd_count(volatile apr_uint64_t *counter, apr_uint64_t n)
{
    if (bgd_table) {
        apr_atomic_add64(counter, n);
    }
}

/* Free slots of children that ended without releasing them: a crash, a
 * kill, or a restart (not a graceful one), since the event MPM's
 * connection pools, whose cleanups release the slots, hang off pconf and
 * are never destroyed in a child that exits.  Run by every new child, and
 * when the table looks full.  A new child also frees the slots that carry
 * its own pid: a dead process that had the pid before cannot be told from
 * a live one by kill(). */
static void bgd_slots_reap(int starting)
{
    apr_uint32_t i;
    for (i = 0; i < bgd_table->nslots; i++) {
        bgd_slot_t *s = &bgd_table->slots[i];
        apr_uint32_t owner = apr_atomic_read32(&s->owner);
        pid_t pid = (pid_t)(owner & ~BGD_SLOT_REAPING);
        if (!owner
            || (!(starting && owner == (apr_uint32_t)bgd_my_pid)
                && (kill(pid, 0) == 0 || errno != ESRCH))) {
            continue;
        }
        /* Held by the reaper while it settles the count: a claim in
         * between would have its own `counted` taken for the dead one's. */
        if (apr_atomic_cas32(&s->owner,
                             BGD_SLOT_REAPING | (apr_uint32_t)bgd_my_pid,
                             owner) == owner) {
            if (apr_atomic_xchg32(&s->counted, 0)) {
                bgd_count(&bgd_table->aborted, 1);
            }
            /* As bgd_slot_release() does: the next claimer writes its
             * client only after it owns the slot, and a cap counted in
             * between must not see the dead one's.  Odd first, as in
             * bgd_slot_claim(): the dead one may have left it odd. */
            apr_atomic_set32(&s->seq, apr_atomic_read32(&s->seq) | 1);
            s->client[0] = '\0';
            s->addr_family = 0;
            bgd_slot_end_write(s);
            apr_atomic_dec32(&bgd_table->in_flight);
            apr_atomic_set32(&s->owner, 0);
        }
    }
}

/* At most once a second, server-wide: the child that wins the swap
 * reaps. */
static int bgd_slots_reap_due(void)
{
    apr_uint64_t now = (apr_uint64_t)apr_time_now();
    apr_uint64_t last = apr_atomic_read64(&bgd_table->reaped_at);

    return now - last >= (apr_uint64_t)APR_USEC_PER_SEC
           && apr_atomic_cas64(&bgd_table->reaped_at, now, last) == last;
}

/* The client's address as a slot keeps it: 4 and the IPv4 address in the
 * first four bytes (an IPv4 client of an IPv6 listener too), or 6; 0 for
 * a client without an IP address. */
static int bgd_client_addr(const request_rec *r, apr_byte_t addr[16])
{
    const apr_sockaddr_t *sa = r->useragent_addr;

    if (!sa) {
        return 0;
    }
    if (sa->family == AF_INET) {
        memcpy(addr, &sa->sa.sin.sin_addr, 4);
        return 4;
    }
#if APR_HAVE_IPV6
    if (sa->family == AF_INET6) {
        const struct in6_addr *a6 = &sa->sa.sin6.sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(addr, a6->s6_addr + 12, 4);
            return 4;
        }
        memcpy(addr, a6->s6_addr, 16);
        return 6;
    }
#endif
    return 0;
}

static int bgd_same_net(const apr_byte_t *a, const apr_byte_t *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;

    return !memcmp(a, b, whole)
           && (!rest || !((a[whole] ^ b[whole]) & (0xff << (8 - rest))));
}

/* Slots of the client whose address is given, at the prefix that the
 * server of the claiming request sets for its family. */
static int bgd_count_client(const bgd_srv_conf_t *sconf, int family,
                            const apr_byte_t *addr)
{
    int bits = family == 4 ? sconf->client_bits4 : sconf->client_bits6;
    apr_uint32_t i;
    int n = 0;

    if (bits == BGD_UNSET) {
        bits = family == 4 ? BGD_DEFAULT_CLIENT_BITS4
                           : BGD_DEFAULT_CLIENT_BITS6;
    }
    for (i = 0; i < bgd_table->nslots; i++) {
        bgd_slot_t *s = &bgd_table->slots[i];
        if (s->owner && s->addr_family == family
            && bgd_same_net(s->addr, addr, bits)) {
            n++;
        }
    }
    return n;
}

/* Claim a slot for the delivery of r; the slot table size is the
 * server-wide cap.  Returns the slot index, -1 when the server is full and
 * -2 when the client is at its cap (checked only if per_client). */
static int bgd_slot_claim(request_rec *r, bgd_job_t *job, int per_client)
{
    bgd_srv_conf_t *sconf = ap_get_module_config(r->server->module_config,
                                                 &bgdeliver_module);
    apr_uint32_t i, start;
    int pass;

    if (!bgd_table) {
        return -1;
    }
    start = (apr_uint32_t)(bgd_my_pid * 31) % bgd_table->nslots;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < bgd_table->nslots; i++) {
            apr_uint32_t k = (start + i) % bgd_table->nslots;
            bgd_slot_t *s = &bgd_table->slots[k];
            if (s->owner || apr_atomic_cas32(&s->owner,
                                             (apr_uint32_t)bgd_my_pid, 0)) {
                continue;
            }
            /* Odd whatever it was: an owner that died in the middle of a
             * write left it odd, and a plain increment would invert its
             * parity for good. */
            apr_atomic_set32(&s->seq, apr_atomic_read32(&s->seq) | 1);
            s->pid = bgd_my_pid;
            s->counted = 0;
            s->https = ap_ssl_conn_is_ssl(r->connection);
            s->mode = 0;
            s->started = r->request_time;
            s->updated = apr_time_now();
            s->sent = 0;
            s->total = -1;
            s->target_rate = (apr_off_t)(job->pacing.rate + 0.5);
            s->current_rate = 0;
            bgd_copy(s->client, sizeof(s->client), r->useragent_ip);
            s->addr_family = (apr_byte_t)bgd_client_addr(r, s->addr);
            bgd_copy(s->vhost, sizeof(s->vhost), r->server->server_hostname);
            bgd_copy(s->method, sizeof(s->method), r->method);
            bgd_copy(s->label, sizeof(s->label), job->pacing.label);
            bgd_copy(s->uri, sizeof(s->uri), r->unparsed_uri);
            bgd_slot_end_write(s);
            apr_atomic_inc32(&bgd_table->in_flight);
            /* Counting after claiming means two racing requests of one
             * client see each other: the cap may refuse both, never admit
             * both beyond it. */
            if (per_client && sconf->max_per_client > 0 && s->addr_family
                && bgd_count_client(sconf, s->addr_family, s->addr)
                   > sconf->max_per_client) {
                bgd_slot_begin_write(s);
                s->client[0] = '\0';
                s->addr_family = 0;
                bgd_slot_end_write(s);
                apr_atomic_set32(&s->owner, 0);
                apr_atomic_dec32(&bgd_table->in_flight);
                return -2;
            }
            return (int)k;
        }
        /* A full table is the overload case: each refused request must
         * stay cheap, and the reaper's kill() per slot in use is not. */
        if (!bgd_slots_reap_due()) {
            break;
        }
        bgd_slots_reap(0);
    }
    return -1;
}

static void bgd_slot_update(bgd_job_t *job, apr_time_t now)
{
    bgd_slot_t *s = bgd_slot(job->slot);
    if (!s) {
        return;
    }
    bgd_slot_begin_write(s);
    s->sent = job->sent;
    s->total = job->eos ? job->captured : -1;
    s->updated = now;
    if (now - job->rate_mark_time >= BGD_RATE_WINDOW) {
        s->current_rate = (apr_off_t)((double)(job->sent - job->rate_mark_sent)
                                      * APR_USEC_PER_SEC
                                      / (double)(now - job->rate_mark_time));
        job->rate_mark_time = now;
        job->rate_mark_sent = job->sent;
    }
    bgd_slot_end_write(s);
}

static void bgd_slot_release(bgd_job_t *job)
{
    bgd_slot_t *s = bgd_slot(job->slot);
    if (!s) {
        return;
    }
    job->slot = -1;
    bgd_slot_begin_write(s);
    s->client[0] = '\0';
    s->addr_family = 0;
    bgd_slot_end_write(s);
    apr_atomic_set32(&s->owner, 0);
    apr_atomic_dec32(&bgd_table->in_flight);
}

/* ------------------------------------------------------------ watchdog */

/* The watchdog is the only way to act on a connection that sits in the
 * MPM's pollset waiting for writability: it shuts the socket down, which
 * makes the MPM hand the connection back to us at once.  The engine's
 * mutex makes sure the descriptor is still ours: a connection leaves the
 * list (under the mutex) before its socket can ever be closed. */
static void bgd_wd_unlist_locked(bgd_conn_t *bc)
{
    bgd_engine_t *e = bc->engine;

    if (!bc->wd_listed) {
        return;
    }
    if (bc->wd_prev) {
        bc->wd_prev->wd_next = bc->wd_next;
    }
    else {
        e->wd_head = bc->wd_next;
    }
    if (bc->wd_next) {
        bc->wd_next->wd_prev = bc->wd_prev;
    }
    bc->wd_next = bc->wd_prev = NULL;
    bc->wd_listed = 0;
}

static void bgd_wd_list(bgd_conn_t *bc, apr_time_t deadline,
                        const char *reason)
{
    bgd_engine_t *e = bc->engine;

    if (!e || !deadline) {
        return;
    }
    apr_thread_mutex_lock(e->mutex);
    bc->wd_deadline = deadline;
    bc->wd_reason = reason;
    if (deadline < e->wd_due) {
        e->wd_due = deadline;
    }
    if (!bc->wd_listed) {
        bc->wd_next = e->wd_head;
        bc->wd_prev = NULL;
        if (e->wd_head) {
            e->wd_head->wd_prev = bc;
        }
        e->wd_head = bc;
        bc->wd_listed = 1;
    }
    apr_thread_mutex_unlock(e->mutex);
}

static void bgd_pace_place(bgd_engine_t *e, int i, bgd_pace_entry_t entry)
{
    e->heap[i] = entry;
    entry.bc->pace_index = i;
}

/* Restores the heap order around index i, whose entry has changed. */
static void bgd_pace_fix(bgd_engine_t *e, int i)
{
    bgd_pace_entry_t entry = e->heap[i];

    while (i > 0 && e->heap[(i - 1) / 2].due > entry.due) {
        bgd_pace_place(e, i, e->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        int child = 2 * i + 1;
        if (child >= e->pace_count) {
            break;
        }
        if (child + 1 < e->pace_count
            && e->heap[child + 1].due < e->heap[child].due) {
            child++;
        }
        if (e->heap[child].due >= entry.due) {
            break;
        }
        bgd_pace_place(e, i, e->heap[child]);
        i = child;
    }
    bgd_pace_place(e, i, entry);
}

/* A connection in the heap, the poller or both counts once in its
 * engine's load. */
static void bgd_engine_load_locked(bgd_conn_t *bc)
{
    int in = bc->pace_index >= 0 || bc->stream_on;

    if (in != bc->in_load) {
        bc->in_load = in;
        if (in) {
            apr_atomic_inc32(&bc->engine->load);
        }
        else {
            apr_atomic_dec32(&bc->engine->load);
        }
    }
}

static void bgd_pace_insert_locked(bgd_conn_t *bc, apr_time_t due)
{
    bgd_engine_t *e = bc->engine;
    bgd_pace_entry_t entry;

    entry.due = due;
    entry.bc = bc;
    bgd_pace_place(e, e->pace_count++, entry);
    bgd_pace_fix(e, bc->pace_index);
    bgd_engine_load_locked(bc);
}

static void bgd_pace_remove_locked(bgd_conn_t *bc)
{
    bgd_engine_t *e = bc->engine;
    int i = bc->pace_index;

    if (i < 0) {
        return;
    }
    bc->pace_index = -1;
    if (i != --e->pace_count) {
        bgd_pace_place(e, i, e->heap[e->pace_count]);
        bgd_pace_fix(e, i);
    }
    bgd_engine_load_locked(bc);
}

/* Puts the timed wait's duplicate of the socket in the engine thread's
 * poller for `events` (EPOLLONESHOT: one wake-up per wait). */
static int bgd_poll_arm_locked(bgd_conn_t *bc, apr_uint32_t events)
{
#if BGD_HAVE_TIMED_WAIT
    bgd_engine_t *e = bc->engine;
    struct epoll_event ev;

    if (e->epfd < 0 || bc->sock_dup < 0) {
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = events | EPOLLONESHOT;
    if (bc->stream_on) {
        ev.data.u64 = bc->stream_key;
        return epoll_ctl(e->epfd, EPOLL_CTL_MOD, bc->sock_dup, &ev) == 0;
    }
    bc->stream_key = ev.data.u64 = ++e->seq;
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, bc->sock_dup, &ev) != 0) {
        return 0;
    }
    apr_hash_set(e->streams, &bc->stream_key, sizeof(bc->stream_key), bc);
    bc->stream_on = 1;
    bgd_engine_load_locked(bc);
    return 1;
#else
    (void)bc;
    (void)events;
    return 0;
#endif
}

/* Makes the engine thread wait for the socket to take more, then write. */
static int bgd_stream_arm_locked(bgd_conn_t *bc)
{
    bc->watch_gone = 0;
    return bgd_poll_arm_locked(bc, BGD_POLL_WRITABLE);
}

/* Before the duplicate of the socket can be closed. */
static void bgd_stream_remove_locked(bgd_conn_t *bc)
{
#if BGD_HAVE_TIMED_WAIT
    bgd_engine_t *e = bc->engine;

    bc->watch_gone = 0;
    if (bc->stream_on) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, bc->sock_dup, NULL);
        apr_hash_set(e->streams, &bc->stream_key, sizeof(bc->stream_key),
                     NULL);
        bc->stream_on = 0;
        bgd_engine_load_locked(bc);
    }
#else
    (void)bc;
#endif
}

static void bgd_engine_wake_locked(bgd_engine_t *e)
{
#if BGD_HAVE_TIMED_WAIT
    apr_uint64_t one = 1;
    if (e->evfd >= 0 && write(e->evfd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the thread is awake anyway. */
    }
#else
    apr_thread_cond_signal(e->wake);
#endif
}

/* The engine a connection is parked with next: the one writing for the
 * fewest connections, so that fast clients spread over the threads.  The
 * loads are read unlocked; a stale one only makes the choice less even. */
static bgd_engine_t *bgd_engine_pick(void)
{
    bgd_engine_t *best = NULL;
    apr_uint32_t best_load = 0;
    int i;

    for (i = 0; i < bgd_engine_count; i++) {
        apr_uint32_t load = apr_atomic_read32(&bgd_engines[i].load);
        if (!best || load < best_load) {
            best = &bgd_engines[i];
            best_load = load;
        }
    }
    return best;
}

/* Takes the connection back from its engine thread: off the watchdog's
 * list, out of the pace heap and out of the poller, after the write the
 * thread may be doing for it (BGD_PACE_BUSY).  Once this returns, the
 * thread no longer touches the connection.  Returns the reason when the
 * watchdog ended the wait, else NULL. */
static const char *bgd_wd_unlist(bgd_conn_t *bc)
{
    bgd_engine_t *e = bc->engine;
    const char *reason;

    if (!e) {
        return NULL;
    }
    apr_thread_mutex_lock(e->mutex);
    bgd_wd_unlist_locked(bc);
    while (bc->pace_index == BGD_PACE_BUSY) {
        apr_thread_cond_wait(e->write_done, e->mutex);
    }
    bgd_pace_remove_locked(bc);
    bgd_stream_remove_locked(bc);
    reason = bc->job ? bc->job->kill_reason : NULL;
    apr_thread_mutex_unlock(e->mutex);
    return reason;
}

/* ---------------------------------------------------------- timed waits */

/*
 * The event MPM of 2.4 can wait for a socket (CONN_STATE_ASYNC_WAITIO) but
 * not for a time, and its timed callbacks stall on an idle server.  To wait
 * until `due` without a worker, the connection is parked in WAITIO for
 * readability while its descriptor number temporarily refers to a timerfd
 * that becomes readable at `due`; the socket itself is kept open through a
 * duplicate.  The listener removes the descriptor from its pollset before
 * it dispatches the connection, so the epoll registration always belongs to
 * the timerfd, and the timerfd is closed (unregistering it for good) the
 * moment the socket is put back by bgd_timed_wait_disarm().  Every path
 * that can see the connection next (our process_connection hook,
 * pre_close_connection, the connection pool's pre-cleanup) disarms first.
 */
/* On a hard stop the MPM's main thread closes the sockets of busy workers
 * while they run (2.4's close_worker_sockets()): the descriptor number may
 * be another thread's by then, and dup3() onto it would silently replace
 * that thread's file.  APR marks a closed socket -1. */
static int bgd_fd_still_ours(bgd_conn_t *bc)
{
    apr_socket_t *csd = ap_get_conn_socket(bc->c);
    apr_os_sock_t fd = -1;

    return csd && apr_os_sock_get(&fd, csd) == APR_SUCCESS && fd == bc->fd;
}

static apr_status_t bgd_timed_wait_arm(bgd_conn_t *bc, apr_time_t due)
{
#if BGD_HAVE_TIMED_WAIT
    struct itimerspec its;
    apr_interval_time_t delta = due - apr_time_now();
    int tfd;

    if (delta < 1) {
        delta = 1;
    }
    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = (time_t)apr_time_sec(delta);
    its.it_value.tv_nsec = (long)apr_time_usec(delta) * 1000L;

    if (bc->sock_dup < 0) {
        bc->sock_dup = fcntl(bc->fd, F_DUPFD_CLOEXEC, 0);
        if (bc->sock_dup < 0) {
            return errno;
        }
    }
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) {
        return errno;
    }
    if (!bgd_fd_still_ours(bc)) {
        close(tfd);
        return APR_EBADF;
    }
    if (timerfd_settime(tfd, 0, &its, NULL) < 0
        || dup3(tfd, bc->fd, O_CLOEXEC) < 0) {
        apr_status_t rv = errno;
        close(tfd);
        return rv;
    }
    close(tfd);
    bc->timer_armed = 1;
    return APR_SUCCESS;
#else
    (void)bc; (void)due;
    return APR_ENOTIMPL;
#endif
}

static void bgd_timed_wait_disarm(bgd_conn_t *bc)
{
    int rc;

    if (!bc->timer_armed) {
        return;
    }
    bc->timer_armed = 0;
    if (!bgd_fd_still_ours(bc)) {
        return;
    }
    do {
        rc = dup3(bc->sock_dup, bc->fd, O_CLOEXEC);
    } while (rc < 0 && (errno == EINTR || errno == EBUSY));
    if (rc < 0) {
        ap_log_cerror(APLOG_MARK, APLOG_CRIT, errno, bc->c,
                      "BGD019: cannot put the socket back on descriptor %d",
                      bc->fd);
    }
}

static void bgd_timed_wait_release(bgd_conn_t *bc)
{
    bgd_timed_wait_disarm(bc);
    if (bc->sock_dup >= 0) {
        close(bc->sock_dup);
        bc->sock_dup = -1;
    }
}

/* ---------------------------------------------------------- push bucket */

/* A zero-length metadata bucket that ends every pass of the engine to the
 * connection filters.  mod_ssl's coalescing filter keeps a lone small
 * write until more data comes (a paced pulse or a streamed piece would
 * wait for seconds), but passes everything on as soon as anything follows
 * it; the core output filter drops metadata it does not know.  Unlike a
 * FLUSH, it never makes the core write blocking. */
static apr_status_t bgd_push_read(apr_bucket *b, const char **str,
                                  apr_size_t *len, apr_read_type_e block)
{
    (void)b; (void)block;
    *str = NULL;
    *len = 0;
    return APR_SUCCESS;
}

static const apr_bucket_type_t bgd_bucket_type_push = {
    "BGDELIVER_PUSH", 5, APR_BUCKET_METADATA,
    apr_bucket_destroy_noop,
    bgd_push_read,
    apr_bucket_setaside_noop,
    apr_bucket_split_notimpl,
    apr_bucket_simple_copy
};

static void bgd_append_push(apr_bucket_brigade *bb)
{
    apr_bucket *b = apr_bucket_alloc(sizeof(*b), bb->bucket_alloc);
    APR_BUCKET_INIT(b);
    b->free = apr_bucket_free;
    b->list = bb->bucket_alloc;
    b->type = &bgd_bucket_type_push;
    b->length = 0;
    b->start = 0;
    b->data = NULL;
    APR_BRIGADE_INSERT_TAIL(bb, b);
}

/* ----------------------------------------------------------- capturing */

static apr_status_t bgd_close_file(void *data)
{
    apr_file_close(data);
    return APR_SUCCESS;
}

/* A handle that must live in c->pool outlives its request there (about
 * 150 bytes and its file name): a connection that has gathered
 * BGD_CONN_HANDLES_MAX of them ends after its next background response
 * (bgd_capture_begin()), so that one never closed (MaxKeepAliveRequests
 * 0, a proxy's pooled connection) does not grow without bound. */
#define BGD_CONN_HANDLES_MAX 100

static void bgd_count_pool_handle(conn_rec *c)
{
    bgd_conn_t *bc = ap_get_module_config(c->conn_config, &bgdeliver_module);

    if (bc) {
        bc->pool_handles++;
    }
}

static int bgd_pool_handles_full(conn_rec *c)
{
    bgd_conn_t *bc = ap_get_module_config(c->conn_config, &bgdeliver_module);

    return bc && bc->pool_handles >= BGD_CONN_HANDLES_MAX;
}

static apr_status_t bgd_spool_open(bgd_job_t *job)
{
    request_rec *r = job->r;
    bgd_srv_conf_t *sconf = ap_get_module_config(r->server->module_config,
                                                 &bgdeliver_module);
    const char *dir = sconf->spool_dir;
    apr_os_file_t fd = -1;
    apr_status_t rv;

    if (!dir && (rv = apr_temp_dir_get(&dir, r->pool)) != APR_SUCCESS) {
        return rv;
    }
    /* Close-on-exec from the start: apr_file_mktemp() sets it only after
     * mkstemp(), and a fork in another thread (mod_cgi, mod_ext_filter)
     * in between would keep the file alive in the child. */
#ifdef O_TMPFILE
    /* Nameless from birth: nothing to unlink, nothing left by a crash. */
    fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        return errno;
    }
#endif
    if (fd < 0) {
        char *tmpl = apr_pstrcat(r->pool, dir, "/bgdeliver.XXXXXX", NULL);

        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd < 0) {
            return errno;
        }
        /* Unlinked at once: nothing is left behind, even by a crash. */
        unlink(tmpl);
    }
    /* The handle lives in c->pool: the core moves a file handle of any
     * younger pool when it sets a pass aside, and all of the response's
     * buckets share this one.  Our own file: sendfile(2) may carry it
     * whatever EnableSendfile says for the document root. */
    rv = apr_os_file_put(&job->spool, &fd,
                         APR_FOPEN_READ | APR_FOPEN_WRITE
                         | APR_FOPEN_SENDFILE_ENABLED, job->c->pool);
    if (rv != APR_SUCCESS) {
        close(fd);
        return rv;
    }
    apr_pool_cleanup_register(r->pool, job->spool, bgd_close_file,
                              apr_pool_cleanup_null);
    bgd_count_pool_handle(job->c);
    return APR_SUCCESS;
}

/* Give back the part of the spool that has left (the queue no longer
 * refers to it, and the core holds nothing): all of it by starting the
 * file over, or what lies before the first spooled byte still queued by
 * punching it out.  A long stream to a client that keeps up would
 * otherwise take its whole length on disk, and fall back to the
 * foreground at BgDeliverSpoolLimit, which counts what is held. */
/* Whether b holds bytes of the response's spool. */
static int bgd_is_spool_bucket(const bgd_job_t *job, const apr_bucket *b)
{
    return APR_BUCKET_IS_FILE(b)
           && ((const apr_bucket_file *)b->data)->fd == job->spool;
}

#define BGD_SPOOL_PUNCH (1024 * 1024)
static void bgd_spool_release(bgd_job_t *job)
{
    apr_off_t needed = job->spool_size;
    apr_bucket *b;

    if (!job->spool_size || job->c->data_in_output_filters) {
        return;
    }
    for (b = APR_BRIGADE_FIRST(job->queue);
         b != APR_BRIGADE_SENTINEL(job->queue); b = APR_BUCKET_NEXT(b)) {
        if (bgd_is_spool_bucket(job, b)) {
            needed = b->start;
            break;
        }
    }
    if (needed == job->spool_size) {
        if (apr_file_trunc(job->spool, 0) == APR_SUCCESS) {
            job->spool_size = job->spool_freed = 0;
        }
        return;
    }
#if defined(__linux__) && defined(FALLOC_FL_PUNCH_HOLE)
    needed -= needed % BGD_SPOOL_PUNCH;
    if (needed > job->spool_freed) {
        apr_os_file_t fd;
        if (apr_os_file_get(&fd, job->spool) == APR_SUCCESS
            && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         job->spool_freed, needed - job->spool_freed) == 0) {
            job->spool_freed = needed;
        }
    }
#endif
}

/* The spooled bytes that have not left yet. */
static apr_off_t bgd_spool_held(const bgd_job_t *job)
{
    return job->spool_size - job->spool_freed;
}

/* What becomes of a response whose spool failed (see
 * bgd_capture_spool_failed()), for its log line. */
static const char *bgd_spool_failure_outcome(const bgd_job_t *job)
{
    return bgd_job_timed(job)
           ? "the handler waits for its line, holding no more than "
             "BgDeliverMemoryLimit"
           : "delivering the rest of the response in the foreground";
}

/* Move the captured memory buckets to the spool file, keeping order.
 * On failure the caller stops spooling (bgd_capture_spool_failed()). */
static apr_status_t bgd_spool_memory(bgd_job_t *job)
{
    request_rec *r = job->r;
    apr_bucket *b, *next;
    apr_status_t rv;

    if (!job->spool) {
        rv = bgd_spool_open(job);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                          "BGD010: cannot create a spool file (see "
                          "BgDeliverSpoolDir); %s",
                          bgd_spool_failure_outcome(job));
            return rv;
        }
    }
    bgd_spool_release(job);
    for (b = APR_BRIGADE_FIRST(job->queue);
         b != APR_BRIGADE_SENTINEL(job->queue); b = next) {
        const char *data;
        apr_size_t len;
        apr_bucket *fb;

        next = APR_BUCKET_NEXT(b);
        if (APR_BUCKET_IS_METADATA(b) || APR_BUCKET_IS_FILE(b)) {
            continue;
        }
        rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
        if (rv == APR_SUCCESS) {
            /* Reading a spool bucket (the core does, when captured data
             * is forwarded while the handler still runs) moves the file
             * position: every append must say where the end is. */
            apr_off_t end = job->spool_size;
            rv = apr_file_seek(job->spool, APR_SET, &end);
            if (rv == APR_SUCCESS) {
                rv = apr_file_write_full(job->spool, data, len, NULL);
            }
        }
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                          "BGD011: writing the spool file failed; %s",
                          bgd_spool_failure_outcome(job));
            return rv;
        }
        /* Extend the previous spool bucket when contiguous. */
        fb = APR_BUCKET_PREV(b);
        if (fb != APR_BRIGADE_SENTINEL(job->queue)
            && bgd_is_spool_bucket(job, fb)
            && fb->start + (apr_off_t)fb->length == job->spool_size) {
            fb->length += len;
        }
        else {
            fb = apr_bucket_file_create(job->spool, job->spool_size, len,
                                        r->pool, job->c->bucket_alloc);
            /* Read in small pieces when it is read at all (TLS): a
             * mapping would count the spool against the process. */
            apr_bucket_file_enable_mmap(fb, 0);
            APR_BUCKET_INSERT_BEFORE(b, fb);
        }
        job->spool_size += len;
        /* Per bucket: after a failed write, what is still in memory is
         * exactly what the count says. */
        job->mem_bytes -= (apr_off_t)len;
        apr_bucket_delete(b);
    }
    if (job->mem_bytes < 0) {
        job->mem_bytes = 0;
    }
    return APR_SUCCESS;
}

/*
 * Give a captured file bucket a handle of our own, allocated in c->pool.
 * When the core output filter cannot write everything, it sets the rest
 * aside in a pool of its own, a child of c->pool; a file bucket whose
 * file lives in r->pool is then *moved* there (apr_file_setaside() leaves
 * the old handle with descriptor -1), and closed when the core's buffer
 * empties, while further slices of the same file still wait in our queue.
 * A file in c->pool is never moved (the core's pool descends from it).
 * Ours is closed with r->pool, after the last byte was written.
 */
static apr_status_t bgd_adopt_file(bgd_job_t *job, apr_bucket *b)
{
    apr_bucket_file *a = b->data;
    apr_finfo_t finfo;
    apr_file_t *mine;
    bgd_file_ref_t *ref;
    apr_status_t rv;
    int i;

    if (a->fd == job->spool) {
        return APR_SUCCESS;
    }
    for (i = 0; i < job->files->nelts; i++) {
        ref = &APR_ARRAY_IDX(job->files, i, bgd_file_ref_t);
        if (ref->orig == a->fd || ref->fd == a->fd) {
            a->fd = ref->fd;
            return APR_SUCCESS;
        }
    }
    rv = apr_file_info_get(&finfo, APR_FINFO_SIZE | APR_FINFO_MTIME, a->fd);
    if (rv == APR_SUCCESS) {
        rv = apr_file_dup(&mine, a->fd, job->c->pool);
    }
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_cleanup_register(job->r->pool, mine, bgd_close_file,
                              apr_pool_cleanup_null);
    bgd_count_pool_handle(job->c);
    ref = apr_array_push(job->files);
    ref->orig = a->fd;
    ref->fd = mine;
    ref->size = finfo.size;
    ref->mtime = finfo.mtime;
    a->fd = mine;
    return APR_SUCCESS;
}

/* A file of the response must still be the file that was captured: same
 * size, not modified since.  `visit` (the pump visit's start, or 0) spares a
 * second fstat() of the same file in the same visit: the slices of one
 * visit leave within BGD_VISIT_TIME. */
static int bgd_file_ref_unchanged(bgd_file_ref_t *ref, apr_time_t visit)
{
    apr_finfo_t finfo;

    if (visit && ref->checked == visit) {
        return 1;
    }
    if (apr_file_info_get(&finfo, APR_FINFO_SIZE | APR_FINFO_MTIME, ref->fd)
            != APR_SUCCESS
        || finfo.size != ref->size || finfo.mtime != ref->mtime) {
        return 0;
    }
    ref->checked = visit;
    return 1;
}

/* The files the next slice reads from. */
static int bgd_files_unchanged(bgd_job_t *job, apr_bucket_brigade *bb,
                               apr_time_t visit)
{
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        apr_file_t *fd;
        int i;

        if (!APR_BUCKET_IS_FILE(b)) {
            continue;
        }
        fd = ((apr_bucket_file *)b->data)->fd;
        for (i = 0; i < job->files->nelts; i++) {
            bgd_file_ref_t *ref = &APR_ARRAY_IDX(job->files, i,
                                                 bgd_file_ref_t);
            if (ref->fd == fd && !bgd_file_ref_unchanged(ref, visit)) {
                return 0;
            }
        }
    }
    return 1;
}

/* The same for every file of the response: used before the core is made to
 * write what it keeps (a sendfile remainder is a file reference). */
static int bgd_all_files_unchanged(bgd_job_t *job, apr_time_t visit)
{
    int i;
    for (i = 0; i < job->files->nelts; i++) {
        if (!bgd_file_ref_unchanged(&APR_ARRAY_IDX(job->files, i,
                                                   bgd_file_ref_t), visit)) {
            return 0;
        }
    }
    return 1;
}

/* Counts a response's fallback, once (a handler that calls the API after
 * the engine declined its response comes here a second time): 1 the
 * first time, 0 then. */
static int bgd_fallback_counted(bgd_job_t *job)
{
    if (job->fell_back) {
        return 0;
    }
    job->fell_back = 1;
    bgd_count(&bgd_table->fallbacks, 1);
    return 1;
}

/* r goes out the ordinary way where BgDeliver is on: its files are read,
 * not mapped (see bgd_unmapped_filter()). */
static void bgd_foreground_unmapped(request_rec *r)
{
    ap_add_output_filter_handle(bgd_unmapped_filter_handle, NULL, r,
                                r->connection);
}

/* r goes out the ordinary way although BgDeliver would take it: counted
 * as a fallback, and its files read rather than mapped.  Returns 1 the
 * first time, as bgd_fallback_counted(). */
static int bgd_fallback(request_rec *r, bgd_job_t *job)
{
    if (!bgd_fallback_counted(job)) {
        return 0;
    }
    bgd_foreground_unmapped(r);
    return 1;
}

/* mod_ratelimit's RATE_LIMIT filter sleeps between its chunks, by design,
 * in whatever thread passes it data: a response that goes through it
 * cannot leave without holding a thread, and each of our slices would hold
 * a worker for seconds.  Such a response goes the ordinary way (mod_dialup
 * paces without a worker). */
static int bgd_chain_sleeps(request_rec *r)
{
    const ap_filter_t *f;

    /* Without its variable the filter takes itself out at once. */
    if (!apr_table_get(r->subprocess_env, "rate-limit")) {
        return 0;
    }
    for (f = r->output_filters; f; f = f->next) {
        if (!strcasecmp(f->frec->name, "RATE_LIMIT")) {
            return 1;
        }
    }
    return 0;
}

static void bgd_fallback_chain_sleeps(request_rec *r, bgd_job_t *job)
{
    if (bgd_fallback(r, job)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "BGD031: mod_ratelimit's RATE_LIMIT filter paces "
                      "this response in the worker; delivering in the "
                      "foreground");
    }
}

/* Whether bytes just read from fd up to `end` are the file's.  A read
 * that races a truncation can return the zeros that the kernel writes over
 * the tail of the new last page (Linux sets the new size first, then
 * zeroes that tail and drops the pages after it): the read is full, only
 * the size, looked at after it, tells.  The same zeros that a mapping
 * reads past a new end (bgd_unmapped_filter()), in a narrower window. */
static int bgd_read_still_valid(apr_os_file_t fd, apr_off_t end)
{
    struct stat st;

    return fstat(fd, &st) == 0 && (apr_off_t)st.st_size >= end;
}

/* A run of bucket reads whose files are checked (bgd_read_still_valid())
 * once each, after their last read, rather than once per 8 KB read: the
 * reads of one file come one after another. */
typedef struct {
    apr_os_file_t fd;                   /* the file read last, or -1 */
    apr_off_t end;                      /* up to here */
} bgd_reads_t;

#define BGD_READS_INIT { -1, 0 }

/* The check of the file read last; APR_EOF when it no longer covers what
 * was read of it. */
static apr_status_t bgd_reads_done(bgd_reads_t *reads)
{
    apr_os_file_t fd = reads->fd;

    reads->fd = -1;
    return fd >= 0 && !bgd_read_still_valid(fd, reads->end) ? APR_EOF
                                                            : APR_SUCCESS;
}

/* Reads b (apr_bucket_read(), blocking), checking first the file read
 * before it when b is another file or memory. */
static apr_status_t bgd_reads_read(bgd_reads_t *reads, apr_bucket *b,
                                   const char **data, apr_size_t *len)
{
    apr_os_file_t fd = -1;
    apr_off_t from = b->start;
    apr_status_t rv;

    if (APR_BUCKET_IS_FILE(b)
        && apr_os_file_get(&fd, ((apr_bucket_file *)b->data)->fd)
           != APR_SUCCESS) {
        return APR_EBADF;
    }
    if (fd != reads->fd && (rv = bgd_reads_done(reads)) != APR_SUCCESS) {
        return rv;
    }
    rv = apr_bucket_read(b, data, len, APR_BLOCK_READ);
    if (rv == APR_SUCCESS && fd >= 0) {
        reads->fd = fd;
        reads->end = from + (apr_off_t)*len;
    }
    return rv;
}

/* mod_http2 takes the handle of a file bucket that it sets aside (into
 * its beam), leaving ours with no descriptor, and one handle serves all of
 * a response's buckets (the spool's): an HTTP/2 stream's bytes go down as
 * memory.  Reading a file bucket turns it into a heap bucket followed by
 * the rest of the file, which the loop reads next. */
static apr_status_t bgd_read_files_in(apr_bucket_brigade *bb)
{
    bgd_reads_t reads = BGD_READS_INIT;
    apr_bucket *e;

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (APR_BUCKET_IS_FILE(e)) {
            const char *data;
            apr_size_t n;
            apr_status_t rv = bgd_reads_read(&reads, e, &data, &n);

            if (rv != APR_SUCCESS) {
                return rv;
            }
        }
    }
    return bgd_reads_done(&reads);
}

/* bgd_pass_foreground() for an HTTP/2 stream: files as memory, a slice at
 * a time (the rest of a spool can be large). */
static apr_status_t bgd_pass_as_memory(bgd_job_t *job,
                                       apr_bucket_brigade *bb)
{
    apr_bucket_brigade *rest = apr_brigade_create(job->r->pool,
                                                  job->c->bucket_alloc);
    apr_status_t rv = APR_SUCCESS;

    while (!APR_BRIGADE_EMPTY(bb) && rv == APR_SUCCESS) {
        apr_bucket *e;
        if (apr_brigade_partition(bb, BGD_SLICE_MEM_MAX, &e) != APR_SUCCESS) {
            e = APR_BRIGADE_SENTINEL(bb);
        }
        /* bb keeps the head, rest takes the rest. */
        apr_brigade_split_ex(bb, e, rest);
        rv = bgd_read_files_in(bb);
        if (rv == APR_SUCCESS) {
            rv = ap_pass_brigade(job->capture->next, bb);
        }
        apr_brigade_cleanup(bb);
        APR_BRIGADE_CONCAT(bb, rest);
    }
    return rv;
}

/* Pass `bb` on to the connection filters, now, in the worker, the way the
 * response would have gone without us (blocking if the client is slow). */
static apr_status_t bgd_pass_foreground(bgd_job_t *job,
                                        apr_bucket_brigade *bb)
{
    apr_off_t len = 0;
    apr_brigade_length(bb, 0, &len);
    if (len > 0) {
        job->sent += len;
    }
    if (job->c->master) {
        return bgd_pass_as_memory(job, bb);
    }
    return ap_pass_brigade(job->capture->next, bb);
}

/* Waits on this thread until the core has written what it holds of the
 * response: a blocking flush, bounded by the core's Timeout. */
static apr_status_t bgd_flush_blocking(bgd_job_t *job)
{
    apr_status_t rv;

    APR_BRIGADE_INSERT_TAIL(job->slice,
                            apr_bucket_flush_create(job->c->bucket_alloc));
    rv = ap_pass_brigade(job->capture->next, job->slice);
    apr_brigade_cleanup(job->slice);
    return rv;
}

/* Stops capturing: what was captured, and the rest of the response as
 * the handler produces it, go to the client the ordinary way. */
static apr_status_t bgd_capture_give_up(bgd_job_t *job)
{
    job->capturing = 0;
    job->foreground = 1;
    return bgd_pass_foreground(job, job->queue);
}

/* The last of the connection's output filters: the core's own wherever
 * the engine writes (bgd_engine_can_take()). */
static ap_filter_t *bgd_core_filter(conn_rec *c)
{
    ap_filter_t *core = c->output_filters;

    while (core->next) {
        core = core->next;
    }
    return core;
}

static apr_status_t bgd_kick_core(conn_rec *c)
{
    ap_filter_t *core = bgd_core_filter(c);

    /* A NULL brigade makes the core output filter write what it holds,
     * without blocking, exactly as the MPM's write completion does (an
     * empty brigade would be swallowed by mod_ssl on its way down). */
    return core->frec->filter_func.out_func(core, NULL);
}

/* How many more payload bytes the send buffer of socket fd takes now, or
 * -1 when that is unknown.  The kernel counts the buffer in memory,
 * segments with their overhead (SO_MEMINFO), against SO_SNDBUF; SIOCOUTQ
 * tells how much of that is payload. */
static apr_off_t bgd_socket_room(int fd, int *low)
{
#if defined(SO_MEMINFO) && defined(SIOCOUTQ)
    apr_uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);
    apr_off_t sndbuf, queued, room;
    int payload = 0;

    *low = 0;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0
        || len < sizeof(mem) || ioctl(fd, SIOCOUTQ, &payload) != 0) {
        return -1;
    }
    sndbuf = mem[SK_MEMINFO_SNDBUF];
    queued = mem[SK_MEMINFO_WMEM_QUEUED];
    /* TCP reports a socket writable once a third of its buffer is free:
     * with less than a sixteenth free, a wait for writability cannot
     * return at once, and the wait lets the client drain the most. */
    *low = 16 * (sndbuf - queued) < sndbuf;
    if (queued >= sndbuf) {
        return 0;
    }
    room = sndbuf - queued;
    /* Payload per byte of buffer as the queued segments show it; an empty
     * queue is taken at the kernel's own guess of one half. */
    return payload > 0 && queued > payload ? room * payload / queued
                                           : room / 2;
#else
    (void)fd;
    *low = 0;
    return -1;
#endif
}

/* A slow reader's pass that must go through memory (a file without
 * sendfile, anything under TLS) is read here into a block of a child-wide
 * allocator instead of by the core into one of the connection's: the
 * socket takes the whole pass (see bgd_slice_size()), the block goes back
 * at once, and the next pass of any connection reuses it.  Read by the
 * core, every waiting delivery would keep an idle block of 8 KiB in its
 * connection's allocator.  A direct write borrows a larger block for the
 * same reason (bgd_direct_write()). */
static apr_allocator_t *bgd_blocks;

static void bgd_block_free(void *data)
{
    apr_allocator_free(bgd_blocks, (apr_memnode_t *)((char *)data
                                                     - APR_MEMNODE_T_SIZE));
}

/* Reads the first `len` bytes of file bucket b into buf with pread(2),
 * which leaves the handle's offset to others (one handle serves all of a
 * response's ranges); APR_EOF when the file has become shorter than that
 * (bgd_read_still_valid()). */
static apr_status_t bgd_read_range(const apr_bucket *b, char *buf,
                                   apr_size_t len)
{
    apr_os_file_t fd;
    apr_size_t done = 0;

    if (apr_os_file_get(&fd, ((apr_bucket_file *)b->data)->fd)
        != APR_SUCCESS) {
        return APR_EBADF;
    }
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done,
                          (off_t)(b->start + (apr_off_t)done));
        if (n == 0) {
            return APR_EOF;
        }
        if (n < 0 && errno != EINTR) {
            return errno;
        }
        if (n > 0) {
            done += (apr_size_t)n;
        }
    }
    return bgd_read_still_valid(fd, b->start + (apr_off_t)len) ? APR_SUCCESS
                                                                : APR_EOF;
}

/* Replaces a run of data buckets, first to last (len bytes), by one
 * block: file ranges read from the engine's own handles, memory copied. */
static apr_status_t bgd_read_run(apr_bucket *first, apr_bucket *last,
                                 apr_size_t len)
{
    apr_bucket *b, *next, *h;
    apr_memnode_t *node;
    apr_size_t done = 0;
    apr_status_t rv = APR_SUCCESS;

    if (!(node = apr_allocator_alloc(bgd_blocks, len))) {
        return APR_ENOMEM;
    }
    for (b = first; rv == APR_SUCCESS; b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_FILE(b)) {
            rv = bgd_read_range(b, node->first_avail + done, b->length);
        }
        else if (b->length) {
            const char *data;
            apr_size_t n;

            rv = apr_bucket_read(b, &data, &n, APR_BLOCK_READ);
            if (rv == APR_SUCCESS && n != b->length) {
                rv = APR_EGENERAL;
            }
            if (rv == APR_SUCCESS) {
                memcpy(node->first_avail + done, data, n);
            }
        }
        done += b->length;
        if (b == last) {
            break;
        }
    }
    if (rv != APR_SUCCESS) {
        apr_allocator_free(bgd_blocks, node);
        return rv;
    }
    h = apr_bucket_heap_create(node->first_avail, len, bgd_block_free,
                               first->list);
    APR_BUCKET_INSERT_BEFORE(first, h);
    for (b = first; ; b = next) {
        next = APR_BUCKET_NEXT(b);
        apr_bucket_delete(b);
        if (b == last) {
            break;
        }
    }
    return APR_SUCCESS;
}

/* The buckets that bgd_read_pass() reads into a block. */
#define BGD_RUN_BUCKET(b) (APR_BUCKET_IS_FILE(b) || APR_BUCKET_IS_HEAP(b) \
                           || APR_BUCKET_IS_TRANSIENT(b)                  \
                           || APR_BUCKET_IS_POOL(b)                       \
                           || APR_BUCKET_IS_IMMORTAL(b))

/* Replaces the data of a pass by blocks of the child-wide allocator, one
 * per run of file and memory buckets that holds a file range or more than
 * one bucket; APR_EOF when a file has become shorter than its bucket.
 * One bucket is one write below us, and under TLS one record: the
 * response's headers in front of the first bytes, or the end of one
 * captured buffer inside a pass, would otherwise make a record under
 * 4 KiB, which the core does not write but sets aside (in a pool it then
 * keeps, with a block of the connection's allocator), and mod_ssl would
 * coalesce small buckets in a buffer of 8 KiB that the connection keeps. */
static apr_status_t bgd_read_pass(apr_bucket_brigade *bb)
{
    apr_bucket *b = APR_BRIGADE_FIRST(bb);

    while (b != APR_BRIGADE_SENTINEL(bb)) {
        apr_bucket *first = b, *last = b, *after;
        apr_size_t len = 0;
        int buckets = 0, files = 0;

        if (!BGD_RUN_BUCKET(b)) {
            b = APR_BUCKET_NEXT(b);
            continue;
        }
        for (; b != APR_BRIGADE_SENTINEL(bb) && BGD_RUN_BUCKET(b);
             b = APR_BUCKET_NEXT(b)) {
            last = b;
            len += b->length;
            buckets++;
            files |= APR_BUCKET_IS_FILE(b);
        }
        after = b;
        if ((files || buckets > 1) && len > 0) {
            apr_status_t rv = bgd_read_run(first, last, len);
            if (rv != APR_SUCCESS) {
                return rv;
            }
        }
        b = after;
    }
    return APR_SUCCESS;
}

/* A file bucket that sendfile may carry: EnableSendfile for its file. */
static int bgd_bucket_sendfile(const apr_bucket *b)
{
    return APR_BUCKET_IS_FILE(b)
           && (apr_file_flags_get(((apr_bucket_file *)b->data)->fd)
               & APR_SENDFILE_ENABLED);
}

/* How the file ranges of a pass go to the socket (bgd_take_pass()). */
typedef enum {
    BGD_PASS_FILES,     /* as they are: sendfile, or our direct write,
                         * which reads them itself (bgd_direct_write()) */
    BGD_PASS_READ,      /* read now into a block (bgd_read_pass()) */
    BGD_PASS_CHECKED    /* read below us (the core, mod_ssl), each read
                         * checked (bgd_check_file_reads()) */
} bgd_pass_e;

/* How much of the queue one pass may take; 0 to wait for the socket.
 * *how tells what becomes of its file ranges; `direct` that
 * bgd_direct_send() will write it.  A file range that sendfile carries
 * can be big: what the socket does not take of it, the core keeps as a
 * reference to the file.  Anything else is copied first (the file read,
 * or encrypted by mod_ssl), and what the socket does not take would wait
 * in memory with the connection: a slow reader's pass is at most one block
 * (bgd_read_pass()) and no more than its socket has room for, so that a
 * waiting delivery normally holds no buffer.  A socket with BGD_ROOM_FAST
 * of room (bgd_socket_room()) is a fast client's: its pass is what the
 * socket takes, up to BGD_SENDFILE_SLICE of a file that we write
 * ourselves, few syscalls per megabyte as with stock Apache's blocking
 * writes, or BGD_SLICE_MEM_MAX of anything read below us. */
static apr_off_t bgd_slice_size(const bgd_job_t *job, int fd, int direct,
                                bgd_pass_e *how)
{
    apr_bucket *b = APR_BRIGADE_FIRST(job->queue);
    int plain_file = !job->tls && b != APR_BRIGADE_SENTINEL(job->queue)
                     && APR_BUCKET_IS_FILE(b);
    apr_off_t room;
    int low;

    *how = BGD_PASS_FILES;
    if (plain_file && bgd_bucket_sendfile(b)) {
        return b->length < BGD_SENDFILE_SLICE ? (apr_off_t)b->length
                                              : BGD_SENDFILE_SLICE;
    }
    /* A pass not read into a block: our direct write reads its files
     * itself; anything else reads them below us. */
    *how = direct ? BGD_PASS_FILES : BGD_PASS_CHECKED;
    room = bgd_socket_room(fd, &low);
    if (room < BGD_ROOM_FAST) {
        /* A delivery paced in the worker waits in the core's blocking
         * write, which needs something the socket cannot take at once. */
        if (job->in_worker || job->line_wait) {
            return BGD_SLICE_BYTES;
        }
        if (bgd_blocks) {
            *how = BGD_PASS_READ;
        }
        /* Nearly full: the MPM's wait for writability lets the client
         * drain a third of the buffer before the next pass. */
        if (low) {
            return 0;
        }
        if (room < 0 || room >= BGD_SLICE_BYTES) {
            return BGD_SLICE_BYTES;
        }
        return room > BGD_SLICE_MIN ? room : BGD_SLICE_MIN;
    }
    if (plain_file && direct) {
        return room < BGD_SENDFILE_SLICE ? room : BGD_SENDFILE_SLICE;
    }
    /* Read below us, a file's bytes count as memory against the core's
     * FlushMaxThreshold, as mod_ssl's output does. */
    return BGD_SLICE_MEM_MAX;
}

static void bgd_check_file_reads(apr_bucket *b, conn_rec *c);

/* The data bytes of bb, and how many of them are in memory buckets (what
 * the capture counts against BgDeliverMemoryLimit). */
static void bgd_brigade_bytes(apr_bucket_brigade *bb, apr_off_t *len,
                              apr_off_t *mem)
{
    apr_bucket *e;

    *len = *mem = 0;
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (!APR_BUCKET_IS_METADATA(e)) {
            *len += (apr_off_t)e->length;
            if (!APR_BUCKET_IS_FILE(e)) {
                *mem += (apr_off_t)e->length;
            }
        }
    }
}

/* Moves the first `want` bytes of the queue to job->slice, ready to go:
 * the files they come from checked (`visit` as for bgd_files_unchanged())
 * and their ranges made ready as `how` says.  *len is the pass's
 * length, *mem the part of it that was in memory buckets.  On failure the
 * bytes are back at the head of the queue; APR_EOF means a file changed. */
static apr_status_t bgd_take_pass(bgd_job_t *job, apr_off_t want,
                                  bgd_pass_e how, apr_time_t visit,
                                  apr_off_t *len, apr_off_t *mem)
{
    apr_bucket *e;
    apr_status_t rv;

    rv = apr_brigade_partition(job->queue, want, &e);
    if (rv != APR_SUCCESS && rv != APR_INCOMPLETE) {
        return rv;
    }
    apr_brigade_split_ex(job->queue, e, job->slice);
    /* job->slice now holds the rest: swap so that the head goes out. */
    {
        apr_bucket_brigade *head = job->queue;
        job->queue = job->slice;
        job->slice = head;
    }
    bgd_brigade_bytes(job->slice, len, mem);
    rv = !bgd_files_unchanged(job, job->slice, visit) ? APR_EOF
         : how == BGD_PASS_READ ? bgd_read_pass(job->slice)
         : job->c->master ? bgd_read_files_in(job->slice) : APR_SUCCESS;
    if (rv != APR_SUCCESS) {
        if (rv == APR_EOF) {
            job->file_short = 1;
        }
        APR_BRIGADE_PREPEND(job->queue, job->slice);
    }
    else {
        /* What the capture counts against BgDeliverMemoryLimit leaves
         * here, whoever sends it (the handler's thread, the pump, the
         * engine thread): a producer's output after the hand-off would
         * otherwise be spooled ever more, and end at BGD013. */
        job->mem_bytes -= *mem;
        if (job->mem_bytes < 0) {
            job->mem_bytes = 0;
        }
        if (how == BGD_PASS_CHECKED) {
            /* mod_ssl reads the files of a fast client's pass itself, and
             * takes a short read for the end: a file truncated since the
             * check above would end the body short with the connection
             * kept alive.  The core's reads (a pass that we do not write
             * ourselves) would send the zeros of a racing truncation.
             * What sendfile carries cannot be checked. */
            for (e = APR_BRIGADE_FIRST(job->slice);
                 e != APR_BRIGADE_SENTINEL(job->slice);
                 e = APR_BUCKET_NEXT(e)) {
                if (APR_BUCKET_IS_FILE(e)
                    && (job->tls || !bgd_bucket_sendfile(e))) {
                    bgd_check_file_reads(e, job->c);
                }
            }
        }
    }
    return rv;
}

static apr_off_t bgd_pacing_allowance(bgd_job_t *job, apr_time_t now);
static void bgd_pace_after_dry(bgd_job_t *job, apr_time_t now);
static void bgd_drop(bgd_job_t *job, const char *reason);
static void bgd_reset_on_close(bgd_job_t *job);
static int bgd_engine_can_take(const bgd_job_t *job);
static apr_off_t bgd_pass_size(const bgd_job_t *job, int fd, int direct,
                               apr_off_t allowed, bgd_pass_e *how);
static apr_status_t bgd_direct_send(bgd_job_t *job, int fd, apr_size_t *sent);

/* Captured bytes not yet sent from which the capture offers them to the
 * client while the handler still writes, flush or not: the core writes
 * from 4 KB on (THRESHOLD_MIN_WRITE), so that the output of a handler
 * that never flushes reaches the client as it is made, not only at its
 * end.  Once the response spools, only to a client that has taken all
 * it was given: offering a slow reader the spool at every write of the
 * handler would cost a read of the spool for the few KB it took
 * meanwhile. */
#define BGD_CAPTURE_FORWARD_MIN 4096

/* While the handler still runs, hand what is captured to the network if
 * that cannot block: the client sees streamed content at once and the
 * spool stays small.  A paced delivery sends what its schedule allows by
 * now (nothing before its latency has passed), so that a stream that
 * lasts (progress output, server-sent events) is paced from its start,
 * not held back until the handler ends. */
static void bgd_forward_opportunistic(bgd_job_t *job)
{
    conn_rec *c = job->c;
    apr_off_t want, len, mem, allowed = APR_INT64_MAX;
    bgd_pass_e how;
    int fd, direct;

    /* What the core set aside of an earlier pass goes first, even when
     * nothing else is queued: the spool can start over only once the core
     * no longer holds any of it (bgd_spool_release()). */
    if (c->data_in_output_filters
        && (bgd_kick_core(c) != APR_SUCCESS || c->data_in_output_filters)) {
        return;
    }
    if (APR_BRIGADE_EMPTY(job->queue)) {
        return;
    }
    if (bgd_job_timed(job)) {
        /* A paced stream goes out as the emulated line carries it, from
         * its first byte's due time on: the schedule is the one the
         * hand-off continues (see bgd_capture_end). */
        job->pace_start = bgd_pace_origin(job);
        allowed = bgd_pacing_allowance(job, apr_time_now());
        if (allowed <= 0) {
            return;
        }
    }
    /* Written as the pump writes it (see bgd_pump()): a pass the socket
     * cannot take whole, or one under the core's FlushMinThreshold, would
     * otherwise be set aside by the core in a pool of its own that the
     * connection keeps (8 KB for the length of the delivery).  Not while
     * the handler waits for its line: that wait is the core's blocking
     * write of what the socket did not take (bgd_capture_wait_line()). */
    fd = bgd_conn_fd(c);
    direct = fd >= 0 && !job->line_wait
             && bgd_engine_can_take(job) == BGD_ENGINE_DIRECT;
    want = bgd_pass_size(job, fd, direct, allowed, &how);
    /* On a failure the pump, which sees it next, aborts and logs it. */
    if (want == 0
        || bgd_take_pass(job, want, how, 0, &len, &mem)
           != APR_SUCCESS) {
        return;
    }
    if (direct) {
        apr_size_t sent;
        apr_status_t rv = bgd_direct_send(job, fd, &sent);

        job->sent += (apr_off_t)sent;
        if (rv != APR_SUCCESS && rv != APR_EAGAIN && rv != APR_EOF) {
            c->aborted = 1;
        }
        return;
    }
    job->sent += len;
    bgd_append_push(job->slice);
    ap_pass_brigade(job->capture->next, job->slice);
    apr_brigade_cleanup(job->slice);
    /* The core keeps writes under 4 KB for later; streamed pieces must
     * leave now. */
    if (c->data_in_output_filters) {
        bgd_kick_core(c);
    }
}

/* BgDeliverMaxTime bounds a response from its request on: also while its
 * handler still streams it, and after it fell back to the foreground (an
 * endless stream would hold its worker for good).  Only once bytes have
 * left: a response that is late because its handler was slow is not cut
 * before its first byte (the hand-off applies the rule as to any).  Data
 * only: the EOS of a response whose last byte left in time still ends
 * it. */
static int bgd_max_time_over(const bgd_job_t *job, apr_bucket_brigade *bb)
{
    apr_time_t end = bgd_max_time_end(job);
    apr_bucket *b;

    if (!end || job->sent <= 0 || apr_time_now() < end) {
        return 0;
    }
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        if (!APR_BUCKET_IS_METADATA(b) && b->length != 0) {
            return 1;
        }
    }
    return 0;
}

/* Ends a response whose handler is still at work once it broke a
 * slow-read rule: the client sees the connection reset, the handler gets
 * an error from its next write, and bgd_capture_end() logs and counts the
 * drop. */
static apr_status_t bgd_capture_drop(bgd_job_t *job, const char *reason)
{
    if (!job->outcome) {
        bgd_drop(job, reason);
        bgd_reset_on_close(job);
    }
    job->c->aborted = 1;
    job->c->keepalive = AP_CONN_CLOSE;
    return APR_ECONNABORTED;
}

/* How often the capture looks: a clock read per call, a socket query at
 * most this often. */
#define BGD_CAPTURE_RULES_EVERY apr_time_from_msec(100)

/* The idle rule while the handler of an unpaced response still writes
 * it: without it a client that reads nothing would keep the handler (and
 * its CGI, its backend) at work and the spool growing up to
 * BgDeliverSpoolLimit, where stock Apache's blocked write gives up after
 * Timeout.  The client makes progress when it takes bytes from the
 * socket, or when the socket holds nothing for it (it waits for the
 * handler, not the other way round).  The minimum rate waits for the
 * hand-off: a handler slower than it is not the client's doing.  A paced
 * response is not judged here: its line holds bytes back on purpose, and
 * its handler waits for the line (bgd_capture_wait_line()) under the
 * core's Timeout. */
static apr_status_t bgd_capture_rules(bgd_job_t *job)
{
    apr_time_t now, deadline;
    apr_off_t acked, queued;
    const char *reason;

    if (bgd_job_timed(job) || !job->capture_watched) {
        return APR_SUCCESS;
    }
    now = apr_time_now();
    if (now - job->rules_checked < BGD_CAPTURE_RULES_EVERY) {
        return APR_SUCCESS;
    }
    job->rules_checked = now;
    /* Only what was offered can be judged: a client that has taken all it
     * was given waits for the handler.  (A handler that flushes, or whose
     * backend keeps it waiting, has its output offered meanwhile; one that
     * does neither ends before long, and the rules go on from the
     * hand-off.) */
    queued = bgd_job_socket_queued(job);
    acked = bgd_job_acked_at(job, queued);
    if (queued <= 0 || acked > job->progress_acked) {
        job->progress_acked = acked;
        job->last_progress = now;
    }
    deadline = bgd_idle_deadline(job, &reason);
    if (!deadline || now < deadline) {
        return APR_SUCCESS;
    }
    return bgd_capture_drop(job, reason);
}

/* What a paced response's capture may hold: BgDeliverSpoolLimit with
 * the spool, only BgDeliverMemoryLimit once the spool failed. */
static int bgd_capture_over_line(const bgd_job_t *job)
{
    if (job->spool_failed) {
        return job->mem_bytes > job->conf->mem_limit;
    }
    return bgd_spool_held(job) + job->mem_bytes > job->conf->spool_max;
}

/* A paced response's handler outruns its line by design, so a generated
 * body bigger than BgDeliverSpoolLimit reaches it, and any body beyond
 * BgDeliverMemoryLimit does once the spool failed.  Giving up the capture
 * there would send the rest at full speed; instead the handler waits, on
 * its worker, until the line has carried enough of what is held (as a
 * handler behind mod_ratelimit waits for every write).  The line's rate
 * bounds the wait, the core's Timeout a client that stops reading, and
 * BgDeliverMaxTime the whole response. */
static apr_status_t bgd_capture_wait_line(bgd_job_t *job)
{
    conn_rec *c = job->c;
    apr_status_t rv = APR_SUCCESS;

    job->line_wait = 1;
    while (bgd_capture_over_line(job)) {
        apr_off_t before = job->sent;
        apr_time_t now;

        if (c->aborted) {
            rv = APR_ECONNABORTED;
            break;
        }
        if (bgd_max_time_over(job, job->queue)) {
            rv = bgd_capture_drop(job, "max-time");
            break;
        }
        if (bgd_draining()) {
            job->drain = 1;
        }
        bgd_forward_opportunistic(job);
        bgd_spool_release(job);
        if (job->sent > before) {
            continue;
        }
        if (c->data_in_output_filters) {
            /* The client reads slower than the line. */
            rv = bgd_flush_blocking(job);
            if (rv != APR_SUCCESS) {
                break;
            }
            continue;
        }
        now = apr_time_now();
        if (job->next_tick <= now) {
            /* Neither the line nor the socket held the pass back: it
             * failed (reading what is held), and the handler gets the
             * error. */
            rv = APR_EGENERAL;
            break;
        }
        apr_sleep(job->next_tick - now);
    }
    job->line_wait = 0;
    return rv;
}

/* The spool failed (BGD010, BGD011).  An unpaced response goes on in the
 * foreground: memory is what the spool protects.  A paced one keeps its
 * line, which the foreground would not: its handler waits for it from
 * here on, with no more than BgDeliverMemoryLimit held. */
static apr_status_t bgd_capture_spool_failed(bgd_job_t *job)
{
    if (!bgd_job_timed(job)) {
        return bgd_capture_give_up(job);
    }
    job->spool_failed = 1;
    return bgd_capture_wait_line(job);
}

static apr_status_t bgd_capture_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    bgd_job_t *job = f->ctx;
    request_rec *r = f->r;
    apr_status_t rv = APR_SUCCESS;

    if ((job->capturing || job->foreground) && bgd_max_time_over(job, bb)) {
        apr_brigade_cleanup(bb);
        return bgd_capture_drop(job, "max-time");
    }
    if (!job->capturing) {
        return ap_pass_brigade(f->next, bb);
    }

    /* A handler may set rate-limit itself, after bgd_capture_begin()
     * looked: its data must not reach the sleeping filter on our slices. */
    if (bgd_chain_sleeps(r)) {
        bgd_fallback_chain_sleeps(r, job);
        APR_BRIGADE_CONCAT(job->queue, bb);
        return bgd_capture_give_up(job);
    }

    if (bgd_job_timed(job)) {
        bgd_pace_after_dry(job, apr_time_now());
    }

    /* An internal redirect inside the handler (e.g. a CGI's local
     * Location:) moves this protocol-level filter to the new request:
     * deliver in the foreground from here on. */
    if (r != job->r) {
        APR_BRIGADE_CONCAT(job->queue, bb);
        /* The redirected request claims a slot of its own if the engine
         * takes it: this one must not count twice against the client's
         * BgDeliverMaxPerClient meanwhile. */
        bgd_slot_release(job);
        return bgd_capture_give_up(job);
    }

    while (!APR_BRIGADE_EMPTY(bb)) {
        apr_bucket *b = APR_BRIGADE_FIRST(bb);

        if (APR_BUCKET_IS_EOS(b)) {
            job->eos = 1;
            APR_BUCKET_REMOVE(b);
            APR_BRIGADE_INSERT_TAIL(job->queue, b);
            continue;
        }
        if (AP_BUCKET_IS_ERROR(b)
            && ((ap_bucket_error *)b->data)->status == HTTP_BAD_GATEWAY) {
            /* mod_proxy's mark of a backend that broke off the body
             * (ap_proxy_backend_broke()): the HTTP filters will close
             * the connection without ending the body, so the delivery
             * must not be logged complete.  The bucket itself goes on
             * with the body, for them to see. */
            job->body_broken = 1;
        }
        if (APR_BUCKET_IS_FLUSH(b)) {
            /* The handler wants its data out; it gets it out without
             * ever waiting for the client. */
            job->flush_hint = 1;
            apr_bucket_delete(b);
            continue;
        }
        if (APR_BUCKET_IS_METADATA(b)) {
            APR_BUCKET_REMOVE(b);
            APR_BRIGADE_INSERT_TAIL(job->queue, b);
            continue;
        }
        if (b->length == (apr_size_t)-1) {
            /* Pipe or socket (mod_cgi, mod_proxy): read what is there; if
             * nothing is there yet, first send out what we have. */
            const char *data;
            apr_size_t len;
            rv = apr_bucket_read(b, &data, &len, APR_NONBLOCK_READ);
            if (APR_STATUS_IS_EAGAIN(rv)) {
                bgd_forward_opportunistic(job);
                rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
            }
            if (rv != APR_SUCCESS) {
                break;
            }
            continue;       /* b is now a data bucket of known length */
        }
        if (!b->length) {
            /* Nothing to send (an empty file that SSI includes where
             * sendfile is on): at the head of the queue it would be a pass
             * of no bytes, which the pump takes for a full socket and
             * waits on for ever. */
            apr_bucket_delete(b);
            continue;
        }
        if (APR_BUCKET_IS_MMAP(b)) {
            /* A mapping made above us (mod_include reads its page so with
             * EnableMMAP On) must not wait for a slow client: a file
             * truncated meanwhile raises SIGBUS in the thread that reads
             * the mapping (mod_ssl, on an engine thread) and kills the
             * child.  Copied now, while the handler runs, as stock httpd
             * would read it; memory as it was counted before. */
            const char *data;
            apr_size_t len;
            apr_bucket *copy;

            rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                break;
            }
            copy = apr_bucket_heap_create(data, len, NULL, b->list);
            APR_BUCKET_INSERT_BEFORE(b, copy);
            apr_bucket_delete(b);
            b = copy;
        }
        rv = apr_bucket_setaside(b, r->pool);
        if (rv != APR_SUCCESS && rv != APR_ENOTIMPL) {
            break;
        }
        if (APR_BUCKET_IS_FILE(b)) {
            /* Never mmap a file under delivery: a concurrent truncation
             * would turn into SIGBUS in whatever thread reads it. */
            apr_bucket_file_enable_mmap(b, 0);
            rv = bgd_adopt_file(job, b);
            if (rv != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r,
                              "BGD021: cannot take a handle on %s; "
                              "delivering it in the foreground",
                              r->filename ? r->filename : "a file");
                APR_BRIGADE_CONCAT(job->queue, bb);
                return bgd_capture_give_up(job);
            }
        }
        else {
            job->mem_bytes += b->length;
        }
        if (!job->captured && !bgd_job_timed(job) && !job->c->master) {
            bgd_rules_start(job, apr_time_now(), 0);
            job->capture_watched = 1;
        }
        job->captured += b->length;
        APR_BUCKET_REMOVE(b);
        APR_BRIGADE_INSERT_TAIL(job->queue, b);
    }
    apr_brigade_cleanup(bb);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r,
                      "BGD012: reading the response failed");
        return rv;
    }

    if (job->flush_hint
        || (job->captured - job->sent >= BGD_CAPTURE_FORWARD_MIN
            && (!job->spool || bgd_job_socket_queued(job) == 0))) {
        job->flush_hint = 0;
        bgd_forward_opportunistic(job);
    }
    rv = bgd_capture_rules(job);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    /* The tail of a spooled response waits behind the whole spool: in the
     * spool too (if it fits), not in memory for the length of the
     * delivery. */
    if (job->eos && job->spool && !job->spool_failed && job->mem_bytes > 0
        && bgd_spool_held(job) + job->mem_bytes <= job->conf->spool_max) {
        if (bgd_spool_memory(job) != APR_SUCCESS) {
            return bgd_capture_spool_failed(job);
        }
    }
    else if (job->mem_bytes > job->conf->mem_limit) {
        if (bgd_capture_over_line(job)) {
            if (bgd_job_timed(job)) {
                rv = bgd_capture_wait_line(job);
                if (rv != APR_SUCCESS
                    || job->mem_bytes <= job->conf->mem_limit) {
                    return rv;
                }
            }
            else {
                /* Endless stream and a slow client: stop buffering,
                 * deliver the rest the ordinary way. */
                ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                              "BGD013: response exceeds BgDeliverSpoolLimit "
                              "(%" APR_OFF_T_FMT " bytes); delivering the "
                              "rest in the foreground", job->conf->spool_max);
                return bgd_capture_give_up(job);
            }
        }
        if (bgd_spool_memory(job) != APR_SUCCESS) {
            return bgd_capture_spool_failed(job);
        }
    }
    return APR_SUCCESS;
}

/*
 * A file bucket whose reads notice that the file ended early.  APR's file
 * bucket returns APR_EOF from a read that finds the file shorter than the
 * bucket.  The core then aborts the connection without a word; mod_ssl
 * ends the response there and keeps the connection alive, so an HTTPS
 * client waits for the missing bytes until KeepAliveTimeout, and the
 * access log calls the response complete.  This type reads through the
 * file bucket's own code (so it shares its data, split, copy and setaside)
 * and, when the file ends early, logs BGD026 and aborts the connection.
 * The remainder that APR inserts after each read is typed as ours again.
 */
typedef struct {
    apr_bucket_file file;   /* first: apr_bucket_type_file's code uses it */
    conn_rec *c;
} bgd_checked_file_t;

static const apr_bucket_type_t bgd_bucket_type_checked_file;

static void bgd_checked_file_destroy(void *data)
{
    apr_bucket_type_file.destroy(data);
}

static apr_status_t bgd_checked_file_setaside(apr_bucket *b, apr_pool_t *p)
{
    return apr_bucket_type_file.setaside(b, p);
}

static apr_status_t bgd_checked_file_read(apr_bucket *b, const char **str,
                                          apr_size_t *len,
                                          apr_read_type_e block)
{
    bgd_checked_file_t *cf = b->data;
    conn_rec *c = cf->c;
    apr_off_t offset = b->start;
    apr_size_t want = b->length;
    const char *fname = NULL;
    apr_os_file_t fd = -1;
    apr_status_t rv;

    /* The read may free cf (no remainder): take what the log needs now. */
    apr_file_name_get(&fname, cf->file.fd);
    apr_os_file_get(&fd, cf->file.fd);
    rv = apr_bucket_type_file.read(b, str, len, block);
    if (rv == APR_SUCCESS
        && !bgd_read_still_valid(fd, offset + (apr_off_t)*len)) {
        /* Zeros of a racing truncation, maybe: b holds them now, as a
         * heap bucket that goes with the caller's brigade. */
        *len = 0;
        rv = APR_EOF;
    }
    if (rv == APR_SUCCESS) {
        apr_bucket *rest = APR_BUCKET_NEXT(b);

        if (*len == want) {
            return APR_SUCCESS;
        }
        if (*len > 0 && rest->type == &apr_bucket_type_file
            && rest->data == cf) {
            rest->type = &bgd_bucket_type_checked_file;
            return APR_SUCCESS;
        }
    }
    else if (rv != APR_EOF) {
        return rv;
    }
    ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c,
                  "BGD026: %s changed during delivery: it has no byte at "
                  "offset %" APR_OFF_T_FMT ", the response needs %"
                  APR_OFF_T_FMT "; aborting the connection",
                  fname ? fname : "a file", offset, offset + (apr_off_t)want);
    c->aborted = 1;
    return APR_EOF;
}

static const apr_bucket_type_t bgd_bucket_type_checked_file = {
    "BGDELIVER_FILE", 5, APR_BUCKET_DATA,
    bgd_checked_file_destroy,
    bgd_checked_file_read,
    bgd_checked_file_setaside,
    apr_bucket_shared_split,
    apr_bucket_shared_copy
};

/* Make b, a file bucket, one whose reads are checked. */
static void bgd_check_file_reads(apr_bucket *b, conn_rec *c)
{
    apr_bucket_file *a = b->data;
    bgd_checked_file_t *cf = apr_bucket_alloc(sizeof(*cf), b->list);

    cf->file.fd = a->fd;
    cf->file.readpool = a->readpool;
    cf->file.can_mmap = 0;
    cf->file.read_size = a->read_size;
    cf->c = c;
    /* a may be shared with other buckets (byte ranges): drop b's hold. */
    apr_bucket_type_file.destroy(a);
    apr_bucket_shared_make(b, cf, b->start, b->length);
    b->type = &bgd_bucket_type_checked_file;
}

/* A fallback's file that the core writes itself (event over plain HTTP,
 * or sendfile): what it must still hold when the response ends. */
typedef struct {
    conn_rec *c;
    const char *filename;
    apr_ino_t inode;
    apr_dev_t device;
    apr_off_t end;              /* the response needs bytes up to here */
} bgd_core_file_t;

/* r->pool cleanup, after the access log line.  The core aborts such a
 * response when the file ends early, without a word; if the connection
 * was aborted and the file (the same one) is now too short, say why.  One
 * stat(2), for aborted responses only. */
static apr_status_t bgd_core_file_check(void *data)
{
    bgd_core_file_t *watched = data;
    struct stat st;

    if (watched->c->aborted && stat(watched->filename, &st) == 0
        && st.st_ino == watched->inode && st.st_dev == watched->device
        && st.st_size < watched->end) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, watched->c,
                      "BGD027: %s changed during delivery: it now ends at "
                      "offset %" APR_OFF_T_FMT ", the response needed %"
                      APR_OFF_T_FMT "; the connection was aborted",
                      watched->filename, (apr_off_t)st.st_size, watched->end);
    }
    return APR_SUCCESS;
}

/* Where BgDeliver is on but a response goes out the ordinary way (an MPM
 * that cannot wait for us, HTTP/2, a cap with BgDeliverOverflow fallback,
 * a file below BgDeliverMinSize), its files are read, not mapped, as in a
 * background delivery.  From a
 * mapping of a file truncated meanwhile the core sends the zeros of the
 * last page as if they were content, and a filter that reads the mapping
 * itself (mod_ssl) gets SIGBUS past the new end; a read stops there.
 *
 * The plain-HTTP core aborts the connection when a file reads short, but
 * logs nothing; mod_ssl does not even abort (see bgd_checked_file_read()).
 * Reads are checked where the file is read in user space anyway and our
 * bucket type does not change how the core writes it: over TLS, and with
 * an MPM that writes in the worker, when sendfile is off.  Not on the
 * event MPM over plain HTTP, where the core sets FILE buckets aside for
 * write completion but would write any other bucket before the worker is
 * free, nor where sendfile carries the file: for the served file, those
 * are checked when the response ends (bgd_core_file_check(), BGD027).  HTTP/2
 * streams are left to mod_http2. */
static apr_status_t bgd_unmapped_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    conn_rec *c = f->c;
    int tls = !c->master && ap_ssl_conn_is_ssl(c);
    int sync_plain = !c->master && !tls && !bgd_mpm_can_waitio;
    bgd_core_file_t *watched = f->ctx;
    apr_bucket *b;

    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        apr_file_t *fd;
        const char *name = NULL;

        if (!APR_BUCKET_IS_FILE(b)) {
            continue;
        }
        apr_bucket_file_enable_mmap(b, 0);
        fd = ((apr_bucket_file *)b->data)->fd;
        if (tls || (sync_plain
                    && !(apr_file_flags_get(fd) & APR_SENDFILE_ENABLED))) {
            bgd_check_file_reads(b, c);
            continue;
        }
        if (c->master || r->finfo.filetype != APR_REG || !r->filename
            || (r->finfo.valid & APR_FINFO_IDENT) != APR_FINFO_IDENT
            || apr_file_name_get(&name, fd) != APR_SUCCESS || !name
            || strcmp(name, r->filename) != 0) {
            continue;
        }
        if (!watched) {
            f->ctx = watched = apr_pcalloc(r->pool, sizeof(*watched));
            watched->c = c;
            watched->filename = r->filename;
            watched->inode = r->finfo.inode;
            watched->device = r->finfo.device;
            apr_pool_cleanup_register(r->pool, watched, bgd_core_file_check,
                                      apr_pool_cleanup_null);
        }
        if (b->start + (apr_off_t)b->length > watched->end) {
            watched->end = b->start + (apr_off_t)b->length;
        }
    }
    return ap_pass_brigade(f->next, bb);
}

/* --------------------------------------------------------------- pacing */

/* How many wire bytes pacing allows now; sets job->next_tick when the
 * answer is 0.  A modem delivers byte k at latency + k / rate: the first
 * byte leaves when the latency has elapsed, and each wake-up sends what
 * the line would have carried by then, so the client is never ahead of
 * the emulated line and at most one pulse behind it. */
static apr_interval_time_t bgd_effective_pulse(const bgd_job_t *job)
{
    const bgdeliver_pacing_t *p = &job->pacing;
    apr_interval_time_t pulse = p->pulse > 0 ? p->pulse
                                              : BGDELIVER_DEFAULT_PULSE;
    int budget = bgd_max_wakeups == BGD_UNSET ? BGD_DEFAULT_WAKEUPS
                                              : bgd_max_wakeups;
    /* Pulses the engine thread writes are not wake-ups. */
    if (budget > 0 && job->counted_paced) {
        /* n deliveries waking every pulse cost n / pulse wake-ups a
         * second: stretch the pulse so that the child stays in budget. */
        apr_interval_time_t floor = (apr_interval_time_t)
            apr_atomic_read32(&bgd_paced_jobs) * APR_USEC_PER_SEC / budget;
        if (floor > pulse) {
            pulse = floor;
        }
    }
    return pulse;
}

/* Data arrives for a paced delivery: its line stood idle since the last
 * byte captured so far was due, if that is past.  A line banks no time it
 * had nothing to carry (the handler or its producer paused), so what comes
 * now takes the line's time again, but for a little catching up, for late
 * wake-ups.  Counted from what was captured, not from what was sent: a
 * handler that writes, then waits for its backend (a CGI, a proxy), holds
 * its worker in that wait with bytes still queued, and those must not
 * leave at the end of the wait together with all the line time of the
 * wait.  Nor is a slow client held back by this: what it has not taken
 * stays allowed, and as much as the line carries in the catching up. */
static void bgd_pace_after_dry(bgd_job_t *job, apr_time_t now)
{
    const bgdeliver_pacing_t *p = &job->pacing;
    apr_interval_time_t pulse = bgd_effective_pulse(job), catch_up;
    /* pace_start may not be set yet. */
    apr_time_t start = bgd_pace_origin(job) + job->pace_lost;
    apr_time_t carried;

    if (p->rate <= 0 || now <= start) {
        return;
    }
    carried = start + (apr_time_t)((double)(job->captured - p->burst)
                                   * APR_USEC_PER_SEC / p->rate);
    if (carried < start) {
        carried = start;        /* some of the burst is left */
    }
    catch_up = 2 * pulse > BGD_PACE_CATCH_UP ? 2 * pulse : BGD_PACE_CATCH_UP;
    if (now - carried > catch_up) {
        job->pace_lost += now - carried - catch_up;
    }
}

static apr_off_t bgd_pacing_allowance(bgd_job_t *job, apr_time_t now)
{
    const bgdeliver_pacing_t *p = &job->pacing;
    apr_interval_time_t pulse = bgd_effective_pulse(job);
    double rate = p->rate;
    apr_off_t allowed;
    apr_time_t start, next_byte, due;

    if (now < job->pace_start) {
        job->next_tick = job->pace_start;
        return 0;
    }
    /* Every byte sent, only the EOS left: nothing to hold back (it would
     * wait a byte-time more, and the last wake-up would find no byte). */
    if (p->rate <= 0 || job->drain || job->bodiless
        || (job->eos && job->sent >= job->captured)) {
        return APR_INT64_MAX;
    }
    start = job->pace_start + job->pace_lost;
    allowed = p->burst + 1
              + (apr_off_t)(rate * (double)(now - start) / APR_USEC_PER_SEC)
              - job->sent;
    if (allowed > 0) {
        return allowed;
    }
    /* When the line has carried one more byte (rounded up, so that we
     * never wake a microsecond early and lose a whole pulse). */
    next_byte = start + 1
                + (apr_time_t)((double)(job->sent - p->burst)
                               * APR_USEC_PER_SEC / rate);
    due = now + pulse;
    if (job->eos) {
        /* ... and when all of the rest will be on the line: the last
         * byte leaves on schedule, not at the next pulse boundary. */
        apr_time_t all = start + 1
                         + (apr_time_t)((double)(job->captured - 1 - p->burst)
                                        * APR_USEC_PER_SEC / rate);
        if (all < due) {
            due = all;
        }
    }
    job->next_tick = due > next_byte ? due : next_byte;
    return 0;
}

/* ---------------------------------------------- writing around the chain */

/*
 * A plain-HTTP delivery whose filters below ours are only the core's and
 * observers (no TLS, no filter that changes bytes) is written to the
 * socket directly, by the worker and by the engine thread alike, without
 * blocking: what the socket does not take stays at the head of the queue,
 * never in the core output filter, so that either can go on where the
 * other stopped.  The bytes go to mod_logio as the core would count them.
 */
#define BGD_DIRECT_IOVS 16
/* The most of the file ranges of a pass that one direct write reads
 * (without sendfile): into a block of the pass allocator, given back after
 * the write.  What the socket does not take is read again next time rather
 * than kept, so that a delivery holds no buffer while it waits; a fast
 * client pays three system calls per block (the read, its size check, the
 * write), not two per bucket buffer of 8 KB (apr_bucket_read() seeks,
 * then reads). */
#define BGD_DIRECT_READ (512 * 1024)

/* Connection filters that only watch the buckets going by: ours, and
 * mod_reqtimeout's (on in Debian's default configuration), which waits
 * for the EOR to clear its timeout; the EOR always goes down the chain. */
static const char *const bgd_observer_filters[] = {
    "CONNTIMES_OUT", "reqtimeout", NULL
};
/* mod_ssl's output filters: they change the bytes, so an HTTPS delivery
 * is written through them (BGD_ENGINE_CHAIN).  Each keeps its state in the
 * connection and writes only to the filter below it, whichever thread
 * passes it a brigade. */
static const char *const bgd_tls_filters[] = {
    "SSL/TLS Filter", "SSL/TLS Coalescing Filter", NULL
};
static apr_uint32_t bgd_unknown_filter_said;

static int bgd_filter_listed(const ap_filter_t *f, const char *const *names)
{
    for (; *names; names++) {
        if (!strcasecmp(f->frec->name, *names)) {
            return 1;
        }
    }
    return 0;
}

static int bgd_engine_can_take(const bgd_job_t *job)
{
    apr_socket_t *csd = ap_get_conn_socket(job->c);
    apr_int32_t nonblocking = 0;
    ap_filter_t *f;

    if (!bgd_engine_count || job->producer || job->drain || job->in_worker) {
        return BGD_ENGINE_NONE;
    }
    /* Nothing here may block (sendfile() has no MSG_DONTWAIT); the event
     * MPM's sockets have a timeout, hence O_NONBLOCK. */
    if (!csd || apr_socket_opt_get(csd, APR_SO_NONBLOCK, &nonblocking)
                != APR_SUCCESS || !nonblocking) {
        return BGD_ENGINE_NONE;
    }
    for (f = job->capture->next; f; f = f->next) {
        if (f->frec->ftype >= AP_FTYPE_NETWORK) {
            /* The engine thread lends the core output filter its duplicate
             * of the socket for a visit (bgd_engine_pump()): the core's own
             * filter only, whose context it knows (core_net_rec). */
            if (f->next || f->frec != ap_core_output_filter_handle) {
                return BGD_ENGINE_NONE;
            }
            return job->tls ? BGD_ENGINE_CHAIN : BGD_ENGINE_DIRECT;
        }
        if (bgd_filter_listed(f, bgd_observer_filters)
            || (job->tls && bgd_filter_listed(f, bgd_tls_filters))) {
            continue;
        }
        /* Once per child: the operator learns why the engine threads
         * stay idle (and every pass costs a worker visit). */
        if (!apr_atomic_cas32(&bgd_unknown_filter_said, 1, 0)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, job->r,
                          "BGD036: the connection filter %s is below the "
                          "engine and not known to leave the bytes alone "
                          "or to be mod_ssl's: deliveries through it are "
                          "written by workers, pass by pass",
                          f->frec->name);
        }
        return BGD_ENGINE_NONE;
    }
    return BGD_ENGINE_NONE;
}

/* A pass of `want` bytes from the head of the queue is one range of a file
 * that may go by sendfile (EnableSendfile): no read, no buffer. */
static int bgd_direct_by_sendfile(const bgd_job_t *job, apr_off_t want)
{
    apr_bucket *b = APR_BRIGADE_FIRST(job->queue);

    return b != APR_BRIGADE_SENTINEL(job->queue) && bgd_bucket_sendfile(b)
           && (apr_off_t)b->length >= want;
}

/* How much the next pass takes (0: wait for the socket), within what the
 * pacing `allowed`.  A paced pass that bgd_direct_send() writes skips the
 * room check of bgd_slice_size(): a pulse is a few hundred bytes, and the
 * write itself says when the socket is full, which saves two system calls
 * per pulse (20,000 pulses a second for 2,000 modem lines). */
static apr_off_t bgd_pass_size(const bgd_job_t *job, int fd, int direct,
                               apr_off_t allowed, bgd_pass_e *how)
{
    apr_off_t want;

    if (direct && job->pacing.rate > 0) {
        want = allowed < BGD_SLICE_BYTES ? allowed : BGD_SLICE_BYTES;
        *how = bgd_blocks && !bgd_direct_by_sendfile(job, want)
               ? BGD_PASS_READ : BGD_PASS_FILES;
        return want;
    }
    want = bgd_slice_size(job, fd, direct, how);
    return allowed < want ? allowed : want;
}

/* One write of the head of the pass in job->slice: the pass's only bucket
 * when sendfile carries it, else up to BGD_DIRECT_IOVS buckets, their file
 * ranges read into one block of BGD_DIRECT_READ. */
static apr_status_t bgd_direct_write(const bgd_job_t *job, int fd,
                                     apr_size_t *written, int *partial)
{
    struct iovec iov[BGD_DIRECT_IOVS];
    struct msghdr msg;
    apr_bucket *e = APR_BRIGADE_FIRST(job->slice);
    apr_size_t total = 0;
    bgd_reads_t reads = BGD_READS_INIT;
    apr_memnode_t *block = NULL;
    apr_size_t block_used = 0;
    apr_status_t rv = APR_SUCCESS;
    ssize_t n;
    int niov = 0;

    *written = 0;
    *partial = 0;
#if defined(__linux__)
    if (bgd_bucket_sendfile(e)
        && APR_BUCKET_NEXT(e) == APR_BRIGADE_SENTINEL(job->slice)) {
        apr_os_file_t ffd;
        off_t off = (off_t)e->start;

        if (apr_os_file_get(&ffd, ((apr_bucket_file *)e->data)->fd)
            != APR_SUCCESS) {
            return APR_EBADF;
        }
        do {
            n = sendfile(fd, ffd, &off, e->length);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return errno == EAGAIN ? APR_EAGAIN : errno;
        }
        /* A file that became shorter than its bucket. */
        if (n == 0) {
            return APR_EOF;
        }
        *written = (apr_size_t)n;
        *partial = (apr_size_t)n < e->length;
        return APR_SUCCESS;
    }
#endif
    for (; e != APR_BRIGADE_SENTINEL(job->slice) && niov < BGD_DIRECT_IOVS;
         e = APR_BUCKET_NEXT(e)) {
        const char *data;
        char *buf;
        apr_size_t len;

        if (APR_BUCKET_IS_METADATA(e)) {
            continue;
        }
        if (APR_BUCKET_IS_FILE(e) && bgd_blocks) {
            if (!block
                && !(block = apr_allocator_alloc(bgd_blocks,
                                                 BGD_DIRECT_READ))) {
                rv = APR_ENOMEM;
                break;
            }
            if (block_used == BGD_DIRECT_READ) {
                break;
            }
            buf = block->first_avail + block_used;
            len = BGD_DIRECT_READ - block_used;
            if (len > e->length) {
                len = e->length;
            }
            if ((rv = bgd_read_range(e, buf, len)) != APR_SUCCESS) {
                break;
            }
            data = buf;
            block_used += len;
        }
        else if ((rv = bgd_reads_read(&reads, e, &data, &len))
                 != APR_SUCCESS) {
            break;
        }
        if (len) {
            iov[niov].iov_base = (void *)data;
            iov[niov++].iov_len = len;
            total += len;
        }
        /* The head of a file bucket that the block could not hold ends the
         * write: bgd_direct_send() takes what went out off the front of the
         * slice, so nothing may follow a bucket that was not sent whole
         * (a multipart boundary after it would go out twice, in place of
         * the file's bytes). */
        if (len < e->length) {
            break;
        }
    }
    if (rv == APR_SUCCESS) {
        rv = bgd_reads_done(&reads);
    }
    if (rv == APR_SUCCESS && total) {
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)niov;
        do {
            n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            rv = errno == EAGAIN ? APR_EAGAIN : errno;
        }
        else {
            *written = (apr_size_t)n;
            *partial = (apr_size_t)n < total;
        }
    }
    if (block) {
        apr_allocator_free(bgd_blocks, block);
    }
    return rv;
}

/* Writes the pass in job->slice to socket fd until it is gone (SUCCESS)
 * or the socket is full (APR_EAGAIN); APR_EOF when a file has become
 * shorter, else the error.  What is not written goes back to the head of
 * the queue; *sent tells how much was. */
static apr_status_t bgd_direct_send(bgd_job_t *job, int fd, apr_size_t *sent)
{
    apr_status_t rv = APR_SUCCESS;

    *sent = 0;
    while (!APR_BRIGADE_EMPTY(job->slice)) {
        apr_size_t n, left;
        int partial;

        rv = bgd_direct_write(job, fd, &n, &partial);
        if (rv == APR_EOF) {
            job->file_short = 1;
        }
        for (left = n; !APR_BRIGADE_EMPTY(job->slice); ) {
            apr_bucket *e = APR_BRIGADE_FIRST(job->slice);
            if (!APR_BUCKET_IS_METADATA(e)) {
                if (!left && e->length) {
                    break;
                }
                if (e->length > left) {
                    apr_bucket_split(e, left);
                }
                left -= e->length;
            }
            apr_bucket_delete(e);
        }
        *sent += n;
        if (rv == APR_SUCCESS && partial) {
            rv = APR_EAGAIN;
        }
        if (rv != APR_SUCCESS) {
            break;
        }
    }
    if (!APR_BRIGADE_EMPTY(job->slice)) {
        apr_off_t len, mem;

        /* Held again: bgd_take_pass() took the whole pass off the count
         * that BgDeliverMemoryLimit is checked against. */
        bgd_brigade_bytes(job->slice, &len, &mem);
        job->mem_bytes += mem;
        APR_BRIGADE_PREPEND(job->queue, job->slice);
    }
    if (*sent && bgd_logio_add_bytes_out) {
        bgd_logio_add_bytes_out(job->c, (apr_off_t)*sent);
    }
    return rv;
}

/* ----------------------------------------------------------------- pump */

/* A producer's answer without data and without EOS: nothing ready yet. */
static int bgd_brigade_has_nothing(apr_bucket_brigade *bb)
{
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        if ((!APR_BUCKET_IS_METADATA(b) && b->length != 0)
            || APR_BUCKET_IS_EOS(b)) {
            return 0;
        }
    }
    return 1;
}

/* A delivery ends short: at debug level when the client went away (the
 * common case) or another line already said why, as an error when the
 * server is at fault. */
static bgd_pump_e bgd_pump_fail(bgd_job_t *job, int level, apr_status_t rv,
                                const char *what)
{
    ap_log_rerror(APLOG_MARK, level, rv, job->r,
                  "BGD020: delivery ends after %" APR_OFF_T_FMT " of %"
                  APR_OFF_T_FMT " bytes: %s", job->sent,
                  job->eos ? job->captured : (apr_off_t)-1, what);
    if (!job->outcome) {
        job->outcome = "aborted";
    }
    return BGD_PUMP_ERROR;
}

/* The producer had nothing again: how long to wait before asking it
 * again (10 ms, then twice as long each time up to 250 ms), or 0 when it
 * has had nothing for the server's Timeout (logged): the response ends
 * then, as mod_cgi ends a script that writes nothing for that long.
 * *idle_start and *retry are the caller's: the job's for the engine, the
 * handler thread's own where it runs the producer itself. */
static apr_interval_time_t bgd_producer_backoff(request_rec *r,
                                                apr_time_t now,
                                                apr_time_t *idle_start,
                                                apr_interval_time_t *retry)
{
    apr_interval_time_t timeout = r->server->timeout;

    if (!*idle_start) {
        *idle_start = now;
    }
    else if (timeout > 0 && now - *idle_start >= timeout) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD033: the producer has had nothing to send for "
                      "%" APR_TIME_T_FMT " s (Timeout); ending the response",
                      apr_time_sec(now - *idle_start));
        return 0;
    }
    *retry = !*retry ? BGD_PRODUCER_RETRY
             : *retry * 2 < BGD_PRODUCER_RETRY_MAX ? *retry * 2
             : BGD_PRODUCER_RETRY_MAX;
    return *retry;
}

/* The producer has nothing yet, and the client has everything before it
 * (the core holds nothing): no rule on slow clients may count this wait
 * (see bgd_deadline()).  Returns 1 with the next poll in next_tick, or 0
 * when the response must end (bgd_producer_backoff()). */
static int bgd_producer_idle(bgd_job_t *job)
{
    apr_time_t now = apr_time_now();
    apr_interval_time_t wait = bgd_producer_backoff(job->r, now,
                                                    &job->producer_idle_start,
                                                    &job->producer_retry);

    if (!wait) {
        return 0;
    }
    job->last_progress = now;
    job->next_tick = now + wait;
    return 1;
}

/* BGD032, wherever the producer runs (the engine, or the handler's thread
 * in bgd_run_producer_here()). */
static void bgd_log_producer_failed(request_rec *r, apr_status_t rv)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                  "BGD032: the producer failed before the first byte of "
                  "the response; answering 500");
}

/* A producer failed before a byte of the response, not even its headers,
 * went out: the client gets a 500, as from a handler that fails, rather
 * than a connection closed on it with nothing.  The page is captured and
 * delivered like any response; the delivery it replaces failed, and is
 * logged and counted as one whose backend broke off. */
static void bgd_producer_error_page(bgd_job_t *job, apr_status_t rv)
{
    request_rec *r = job->r;

    bgd_log_producer_failed(r, rv);
    job->producer = NULL;
    job->body_broken = 1;
    r->status = HTTP_INTERNAL_SERVER_ERROR;
    job->capturing = 1;
    ap_send_error_response(r, 0);
    job->capturing = 0;
}

static bgd_pump_e bgd_file_changed(bgd_job_t *job)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, job->r,
                  "BGD007: %s changed during delivery after %" APR_OFF_T_FMT
                  " bytes; aborting the connection",
                  job->r->filename ? job->r->filename : "a file", job->sent);
    job->outcome = "file-changed";
    return bgd_pump_fail(job, APLOG_DEBUG, APR_SUCCESS, "file changed");
}

/* Move the next slice to the connection filters.  Returns what the
 * delivery waits for next.  Runs on a worker, on the handler's thread
 * when paced in the worker, or on an engine thread (bgd_engine_pump());
 * never blocks.  `visit_start` is the clock, or for the engine thread a
 * pulse's due time up to BGD_PACE_SLACK ahead of it.  The files count as
 * checked once under the stamp `checked` (bgd_file_ref_unchanged()): the
 * visit's start, or for the engine thread the current BGD_PACE_CHECK
 * window's. */
static bgd_pump_e bgd_pump(bgd_job_t *job, apr_time_t visit_start,
                           apr_time_t checked)
{
    conn_rec *c = job->c;
    apr_time_t now;
    apr_off_t visit_bytes = 0;
    apr_status_t rv;
    int fd = bgd_conn_fd(c);
    /* Where the engine thread may write, the worker writes the same way:
     * the core then holds nothing, and the thread can take the rest over
     * when the socket is full. */
    int direct = fd >= 0 && bgd_engine_can_take(job) == BGD_ENGINE_DIRECT;

    for (;;) {
        apr_off_t allowed, want, len, mem;
        bgd_pass_e how;
        int flushed = 0;

        if (c->aborted) {
            return bgd_pump_fail(job, APLOG_DEBUG, APR_SUCCESS,
                                 "connection aborted");
        }
        if (job->file_short) {
            /* Found by the engine thread, which hands the job back. */
            return bgd_file_changed(job);
        }
        if (c->data_in_output_filters) {
            if (job->files->nelts
                && !bgd_all_files_unchanged(job, checked)) {
                return bgd_file_changed(job);
            }
            rv = bgd_kick_core(c);
            if (rv != APR_SUCCESS || c->aborted) {
                return bgd_pump_fail(job, APLOG_DEBUG, rv,
                                     "writing to the client failed");
            }
            if (c->data_in_output_filters) {
                return BGD_PUMP_WAIT_SOCKET;
            }
            flushed = 1;
        }
        now = apr_time_now();
        if (flushed) {
            /* What the core held has reached the kernel. */
            job->last_progress = now;
        }

        if (APR_BRIGADE_EMPTY(job->queue) && !job->eos) {
            if (!job->producer) {
                return bgd_pump_fail(job, APLOG_ERR, APR_SUCCESS,
                                     "response ended without EOS");
            }
            else {
                /* The producer's output goes through the protocol filters
                 * and lands in our queue again. */
                int nothing;

                if (!job->produced) {
                    job->produced = apr_brigade_create(job->r->pool,
                                                       c->bucket_alloc);
                }
                rv = job->producer(job->r, job->baton, job->produced,
                                   BGD_SLICE_BYTES);
                /* Nothing (or only metadata) is not passed on: the header
                 * filter would send the headers on it, and a producer that
                 * never starts could no longer get a 500. */
                nothing = bgd_brigade_has_nothing(job->produced);
                if (rv == APR_SUCCESS && !nothing) {
                    job->capturing = 1;
                    rv = ap_pass_brigade(job->r->output_filters,
                                         job->produced);
                    job->capturing = 0;
                }
                apr_brigade_cleanup(job->produced);
                if (rv != APR_SUCCESS && !job->captured) {
                    bgd_producer_error_page(job, rv);
                    continue;
                }
                if (rv != APR_SUCCESS) {
                    /* (Or its output's forwarding found the client
                     * gone.) */
                    return bgd_pump_fail(job, c->aborted ? APLOG_DEBUG
                                                         : APLOG_ERR,
                                         rv, "the producer failed");
                }
                if (nothing) {
                    if (bgd_producer_idle(job)) {
                        return BGD_PUMP_WAIT_TIMER;
                    }
                    if (!job->captured) {
                        bgd_producer_error_page(job, APR_TIMEUP);
                        continue;
                    }
                    return bgd_pump_fail(job, APLOG_DEBUG, APR_TIMEUP,
                                         "the producer timed out");
                }
                if (job->producer_idle_start) {
                    job->producer_wait += apr_time_now()
                                          - job->producer_idle_start;
                    job->producer_idle_start = 0;
                }
                job->producer_retry = 0;
                continue;
            }
        }
        if (APR_BRIGADE_EMPTY(job->queue)) {
            return BGD_PUMP_DONE;
        }

        /* What the line carried by the visit's start, as the engine
         * thread does for its pulses: topping it up with what accrues
         * while a slice is written would pass a few bytes at a time (a
         * TLS record and a write each) at high rates. */
        allowed = bgd_pacing_allowance(job, visit_start);
        if (allowed <= 0) {
            return BGD_PUMP_WAIT_TIMER;
        }
        /* Not before the first pass: the engine thread's `visit_start`
         * is a pulse's due time, which a round of many pulses leaves
         * behind the clock. */
        if (visit_bytes >= BGD_VISIT_BYTES
            || (visit_bytes && now - visit_start >= BGD_VISIT_TIME)) {
            return BGD_PUMP_YIELD;
        }

        want = bgd_pass_size(job, fd, direct, allowed, &how);
        if (want == 0) {
            return BGD_PUMP_WAIT_SOCKET;
        }
        rv = bgd_take_pass(job, want, how, checked, &len, &mem);
        if (rv == APR_EOF) {
            return bgd_file_changed(job);
        }
        if (rv != APR_SUCCESS) {
            return bgd_pump_fail(job, APLOG_ERR, rv,
                                 "reading the response failed");
        }
        if (direct) {
            apr_size_t sent;

            rv = bgd_direct_send(job, fd, &sent);
            job->sent += (apr_off_t)sent;
            visit_bytes += (apr_off_t)sent;
            if (sent) {
                job->last_progress = now;
            }
            if (rv == APR_EAGAIN) {
                return BGD_PUMP_WAIT_SOCKET;
            }
            if (rv == APR_EOF) {
                return bgd_file_changed(job);
            }
            if (rv != APR_SUCCESS) {
                c->aborted = 1;
                return bgd_pump_fail(job, APLOG_DEBUG, rv,
                                     "writing to the client failed");
            }
            continue;
        }
        job->sent += len;
        visit_bytes += len;
        bgd_append_push(job->slice);
        rv = ap_pass_brigade(job->capture->next, job->slice);
        apr_brigade_cleanup(job->slice);
        if (rv != APR_SUCCESS || c->aborted) {
            return bgd_pump_fail(job, APLOG_DEBUG, rv,
                                 "writing to the client failed");
        }
        /* A pass is sized to the room the socket has: the client took
         * what was there before. */
        job->last_progress = now;
    }
}

/* -------------------------------------------------------- engine thread */

/*
 * Each child runs engine threads (BgDeliverEngineThreads): the watchdog,
 * and the writers of the deliveries (see bgd_engine_can_take()) once a
 * worker has found their socket full.  Waiting for writability through
 * the MPM costs a trip through its listener and worker queue (about 50 us
 * of CPU, and the latency of two thread wake-ups, which a fast client pays
 * in throughput); the thread instead waits for the socket in its own epoll
 * and writes as soon as the socket takes more, as nginx's workers do.  It
 * also writes the pulses of paced deliveries: 2,000 modem clients at ten
 * pulses a second cannot afford a wake-up through the MPM each; it wakes
 * when the earliest pulse is due and writes every pulse due by then (or
 * within BGD_PACE_SLACK).
 *
 * Such a connection stays parked in WAITIO on its timed wait, armed for a
 * bound (Timeout / 2, or the slow-read deadline) rather than for the
 * socket or the next pulse.  The thread writes to the duplicate of the
 * socket that the timed wait keeps, and hands the connection back to the
 * MPM by making that timer expire now: on any error, when the response is
 * complete, and when the child stops.  It runs the pump itself
 * (bgd_engine_pump()), which writes a plain-HTTP delivery around the
 * filters and an HTTPS one through mod_ssl, and whose last word stands:
 * every outcome is handled and logged in one place, the pump.
 *
 * While the thread writes, no worker touches the connection (one that
 * wants it back waits, BGD_PACE_BUSY): its pools, bucket allocator and
 * filter contexts are the thread's, as they are a worker's during a visit.
 */
/* Pulses due this close to a wake-up of the thread are written with it, a
 * little early, instead of costing a wake-up (a context switch) each: the
 * schedule stays anchored, no pulse is more than this early. */
#define BGD_PACE_SLACK apr_time_from_msec(2)
/* How often the thread re-checks the files a paced response comes from
 * (size and mtime, one fstat() each): a pulse is a few hundred bytes, and
 * a truncated file is caught by the read itself (bgd_read_pass()). */
#define BGD_PACE_CHECK apr_time_from_msec(250)
#define BGD_ENGINE_EVENTS 64

/* Makes the timed wait expire now: the MPM gives the connection to a
 * worker.  The descriptor number is the timer's while the connection is
 * listed here (workers put the socket back only after bgd_wd_unlist()). */
static void bgd_engine_hand_back(bgd_conn_t *bc)
{
#if BGD_HAVE_TIMED_WAIT
    struct itimerspec its;

    memset(&its, 0, sizeof(its));
    its.it_value.tv_nsec = 1;
    if (timerfd_settime(bc->fd, 0, &its, NULL) < 0) {
        /* The wait still ends at its bound. */
        ap_log_cerror(APLOG_MARK, APLOG_DEBUG, errno, bc->c,
                      "BGD023: cannot wake a connection of the engine "
                      "thread early");
    }
#else
    (void)bc;
#endif
}

static int bgd_pace_add(bgd_conn_t *bc, apr_time_t due)
{
    bgd_engine_t *e = bc->engine;

    if (!e) {
        return 0;
    }
    apr_thread_mutex_lock(e->mutex);
    if (e->pace_count >= e->pace_size) {
        apr_thread_mutex_unlock(e->mutex);
        return 0;
    }
    bgd_pace_insert_locked(bc, due);
    if (bc->pace_index == 0) {
        bgd_engine_wake_locked(e);
    }
    apr_thread_mutex_unlock(e->mutex);
    return 1;
}

/* During a long timed wait: the engine thread hands the connection back
 * as soon as the client hangs up (bgd_engine_hangup_locked()). */
static void bgd_gone_watch(bgd_conn_t *bc)
{
    bgd_engine_t *e = bc->engine;

    if (!e) {
        return;
    }
    apr_thread_mutex_lock(e->mutex);
    /* Not over a wait for writability, which the thread's writes need. */
    if (!bc->stream_on && bgd_poll_arm_locked(bc, BGD_POLL_HANGUP)) {
        bc->watch_gone = 1;
    }
    apr_thread_mutex_unlock(e->mutex);
}

/* The watch of a timed wait fired (the client's end of stream, a reset or
 * an error): the worker that gets the connection back finds out which
 * (bgd_client_left()); the thread cannot, as the core may hold bytes of a
 * pipelined request that it read before the end. */
static void bgd_engine_hangup_locked(bgd_conn_t *bc)
{
    bc->watch_gone = 0;
    bc->hangup_seen = 1;
    bgd_pace_remove_locked(bc);
    bgd_stream_remove_locked(bc);
    bgd_engine_hand_back(bc);
}

static int bgd_stream_add(bgd_conn_t *bc)
{
    bgd_engine_t *e = bc->engine;
    int ok;

    if (!e) {
        return 0;
    }
    apr_thread_mutex_lock(e->mutex);
    ok = bgd_stream_arm_locked(bc);
    apr_thread_mutex_unlock(e->mutex);
    return ok;
}

/* What the thread writes for one connection when its pulse is due or its
 * socket takes more (`at`: the clock, or up to BGD_PACE_SLACK ahead of
 * it): the pump itself, around the filters over HTTP (bgd_direct_send())
 * and through mod_ssl over HTTPS, as on a worker.  The descriptor number
 * is the timer's, so the core output filter (and whoever asks for the
 * connection's socket) gets the duplicate for the length of the visit.
 * The files are checked once per BGD_PACE_CHECK, not once per pulse.
 * WAIT_TIMER and WAIT_SOCKET keep the connection here, so does YIELD (one
 * fast client does not starve the others); DONE and ERROR hand it back,
 * and they are final. */
static bgd_pump_e bgd_engine_pump(bgd_conn_t *bc, apr_time_t at)
{
    conn_rec *c = bc->c;
    core_net_rec *net = bgd_core_filter(c)->ctx;
    apr_socket_t *csd = net->client_socket;
    apr_off_t sent = bc->job->sent;
    bgd_pump_e what;

    net->client_socket = bc->dup_socket;
    ap_set_core_module_config(c->conn_config, bc->dup_socket);
    what = bgd_pump(bc->job, at, at - at % BGD_PACE_CHECK);
    if (bc->job->sent > sent) {
        bgd_count(&bgd_table->engine_writes[bc->engine->index], 1);
    }
    net->client_socket = csd;
    ap_set_core_module_config(c->conn_config, csd);
    if (what == BGD_PUMP_DONE || what == BGD_PUMP_ERROR) {
        bc->engine_ended = 1;
        bc->engine_end = what;
    }
    return what;
}

/* Writes for bc (out of the heap and not armed in the poller) unlocked:
 * workers park and wake others meanwhile; one that wants this connection
 * back waits (BGD_PACE_BUSY).  Then files it where it waits next. */
static void bgd_engine_serve_locked(bgd_conn_t *bc, apr_time_t at)
{
    bgd_engine_t *e = bc->engine;
    int draining = bgd_draining();
    bgd_pump_e what = BGD_PUMP_DONE;

    if (!draining && bc->job) {
        bc->pace_index = BGD_PACE_BUSY;
        apr_thread_mutex_unlock(e->mutex);
        what = bgd_engine_pump(bc, at);
        bgd_slot_update(bc->job, apr_time_now());
        apr_thread_mutex_lock(e->mutex);
        bc->pace_index = -1;
    }
    if (what == BGD_PUMP_WAIT_TIMER) {
        bgd_pace_insert_locked(bc, bc->job->next_tick);
    }
    else if ((what != BGD_PUMP_WAIT_SOCKET && what != BGD_PUMP_YIELD)
             || !bgd_stream_arm_locked(bc)) {
        bgd_stream_remove_locked(bc);
        bgd_engine_hand_back(bc);
    }
    apr_thread_cond_broadcast(e->write_done);
}

static void bgd_pace_run_locked(bgd_engine_t *e)
{
    int draining = bgd_draining();
    /* At most one write per connection per round: served connections go
     * back into the heap, and an overloaded thread (pulses due faster than
     * it writes them) must still get back to its watchdog, its sockets and
     * its exit flag between rounds. */
    int budget = e->pace_count;

    while (e->pace_count && budget-- > 0) {
        bgd_pace_entry_t top = e->heap[0];
        apr_time_t now = apr_time_now();

        if (!draining && top.due > now + BGD_PACE_SLACK) {
            break;
        }
        bgd_pace_remove_locked(top.bc);
        bgd_engine_serve_locked(top.bc, top.due > now ? top.due : now);
    }
}

/* A stopping child gives every connection back at once: the workers
 * drain them through the filter chain. */
static void bgd_stream_hand_back_all_locked(bgd_engine_t *e)
{
    apr_hash_index_t *hi = apr_hash_first(NULL, e->streams);

    while (hi) {
        bgd_conn_t *bc = apr_hash_this_val(hi);
        /* The iterator stays valid when the current entry goes. */
        hi = apr_hash_next(hi);
        bgd_stream_remove_locked(bc);
        bgd_engine_hand_back(bc);
    }
}

/* Sleeps up to `timeout` (unlocked) and writes to the sockets that became
 * writable meanwhile. */
static void bgd_engine_sleep_locked(bgd_engine_t *e,
                                    apr_interval_time_t timeout)
{
#if BGD_HAVE_TIMED_WAIT
    struct epoll_event ev[BGD_ENGINE_EVENTS];
    int i, n;

    apr_thread_mutex_unlock(e->mutex);
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 35)
    {
        /* To the microsecond, as a pulse is due (Linux 5.11). */
        struct timespec ts;
        ts.tv_sec = (time_t)apr_time_sec(timeout);
        ts.tv_nsec = (long)apr_time_usec(timeout) * 1000L;
        n = epoll_pwait2(e->epfd, ev, BGD_ENGINE_EVENTS, &ts, NULL);
    }
    if (n < 0 && errno == ENOSYS)
#endif
    {
        /* Rounded up: a pulse is never served before its time minus the
         * slack, and at most a millisecond after it. */
        n = epoll_wait(e->epfd, ev, BGD_ENGINE_EVENTS,
                       timeout > 0 ? (int)((timeout + 999) / 1000) : 0);
    }
    apr_thread_mutex_lock(e->mutex);
    for (i = 0; i < n; i++) {
        bgd_conn_t *bc;

        if (ev[i].data.u64 == 0) {
            apr_uint64_t count;
            if (read(e->evfd, &count, sizeof(count)) < 0) {
                /* EAGAIN: another wake-up took it already. */
            }
            continue;
        }
        /* A connection that a worker took back (or took back and parked
         * again, with a new key) meanwhile is not found. */
        bc = apr_hash_get(e->streams, &ev[i].data.u64,
                          sizeof(ev[i].data.u64));
        if (bc && bc->watch_gone) {
            bgd_engine_hangup_locked(bc);
        }
        else if (bc && bc->pace_index == -1) {
            bgd_engine_serve_locked(bc, apr_time_now());
        }
    }
#else
    apr_thread_cond_timedwait(e->wake, e->mutex, timeout);
#endif
}

/* A walk of the list is a cache miss per connection, under the mutex
 * that every park and every hand-back takes: with 1,000 slow readers over
 * TLS, walking it every BGD_WATCHDOG_PERIOD took 3 % of the server's CPU
 * and held the mutex about 0.3 ms each time.  Deadlines lie seconds ahead
 * at least (Timeout, BgDeliverMinRate's grace), so the walk waits for the
 * earliest one: e->wd_due never lies after any listed deadline (a stale,
 * earlier one costs one walk more). */
static void bgd_watchdog_scan_locked(bgd_engine_t *e, apr_time_t now)
{
    bgd_conn_t *bc = e->wd_head;
    apr_time_t due = APR_INT64_MAX;

    if (now < e->wd_due) {
        return;
    }
    while (bc) {
        bgd_conn_t *next = bc->wd_next;
        if (bc->wd_deadline && now >= bc->wd_deadline && bc->job
            && !strcmp(bc->wd_reason, "min-rate")) {
            /* The client may have read enough meanwhile without freeing
             * the third of the buffer that would have woken us.  The
             * connection is parked and listed, so no worker touches its
             * job while this lock is held. */
            const char *reason;
            bc->wd_deadline = bgd_deadline(bc->job, &reason);
            bc->wd_reason = reason;
        }
        if (bc->wd_deadline && now >= bc->wd_deadline && bc->job) {
            bc->job->kill_reason = bc->wd_reason;
            bgd_wd_unlist_locked(bc);
            shutdown(bc->fd, SHUT_RDWR);
        }
        else if (bc->wd_deadline && bc->wd_deadline < due) {
            due = bc->wd_deadline;
        }
        bc = next;
    }
    e->wd_due = due;
}

static void *APR_THREAD_FUNC bgd_engine_thread(apr_thread_t *thd, void *data)
{
    bgd_engine_t *e = data;
    apr_time_t next_scan = 0;

    apr_thread_mutex_lock(e->mutex);
    while (!e->exit) {
        apr_time_t now = apr_time_now(), wake;

        if (now >= next_scan) {
            bgd_watchdog_scan_locked(e, now);
            next_scan = now + BGD_WATCHDOG_PERIOD;
            /* Slots of a child that crashed or was killed would otherwise
             * wait for the next child to start, counting against their
             * clients' BgDeliverMaxPerClient meanwhile. */
            if (e == &bgd_engines[0] && bgd_table && bgd_slots_reap_due()) {
                apr_thread_mutex_unlock(e->mutex);
                bgd_slots_reap(0);
                apr_thread_mutex_lock(e->mutex);
            }
        }
        if (bgd_draining()) {
            bgd_stream_hand_back_all_locked(e);
        }
        bgd_pace_run_locked(e);
        wake = next_scan;
        if (e->pace_count && e->heap[0].due < wake) {
            wake = e->heap[0].due;
        }
        now = apr_time_now();
        bgd_engine_sleep_locked(e, wake > now ? wake - now : 0);
    }
    while (e->pace_count) {
        bgd_conn_t *bc = e->heap[0].bc;
        bgd_pace_remove_locked(bc);
        bgd_engine_hand_back(bc);
    }
    bgd_stream_hand_back_all_locked(e);
    apr_thread_mutex_unlock(e->mutex);
    apr_thread_exit(thd, APR_SUCCESS);
    return NULL;
}

static void bgd_engine_poller_close(bgd_engine_t *e)
{
#if BGD_HAVE_TIMED_WAIT
    if (e->epfd >= 0) {
        close(e->epfd);
        e->epfd = -1;
    }
    if (e->evfd >= 0) {
        close(e->evfd);
        e->evfd = -1;
    }
#else
    (void)e;
#endif
}

#if BGD_HAVE_TIMED_WAIT
/* The thread's epoll, with the eventfd that wakes it under key 0. */
static apr_status_t bgd_engine_poller_open(bgd_engine_t *e)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->epfd < 0 || e->evfd < 0
        || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev) != 0) {
        apr_status_t rv = errno;
        bgd_engine_poller_close(e);
        return rv;
    }
    return APR_SUCCESS;
}
#endif

/* The stream table allocates whenever it reaches a new size, under the
 * engine's mutex only: the engines of a child (and pchild's other users)
 * do not exclude each other, so it has a pool and an allocator of its
 * own. */
static apr_status_t bgd_engine_streams_create(bgd_engine_t *e,
                                              apr_pool_t *pchild)
{
    apr_allocator_t *allocator;
    apr_status_t rv = apr_allocator_create(&allocator);

    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = apr_pool_create_ex(&e->pool, pchild, NULL, allocator);
    if (rv != APR_SUCCESS) {
        apr_allocator_destroy(allocator);
        return rv;
    }
    apr_allocator_owner_set(allocator, e->pool);
    e->streams = apr_hash_make(e->pool);
    return APR_SUCCESS;
}

/* What a child without any engine thread loses. */
#define BGD_NO_ENGINE ": slow-read rules are only checked when a client " \
    "makes progress, and every wait for a socket or a pulse is a wake-up " \
    "through the MPM"

/* Sets up engine e of this child and starts its thread; on failure, logs
 * why and leaves nothing open.  A child runs the engines that started. */
static apr_status_t bgd_engine_start(bgd_engine_t *e, int index,
                                     int pace_size, apr_pool_t *pchild,
                                     server_rec *s)
{
    apr_status_t rv;

    e->index = index;
    e->epfd = e->evfd = -1;
    e->pace_size = pace_size;
    e->heap = apr_palloc(pchild, sizeof(*e->heap) * (apr_size_t)pace_size);
#if BGD_HAVE_TIMED_WAIT
    if ((rv = bgd_engine_poller_open(e)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "BGD025: cannot create the poller of engine thread %d "
                     "of %d%s", index + 1, bgd_engine_threads,
                     index ? "" : BGD_NO_ENGINE);
        return rv;
    }
#endif
    rv = bgd_engine_streams_create(e, pchild);
    if (rv == APR_SUCCESS) {
        rv = apr_thread_mutex_create(&e->mutex, APR_THREAD_MUTEX_DEFAULT,
                                     pchild);
    }
#if !BGD_HAVE_TIMED_WAIT
    if (rv == APR_SUCCESS) {
        rv = apr_thread_cond_create(&e->wake, pchild);
    }
#endif
    if (rv == APR_SUCCESS) {
        rv = apr_thread_cond_create(&e->write_done, pchild);
    }
    if (rv == APR_SUCCESS) {
        rv = apr_thread_create(&e->thread, NULL, bgd_engine_thread, e,
                               pchild);
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "BGD017: cannot start engine thread %d of %d%s",
                     index + 1, bgd_engine_threads,
                     index ? "" : BGD_NO_ENGINE);
        bgd_engine_poller_close(e);
        e->thread = NULL;
    }
    return rv;
}

/* Before pchild's other cleanups: the threads hand their connections
 * back, which by now only the pools' cleanups will see. */
static apr_status_t bgd_engines_stop(void *data)
{
    int i, n = bgd_engine_count;
    apr_status_t rv;

    (void)data;
    bgd_engine_count = 0;
    for (i = 0; i < n; i++) {
        bgd_engine_t *e = &bgd_engines[i];
        apr_thread_mutex_lock(e->mutex);
        e->exit = 1;
        bgd_engine_wake_locked(e);
        apr_thread_mutex_unlock(e->mutex);
    }
    for (i = 0; i < n; i++) {
        apr_thread_join(&rv, bgd_engines[i].thread);
        bgd_engine_poller_close(&bgd_engines[i]);
    }
    return APR_SUCCESS;
}

/* --------------------------------------------------------- finishing */

static void bgd_correct_bytes_sent(bgd_job_t *job)
{
    /* r->bytes_sent was counted when the body went through the protocol
     * filters; take back what never reached the connection filters. */
    apr_off_t unsent = job->captured - job->sent;
    if (unsent > 0) {
        job->r->bytes_sent = job->r->bytes_sent > unsent
                             ? job->r->bytes_sent - unsent : 0;
    }
}

static void bgd_uncount_paced(bgd_job_t *job)
{
    if (job->counted_paced) {
        job->counted_paced = 0;
        apr_atomic_dec32(&bgd_paced_jobs);
    }
}

/* Outcomes of the slow-read rules (the deadlines of bgd_deadline()). */
static int bgd_outcome_dropped(const char *outcome)
{
    return !strcmp(outcome, "min-rate") || !strcmp(outcome, "idle-timeout")
           || !strcmp(outcome, "timeout") || !strcmp(outcome, "max-time");
}

static void bgd_account_end(bgd_job_t *job)
{
    bgd_uncount_paced(job);
    if (bgd_slot(job->slot)) {
        apr_atomic_set32(&bgd_slot(job->slot)->counted, 0);
    }
    if (!job->outcome) {
        job->outcome = job->body_broken ? "backend-error" : "complete";
    }
    job->finished = apr_time_now();
    apr_table_setn(job->r->notes, "bgdeliver", job->outcome);
    apr_table_setn(job->r->notes, "bgdeliver-visits",
                   apr_psprintf(job->r->pool, "%u", job->slices));
    if (!strcmp(job->outcome, "complete")) {
        bgd_count(&bgd_table->completed, 1);
    }
    else if (bgd_outcome_dropped(job->outcome)) {
        bgd_count(&bgd_table->dropped, 1);
    }
    else {
        bgd_count(&bgd_table->aborted, 1);
    }
    if (job->sent > 0) {
        bgd_count(&bgd_table->bytes, (apr_uint64_t)job->sent);
    }
    bgd_slot_update(job, job->finished);
}

/* A dropped slow reader, or a response that can no longer be right: reset
 * the connection, so that neither the kernel's socket buffers nor the
 * client's patience keep what is left alive.  Unless the socket still
 * holds bytes of an earlier response (pipelined requests), which was
 * logged complete: a reset would throw them away, a close lets them out.
 * (This response alone may fill the queue a little beyond what was sent
 * of it: TLS records.) */
static void bgd_reset_on_close(bgd_job_t *job)
{
    struct linger lg;
    int fd = bgd_conn_fd(job->c);

    if (fd < 0
        || bgd_job_socket_queued(job) > job->sent + job->sent / 64 + 512) {
        return;
    }
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static int bgd_outcome_resets(const char *outcome)
{
    return bgd_outcome_dropped(outcome) || !strcmp(outcome, "file-changed");
}

/* A delivery that did not complete left a response shorter than its
 * headers promised: the connection must not carry another one, and the
 * log must say so.  Whoever drove it (the MPM, or a worker that paced
 * it) ends it here. */
static void bgd_end_incomplete(bgd_job_t *job)
{
    if (bgd_outcome_resets(job->outcome)) {
        bgd_reset_on_close(job);
    }
    /* An HTTP/2 stream whose backend broke off has passed mod_proxy's
     * error bucket down with its body: mod_http2 resets the stream for
     * it, and counts %O as its connection takes the stream's output,
     * which an aborted stream connection never reports (it logged 0). */
    if (!job->c->master || strcmp(job->outcome, "backend-error")) {
        job->c->aborted = 1;
    }
    job->c->keepalive = AP_CONN_CLOSE;
    bgd_correct_bytes_sent(job);
}

/* bc takes or leaves its job: kept on the child's list meanwhile. */
static void bgd_live_set(bgd_conn_t *bc, bgd_job_t *job)
{
    bc->job = job;
    if (!bgd_live_mutex || (job != NULL) == bc->live_listed) {
        return;
    }
    apr_thread_mutex_lock(bgd_live_mutex);
    if (job) {
        bc->live_prev = NULL;
        bc->live_next = bgd_live_head;
        if (bgd_live_head) {
            bgd_live_head->live_prev = bc;
        }
        bgd_live_head = bc;
    }
    else {
        if (bc->live_prev) {
            bc->live_prev->live_next = bc->live_next;
        }
        else {
            bgd_live_head = bc->live_next;
        }
        if (bc->live_next) {
            bc->live_next->live_prev = bc->live_prev;
        }
        bc->live_next = bc->live_prev = NULL;
    }
    bc->live_listed = job != NULL;
    apr_thread_mutex_unlock(bgd_live_mutex);
}

/* End the request of a delivery the MPM drove: log it and give the
 * connection back (keep-alive when complete, lingering close otherwise).
 * r and job are gone afterwards. */
static void bgd_finish_async(bgd_conn_t *bc)
{
    bgd_job_t *job = bc->job;
    request_rec *r = job->r;

    bgd_timed_wait_release(bc);
    bgd_account_end(job);
    if (strcmp(job->outcome, "complete")) {
        bgd_end_incomplete(job);
    }
    apr_brigade_cleanup(job->queue);
    bgd_live_set(bc, NULL);
    /* The body was discarded and EOS passed: this only logs the request
     * (EOR) after everything before it was written, and sets the state
     * for write completion and keep-alive.  It also ends the request's
     * time on this worker's scoreboard entry (mod_status' duration),
     * which was not the one that started it: the hand-off ended that
     * one's (SUSPENDED), and this worker's start must be its own now, not
     * its last request's or 0 (a duration of the whole epoch). */
    if (ap_extended_status) {
        ap_time_process_request(job->c->sbh, START_PREQUEST);
    }
    ap_finalize_request_protocol(r);
    ap_process_request_after_handler(job->top);
}

/* A slow-read rule ends the delivery: its outcome, said once (BGD004). */
static void bgd_drop(bgd_job_t *job, const char *reason)
{
    apr_time_t age = apr_time_now()
                     - (job->handoff ? job->handoff : job->r->request_time);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, job->r,
                  "BGD004: dropping slow client %s after %" APR_OFF_T_FMT
                  " of %" APR_OFF_T_FMT " bytes in %" APR_TIME_T_FMT
                  " ms: %s", job->r->useragent_ip, job->sent,
                  job->eos ? job->captured : (apr_off_t)-1,
                  apr_time_as_msec(age), reason);
    job->outcome = reason;
}

/* -------------------------------------------------------- async driver */

/* The longest a parked connection waits before a worker looks at it: the
 * MPM bounds every wait by Timeout, so wake up in between. */
static apr_interval_time_t bgd_wait_bound(const bgd_job_t *job)
{
    apr_interval_time_t max_wait = job->r->server->timeout / 2;

    return max_wait > 0 ? max_wait : apr_time_from_sec(30);
}

/* The engine thread's visits need the duplicate of the socket as an APR
 * socket, for the connection and the core output filter
 * (bgd_engine_pump()): made once per connection, given the duplicate's
 * descriptor at every park (a delivery's end closes it).  It gets the
 * connection's timeout: APR would otherwise clear O_NONBLOCK on the file
 * description that it shares with the socket. */
static apr_status_t bgd_engine_socket(bgd_conn_t *bc)
{
    apr_interval_time_t timeout;
    apr_status_t rv;

    rv = apr_socket_timeout_get(ap_get_conn_socket(bc->c), &timeout);
    if (rv == APR_SUCCESS) {
        rv = apr_os_sock_put(&bc->dup_socket, &bc->sock_dup, bc->c->pool);
    }
    if (rv == APR_SUCCESS) {
        rv = apr_socket_timeout_set(bc->dup_socket, timeout);
    }
    return rv;
}

static void bgd_park(bgd_conn_t *bc, bgd_pump_e what)
{
    conn_rec *c = bc->c;
    bgd_job_t *job = bc->job;
    const char *reason;
    apr_time_t deadline;
    apr_status_t rv;
    int engine_writes;

    /* Registered nowhere since bgd_drive() took it back: free to go to
     * another engine. */
    bc->engine = bgd_engine_pick();
    c->cs->state = CONN_STATE_ASYNC_WAITIO;
    /* Bytes the core holds are no obstacle: the thread's pump has the
     * core write them first, as a worker's does. */
    engine_writes = bgd_engine_can_take(job) != BGD_ENGINE_NONE;
    if (what != BGD_PUMP_WAIT_TIMER && engine_writes) {
        /* The engine thread waits for the socket and writes: the MPM only
         * sees a timed wait, bounded (bgd_wait_bound()) and by the
         * slow-read deadline, which the worker that gets the connection
         * then checks. */
        apr_time_t due = apr_time_now() + bgd_wait_bound(job);

        deadline = bgd_deadline(job, &reason);
        if (deadline && deadline < due) {
            due = deadline;
        }
        if (bgd_timed_wait_arm(bc, due) == APR_SUCCESS) {
            c->cs->sense = CONN_SENSE_WANT_READ;
            /* Last: from here on the engine thread may write. */
            if (bgd_engine_socket(bc) == APR_SUCCESS
                && bgd_stream_add(bc)) {
                return;
            }
            bgd_timed_wait_disarm(bc);
        }
        /* Out of descriptors, most likely: the MPM waits instead. */
    }
    if (what == BGD_PUMP_WAIT_TIMER) {
        apr_time_t due = job->next_tick, now = apr_time_now();
        apr_interval_time_t max_wait = bgd_wait_bound(job);
        int paced_here = engine_writes;

        /* The engine thread writes the pulses meanwhile, and wakes the
         * connection earlier when it needs a worker; the slow-read
         * deadline (BgDeliverMaxTime above all: a paced client reads at
         * the line's rate) wakes it too. */
        if (paced_here || due - now > max_wait) {
            due = now + max_wait;
        }
        deadline = bgd_deadline(job, &reason);
        if (deadline && deadline < due) {
            due = deadline;
        }
        rv = bgd_timed_wait_arm(bc, due);
        if (rv == APR_SUCCESS) {
            c->cs->sense = CONN_SENSE_WANT_READ;
            /* Last: from here on the engine thread may write. */
            if (paced_here
                && (bgd_engine_socket(bc) != APR_SUCCESS
                    || !bgd_pace_add(bc, job->next_tick))) {
                bgd_timed_wait_disarm(bc);
                rv = bgd_timed_wait_arm(bc, job->next_tick);
            }
        }
        if (rv == APR_SUCCESS) {
            if (job->next_tick - now >= BGD_GONE_WATCH_MIN
                && !bc->half_closed) {
                bgd_gone_watch(bc);
            }
            return;
        }
        /* Out of descriptors, most likely: better unpaced than stuck. */
        if (!job->unarmed) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, job->r,
                          "BGD018: cannot arm a timed wait; delivering the "
                          "rest of this response unpaced");
            job->unarmed = 1;
        }
        job->drain = 1;
        if (job->producer && !job->eos && job->next_tick > now) {
            /* A producer with nothing ready has no unpaced way out: the
             * socket is writable, so the MPM would hand the connection
             * straight back and the producer be asked again at once,
             * spinning a worker until Timeout.  This worker waits for
             * its next turn instead (at most BGD_PRODUCER_RETRY_MAX), as
             * under prefork. */
            apr_sleep(job->next_tick - now < BGD_PRODUCER_RETRY_MAX
                      ? job->next_tick - now : BGD_PRODUCER_RETRY_MAX);
        }
    }
    c->cs->sense = CONN_SENSE_WANT_WRITE;
    deadline = bgd_deadline(job, &reason);
    if (deadline) {
        bgd_wd_list(bc, deadline, reason);
    }
}

/* After a hang-up seen during a timed wait: whether the client is gone
 * (a reset, or the end of its stream with nothing before it) rather than
 * only done sending, with a pipelined request the core or mod_ssl still
 * holds.  The test of ap_check_pipeline(), through the whole input chain:
 * a TLS close_notify is an end too. */
static int bgd_client_left(conn_rec *c)
{
    apr_bucket_brigade *bb = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_status_t rv = ap_get_brigade(c->input_filters, bb,
                                     AP_MODE_SPECULATIVE, APR_NONBLOCK_READ,
                                     1);
    int left = rv == APR_SUCCESS ? APR_BRIGADE_EMPTY(bb)
                                 : !APR_STATUS_IS_EAGAIN(rv);

    apr_brigade_destroy(bb);
    return left;
}

/* A worker's visit to a delivery that it got back from the MPM: the
 * client's hang-up and the slow-read rules first, then the pump. */
static bgd_pump_e bgd_visit(bgd_conn_t *bc, const char *reason,
                            apr_time_t now)
{
    bgd_job_t *job = bc->job;
    apr_time_t deadline, start;

    if (bc->hangup_seen) {
        bc->hangup_seen = 0;
        if (bgd_client_left(bc->c)) {
            bc->c->aborted = 1;
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, job->r, "BGD037: the "
                          "client left while the delivery waited");
        }
        else {
            /* It only closed its side after another request: both are
             * answered, and the end of stream is not watched again. */
            bc->half_closed = 1;
        }
    }
    if (!reason && !bc->c->aborted) {
        reason = bgd_rule_broken(job, now, &deadline);
    }
    if (reason) {
        bgd_drop(job, reason);
        return BGD_PUMP_ERROR;
    }
    if (bgd_draining()) {
        job->drain = 1;
    }
    start = apr_time_now();
    return bgd_pump(job, start, start);
}

static int bgd_drive(bgd_conn_t *bc)
{
    bgd_job_t *job = bc->job;
    apr_time_t t0 = apr_time_now();
    const char *reason;
    bgd_pump_e what;

    reason = bgd_wd_unlist(bc);
    bgd_timed_wait_disarm(bc);
    if (bc->engine_ended) {
        /* The engine thread's pump ended the delivery, and logged how. */
        bc->engine_ended = 0;
        what = bc->engine_end;
    }
    else {
        what = bgd_visit(bc, reason, t0);
    }
    job->worker_time += apr_time_now() - t0;
    job->slices++;

    switch (what) {
    case BGD_PUMP_DONE:
    case BGD_PUMP_ERROR:
        if (what == BGD_PUMP_ERROR && !job->outcome) {
            job->outcome = "aborted";
        }
        bgd_finish_async(bc);
        return OK;
    default:
        bgd_slot_update(job, apr_time_now());
        bgd_park(bc, what);
        return OK;
    }
}

/* ------------------------------------------------- paced in the worker */

/* Where the MPM cannot wait for us (prefork, worker, HTTP/2 streams) a
 * paced response is paced here, on the handler's thread, like
 * mod_ratelimit: the same pump, with sleeping and blocking flushes, and
 * the same slow-read rules (BgDeliverMaxTime bounds what an .htaccess
 * DialupRate can hold a worker for). */
static int bgd_deliver_in_worker(bgd_job_t *job)
{
    apr_status_t rv;

    for (;;) {
        bgd_pump_e what;
        apr_time_t t0 = apr_time_now(), deadline;
        const char *reason;

        if (bgd_draining()) {
            job->drain = 1;
        }
        what = bgd_pump(job, t0, t0);
        job->worker_time += apr_time_now() - t0;
        job->slices++;
        bgd_slot_update(job, apr_time_now());
        if (what == BGD_PUMP_DONE || what == BGD_PUMP_ERROR) {
            break;
        }
        t0 = apr_time_now();
        reason = bgd_rule_broken(job, t0, &deadline);
        if (reason) {
            bgd_drop(job, reason);
            break;
        }
        if (what == BGD_PUMP_WAIT_TIMER) {
            apr_time_t until = deadline && deadline < job->next_tick
                               ? deadline : job->next_tick;
            if (until > t0) {
                apr_sleep(until - t0);
            }
        }
        else if (what == BGD_PUMP_WAIT_SOCKET) {
            /* The wait for the socket, on this thread (the slice brigade
             * is empty between passes). */
            rv = bgd_flush_blocking(job);
            if (rv != APR_SUCCESS) {
                job->outcome = "aborted";
                break;
            }
        }
    }
    bgd_account_end(job);
    if (strcmp(job->outcome, "complete")) {
        bgd_end_incomplete(job);
    }
    apr_brigade_cleanup(job->queue);
    return OK;
}

/* --------------------------------------------------------- job set-up */

static apr_status_t bgd_job_cleanup(void *data)
{
    bgd_job_t *job = data;
    /* Runs when r->pool goes, after the log hooks (the EOR's cleanup was
     * registered later, so it ran first): they could still ask
     * bgdeliver_request_info() about this job. */
    bgd_slot_release(job);
    bgd_uncount_paced(job);
    if (job->bc && job->bc->job == job) {
        bgd_live_set(job->bc, NULL);
    }
    return APR_SUCCESS;
}

static bgd_job_t *bgd_job_get(request_rec *r)
{
    bgd_job_t *job = bgd_req_job(r);
    if (!job) {
        job = apr_pcalloc(r->pool, sizeof(*job));
        job->r = r;
        job->top = r;
        job->c = r->connection;
        job->slot = -1;
        job->conf = bgd_resolved_conf(r);
        ap_set_module_config(r->request_config, &bgdeliver_module, job);
    }
    return job;
}

/* Far beyond any line, yet small enough that the schedule's arithmetic
 * (bytes = rate x microseconds) cannot overflow in a day. */
#define BGD_MAX_PACE_RATE     1e12
#define BGD_MAX_PACE_BURST    ((apr_off_t)1 << 40)
#define BGD_MAX_PACE_LATENCY  apr_time_from_sec(3600)
#define BGD_MAX_PACE_PULSE    apr_time_from_sec(60)

/* What is wrong with a pacing policy handed to the API, or NULL.  The
 * comparisons are written so that NaN fails them too. */
static const char *bgd_pacing_invalid(const bgdeliver_pacing_t *p)
{
    if (!(p->rate == 0 || (p->rate >= 1 && p->rate <= BGD_MAX_PACE_RATE))) {
        return "rate must be 0 (unpaced) or from 1 to 1e12 bytes per second";
    }
    if (p->latency < 0 || p->latency > BGD_MAX_PACE_LATENCY) {
        return "latency must be from 0 to 3600 seconds";
    }
    if (p->pulse < 0 || p->pulse > BGD_MAX_PACE_PULSE) {
        return "pulse must be from 0 (the default) to 60 seconds";
    }
    if (p->burst < 0 || p->burst > BGD_MAX_PACE_BURST) {
        return "burst must be from 0 to 1 TB";
    }
    return NULL;
}

/* Takes a caller's pacing policy; APR_EINVAL (logged) for one out of
 * range, which the engine would otherwise never finish sending (an
 * infinite or NaN rate, a burst that overflows the schedule) or send a
 * byte per Timeout of. */
static apr_status_t bgd_job_set_pacing(bgd_job_t *job,
                                       const bgdeliver_pacing_t *p)
{
    const char *invalid = bgd_pacing_invalid(p);

    if (invalid) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, job->r,
                      "BGD035: bgdeliver API: pacing refused: %s", invalid);
        return APR_EINVAL;
    }
    job->pacing = *p;
    job->pacing.label = p->label ? apr_pstrdup(job->r->pool, p->label) : NULL;
    return APR_SUCCESS;
}

/* The first request of r's internal-redirect chain, if our wrapper still
 * runs its handler: per-directory mod_rewrite and a CGI's local Location:
 * redirect from inside the handler, and the wrapper can then suspend the
 * first request for r's delivery (bgd_capture_end()); only the first
 * request's SUSPENDED reaches the MPM, since ap_internal_redirect() takes
 * any other status as an error.  An ErrorDocument's redirect comes after
 * the wrapper returned: NULL. */
static request_rec *bgd_redirect_top(request_rec *r)
{
    request_rec *top = r;
    const bgd_job_t *job;

    while (top->prev) {
        top = top->prev;
    }
    job = bgd_req_job(top);
    return job && job->capturing && !job->in_worker ? top : NULL;
}

/* Can the MPM drive this request's delivery for us? */
static int bgd_async_possible(request_rec *r)
{
    return bgd_mpm_can_waitio && !r->connection->master
           && (!r->prev || bgd_redirect_top(r))
           && !r->main && r->connection->cs
           && !apr_atomic_read32(&bgd_child_stopping_flag);
}

/* Decide before the handler runs whether this response may take a slot
 * in *mode (1: asynchronous, 2: in the worker; it may become 2): returns
 * OK to capture, DECLINED to deliver normally, or an HTTP status to refuse
 * (BgDeliverOverflow reject). */
static int bgd_admit(request_rec *r, bgd_job_t *job, int *mode)
{
    int slot = bgd_slot_claim(r, job, 1);
    const bgd_dir_conf_t *conf = job->conf;
    const char *why;

    if (slot >= 0) {
        job->slot = slot;
        return OK;
    }
    why = slot == -2 ? "BgDeliverMaxPerClient" : "BgDeliverMaxDeliveries";
    if (conf->overflow == BGD_OVERFLOW_REJECT) {
        bgd_count(&bgd_table->rejected, 1);
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "BGD002: %s reached for %s; refusing with 503 "
                      "(BgDeliverOverflow reject)", why, r->useragent_ip);
        if (conf->retry_after > 0) {
            apr_table_setn(r->err_headers_out, "Retry-After",
                           apr_itoa(r->pool, conf->retry_after));
        }
        return HTTP_SERVICE_UNAVAILABLE;
    }
    if (slot == -2 && bgd_job_timed(job)
        && (slot = bgd_slot_claim(r, job, 0)) >= 0) {
        /* Past the client's cap the fallback is the worker, and a paced
         * response is paced there, as where the MPM cannot wait for us
         * (not sent at full speed under its line's name); in a slot all
         * the same, for the status page and the totals. */
        job->slot = slot;
        *mode = 2;
        if (bgd_fallback_counted(job)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "BGD003: %s reached for %s; pacing in the "
                          "worker (BgDeliverOverflow fallback)", why,
                          r->useragent_ip);
        }
        return OK;
    }
    if (bgd_fallback(r, job)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "BGD003: %s reached for %s; delivering in the "
                      "foreground (BgDeliverOverflow fallback)", why,
                      r->useragent_ip);
    }
    return DECLINED;
}

/* The event MPM gives each connection an allocator of its own that keeps
 * up to MaxMemFree of freed blocks for the connection's next request.  A
 * handler whose output is captured frees buffer after buffer (a CGI's pipe
 * reads, memory moved to the spool); the delivery that follows may last
 * long, and needs a buffer or two at most.  At the hand-off, the free
 * blocks go back to malloc, for whichever connection a worker serves next
 * (the delivery's passes get theirs there, too).  APR has no call
 * that empties an allocator's free list, but blocks taken out of it and
 * handed back while the limit is one page go to malloc. */
static void bgd_conn_release_free(conn_rec *c)
{
    apr_allocator_t *allocator = apr_pool_allocator_get(c->pool);
    apr_memnode_t *taken[BGD_RELEASE_BLOCKS];
    int i;

    if (!allocator) {
        return;
    }
    for (i = 0; i < BGD_RELEASE_BLOCKS; i++) {
        taken[i] = apr_allocator_alloc(allocator, APR_BUCKET_BUFF_SIZE);
    }
    apr_allocator_max_free_set(allocator, 1);
    for (i = 0; i < BGD_RELEASE_BLOCKS; i++) {
        if (taken[i]) {
            apr_allocator_free(allocator, taken[i]);
        }
    }
    apr_allocator_max_free_set(allocator, ap_max_mem_free);
}

/* At the hand-off, the bytes of the response that are still in buffers of
 * the connection's allocator (a file's headers) move to blocks of the
 * child-wide one (bgd_read_run()), before bgd_conn_release_free() gives the
 * connection's free blocks back: freed once sent, such a buffer would stay
 * in the connection's allocator to the end of the delivery. */
static void bgd_queue_off_connection(bgd_job_t *job)
{
    apr_bucket *b, *next;

    if (!bgd_blocks) {
        return;
    }
    for (b = APR_BRIGADE_FIRST(job->queue);
         b != APR_BRIGADE_SENTINEL(job->queue); b = next) {
        next = APR_BUCKET_NEXT(b);
        if (APR_BUCKET_IS_HEAP(b) && b->length
            && b->length <= BGD_SLICE_BYTES
            && ((apr_bucket_heap *)b->data)->free_func == apr_bucket_free) {
            /* On failure it stays where it is, as it was before. */
            (void)bgd_read_run(b, b, b->length);
        }
    }
}

/* Start capturing r's response.  Returns OK when capturing, DECLINED to
 * let the response go the ordinary way, or an HTTP status. */
static int bgd_capture_begin(request_rec *r, bgd_job_t *job)
{
    int timed = bgd_job_timed(job);
    /* Timed waits without a worker need timerfd (Linux); elsewhere a
     * paced response is paced in the worker. */
    int async = bgd_async_possible(r) && (!timed || BGD_HAVE_TIMED_WAIT);
    int rv, mode;

    if (!async && !timed) {
        if (job->requested || job->conf->enabled == 1) {
            bgd_fallback(r, job);
        }
        return DECLINED;
    }
    if (r->header_only && !timed) {
        /* HEAD: no body to deliver, so no slot (and no 503 at a cap); a
         * paced one's headers are on the emulated line, though. */
        return DECLINED;
    }
    /* An internal redirect's earlier requests deliver nothing of their
     * own any more: their slots must not count against this client's
     * BgDeliverMaxPerClient next to the one claimed below. */
    {
        request_rec *prev;
        for (prev = r->prev; prev; prev = prev->prev) {
            bgd_job_t *superseded = bgd_req_job(prev);
            if (superseded && !superseded->handoff) {
                bgd_slot_release(superseded);
            }
        }
    }
    if (bgd_chain_sleeps(r)) {
        bgd_fallback_chain_sleeps(r, job);
        return DECLINED;
    }
    mode = async ? 1 : 2;
    rv = bgd_admit(r, job, &mode);
    if (rv != OK) {
        return rv;
    }
    async = mode == 1;
    job->started = 1;
    job->in_worker = !async;
    if (bgd_pool_handles_full(r->connection)) {
        /* Announced in this response's headers (ap_set_keepalive()),
         * which are yet to be made. */
        r->connection->keepalive = AP_CONN_CLOSE;
    }
    if (async && r->prev) {
        job->top = bgd_redirect_top(r);
    }
    job->tls = ap_ssl_conn_is_ssl(r->connection) ? 1 : 0;
    job->queue = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    job->slice = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    job->files = apr_array_make(r->pool, 1, sizeof(bgd_file_ref_t));
    job->capture = ap_add_output_filter_handle(bgd_capture_filter_handle,
                                               job, r, r->connection);
    job->capturing = 1;
    apr_pool_cleanup_register(r->pool, job, bgd_job_cleanup,
                              apr_pool_cleanup_null);
    return OK;
}

/* Run a producer to the end in this thread, sleeping while it has nothing
 * (the worker is held anyway): for a response the engine does not take.
 * Returns what the handler returns; before any output, ap_die() turns
 * AP_FILTER_ERROR into a 500. */
static int bgd_run_producer_here(request_rec *r,
                                 bgdeliver_producer_fn *producer, void *baton)
{
    apr_bucket_brigade *tmp = apr_brigade_create(r->pool,
                                                 r->connection->bucket_alloc);
    apr_interval_time_t retry = 0;
    apr_time_t idle_start = 0;
    apr_status_t st;
    const char *why = NULL;
    /* A sub-request's headers are its main request's, which may be out
     * although the sub-request sent nothing. */
    const request_rec *top = bgd_main_request(r);
    int last, failed = 0;

    do {
        st = producer(r, baton, tmp, BGD_SLICE_BYTES);
        last = !APR_BRIGADE_EMPTY(tmp)
               && APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(tmp));
        if (st != APR_SUCCESS) {
            why = "the producer failed";
            failed = 1;
        }
        else if (bgd_brigade_has_nothing(tmp)) {
            apr_interval_time_t wait = bgd_producer_backoff(
                r, apr_time_now(), &idle_start, &retry);
            if (wait) {
                apr_sleep(wait);
            }
            else {
                st = APR_TIMEUP;        /* logged: BGD033 */
                why = "the producer had nothing for Timeout";
            }
        }
        else {
            st = ap_pass_brigade(r->output_filters, tmp);
            why = "writing to the client failed";
            retry = 0;
            idle_start = 0;
        }
        apr_brigade_cleanup(tmp);
    } while (st == APR_SUCCESS && !last && !r->connection->aborted);
    if (st != APR_SUCCESS && top->sent_bodyct) {
        /* The headers are out: the client must see the body end short
         * (no last chunk, the connection closed), never a complete one. */
        ap_log_rerror(APLOG_MARK, failed ? APLOG_ERR : APLOG_DEBUG, st, r,
                      "BGD020: delivery ends after %" APR_OFF_T_FMT
                      " body bytes: %s", r->bytes_sent, why);
        if (top != r) {
            /* The main request's body may still be on its way (captured
             * by us, or queued in the core): mod_proxy's mark of a broken
             * backend lets it all out, then its HTTP filters leave the
             * body unended and close the connection. */
            conn_rec *c = r->connection;
            apr_brigade_cleanup(tmp);
            APR_BRIGADE_INSERT_TAIL(tmp, ap_bucket_error_create(
                                        HTTP_BAD_GATEWAY, NULL, c->pool,
                                        c->bucket_alloc));
            ap_pass_brigade(r->output_filters, tmp);
            apr_brigade_cleanup(tmp);
        }
        else {
            r->connection->keepalive = AP_CONN_CLOSE;
            r->connection->aborted = 1;
        }
    }
    else if (failed) {
        /* As when the engine runs it; the caller's ap_die() answers 500. */
        bgd_log_producer_failed(r, st);
    }
    return st == APR_SUCCESS ? OK : AP_FILTER_ERROR;
}

/* Whether an internal redirect made under r's wrapper (by its handler,
 * or by the error page produced below) left its response waiting for the
 * MPM (see bgd_redirect_top()): then r, the first request, is the one to
 * suspend, and that response is the one the client gets, whatever r's
 * handler says. */
static int bgd_redirect_pending(request_rec *r, bgd_job_t *job)
{
    bgd_conn_t *bc = ap_get_module_config(r->connection->conn_config,
                                          &bgdeliver_module);

    if (!bc || !bc->job || bc->job->top != r || bc->job == job) {
        return 0;
    }
    job->capturing = 0;
    if (!APR_BRIGADE_EMPTY(job->queue)) {
        bgd_pass_foreground(job, job->queue);
    }
    bgd_slot_release(job);
    return 1;
}

/* The handler is done (rv is its result): hand the captured response to
 * the MPM (SUSPENDED), or deliver it here.  Returns what the handler hook
 * must return. */
static int bgd_capture_end(request_rec *r, bgd_job_t *job, int rv)
{
    conn_rec *c = r->connection;
    bgd_conn_t *bc;

    if (bgd_redirect_pending(r, job)) {
        return SUSPENDED;
    }
    if (rv == DONE) {
        rv = OK;        /* the handler sent the whole response itself */
    }
    /* A paced request's error page is part of the emulated line too:
     * produce it now, into the capture, as the core would right after
     * us.  A local ErrorDocument is a redirect made here, under our
     * wrapper. */
    if (rv != OK && ap_is_HTTP_VALID_RESPONSE(rv) && !job->captured
        && !job->foreground && bgd_job_timed(job)) {
        ap_die(rv, r);
        if (bgd_redirect_pending(r, job)) {
            return SUSPENDED;
        }
        rv = OK;
    }

    if (rv == OK && !job->eos && !job->producer && !job->foreground) {
        /* Handlers may leave the EOS to the core; send it here so that it
         * is captured too (this also reads away any request body). */
        ap_finalize_request_protocol(r);
    }
    job->capturing = 0;
    job->body_at_capture = r->bytes_sent;
    if (!job->foreground && bgd_chain_sleeps(r)) {
        bgd_fallback_chain_sleeps(r, job);      /* set after the last pass */
        job->foreground = 1;
    }

    if (rv != OK || job->foreground || c->aborted
        || (!job->eos && !job->producer)
        || (!bgd_job_timed(job) && job->eos
            && job->captured - job->sent < job->conf->min_size)) {
        /* Error, redirect, or too small to be worth it: what was captured
         * goes out now, the ordinary way; so does a producer's body (its
         * handler set rate-limit itself, say). */
        if (!APR_BRIGADE_EMPTY(job->queue)) {
            bgd_pass_foreground(job, job->queue);
        }
        if (job->outcome) {
            /* Dropped by a slow-read rule while the handler ran: logged
             * and counted as a delivery that was dropped; one that had
             * fallen back to the foreground is counted as that already. */
            if (job->fell_back) {
                apr_table_setn(r->notes, "bgdeliver", job->outcome);
            }
            else {
                bgd_count(&bgd_table->started, 1);
                bgd_account_end(job);
            }
            bgd_correct_bytes_sent(job);
        }
        bgd_slot_release(job);
        if (rv == OK && job->producer && !c->aborted) {
            bgdeliver_producer_fn *producer = job->producer;
            job->producer = NULL;
            return bgd_run_producer_here(r, producer, job->baton);
        }
        return rv;
    }

    job->bodiless = r->header_only || r->status == HTTP_NOT_MODIFIED
                    || r->status == HTTP_NO_CONTENT;
    job->handoff = apr_time_now();
    /* The idle clock of an unpaced response runs on from its capture
     * (bgd_capture_rules()); its pace_start is where that clock stands. */
    bgd_rules_start(job, job->handoff, job->capture_watched);
    job->rate_mark_time = job->handoff;
    job->pace_start = bgd_job_timed(job) ? bgd_pace_origin(job)
                                         : job->last_progress;
    bgd_count(&bgd_table->started, 1);
    if (bgd_slot(job->slot)) {
        bgd_slot_t *slot = bgd_slot(job->slot);
        apr_atomic_set32(&slot->counted, 1);
        bgd_slot_begin_write(slot);
        slot->mode = job->in_worker ? 2 : 1;
        bgd_slot_end_write(slot);
    }

    if (job->in_worker) {
        return bgd_deliver_in_worker(job);
    }

    /* The request body must be gone before the connection is handed to
     * the MPM: finishing the request later must not block reading it. */
    ap_discard_request_body(r);

    job->background = 1;
    bgd_queue_off_connection(job);
    bgd_conn_release_free(c);
    if (job->pacing.rate > 0 && !bgd_engine_can_take(job)) {
        /* Its pulses are wake-ups through the MPM. */
        job->counted_paced = 1;
        apr_atomic_inc32(&bgd_paced_jobs);
    }
    bc = ap_get_module_config(c->conn_config, &bgdeliver_module);
    job->bc = bc;
    bgd_live_set(bc, job);
    bc->engine_ended = 0;
    if (job->top != r) {
        /* An internal redirect's request returns to ap_internal_redirect(),
         * which finishes it (ap_die() with OK), and so does every request
         * between it and the first, whose wrapper suspends.  The EOS is
         * captured already, or a producer's is yet to come: none of them
         * may send one down the chain now. */
        request_rec *between;
        for (between = r; between != job->top; between = between->prev) {
            between->eos_sent = 1;
        }
        return OK;
    }
    return SUSPENDED;
}

/* ------------------------------------------------------- optional fns */

static apr_status_t bgd_api_request_background(request_rec *r,
                                               const bgdeliver_pacing_t *p)
{
    bgd_job_t *job;
    if (r->main || bgd_status_page(r)) {
        return APR_EINVAL;
    }
    job = bgd_job_get(r);
    if (!p) {
        /* Full speed, whatever an earlier call asked for. */
        memset(&job->pacing, 0, sizeof(job->pacing));
    }
    else if (bgd_job_set_pacing(job, p) != APR_SUCCESS) {
        return APR_EINVAL;
    }
    job->requested = 1;
    return APR_SUCCESS;
}

/* A body handed over whole, known to be below BgDeliverMinSize, never
 * needs the engine: like a small static file it takes no slot, so a cap
 * never refuses it. */
static int bgd_known_small(const request_rec *r, const bgd_job_t *job,
                           apr_bucket_brigade *bb)
{
    apr_off_t len = -1;

    if (bgd_job_timed(job) || bgd_resource_filtered(r)) {
        return 0;
    }
    apr_brigade_length(bb, 0, &len);
    return len >= 0 && len < job->conf->min_size;
}

/* Common part of the handler API.  Inside a handler that bgd_handler
 * already wraps (BgDeliver On) the data is only captured and the wrapper
 * finishes the job; otherwise the capture is set up and finished here. */
static int bgd_api_send(request_rec *r, apr_bucket_brigade *bb,
                        bgdeliver_producer_fn *producer, void *baton,
                        const bgdeliver_pacing_t *p)
{
    bgd_job_t *job = bgd_job_get(r);
    int wrapped = job->started && job->capturing;
    int rv = OK;

    if (job->api_used || job->eos || job->handoff) {
        /* A second body would reach the wire before the rest of the first
         * (or after its Content-Length), and the job be counted twice. */
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD030: the bgdeliver API was called again for a "
                      "response whose body it already has; ignored");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (p && bgd_job_set_pacing(job, p) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    job->api_used = 1;
    if (!job->started) {
        job->requested = 1;
        if (r->main) {
            rv = DECLINED;
        }
        else if (bb && bgd_known_small(r, job, bb)) {
            bgd_foreground_unmapped(r);
            rv = DECLINED;
        }
        else {
            /* Its own DECLINED (a fallback) adds the filter itself. */
            rv = bgd_capture_begin(r, job);
        }
        if (rv != OK && rv != DECLINED) {
            return rv;
        }
    }
    if (producer && r->header_only) {
        /* HEAD: the header filter would drop every byte produced, and an
         * endless producer would never be done; the headers are all. */
        producer = NULL;
        bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    }
    if (producer && rv == OK) {
        job->producer = producer;
        job->baton = baton;
    }
    else if (producer) {
        /* No engine for this request. */
        return bgd_run_producer_here(r, producer, baton);
    }
    else {
        if (APR_BRIGADE_EMPTY(bb) || !APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(bb))) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(
                                        r->connection->bucket_alloc));
        }
        if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS) {
            /* What a handler returns when its ap_pass_brigade() fails,
             * whoever was to deliver the body. */
            if (rv == DECLINED || wrapped) {
                return AP_FILTER_ERROR;
            }
            rv = AP_FILTER_ERROR;
        }
    }
    if (rv == DECLINED || wrapped) {
        return OK;
    }
    return bgd_capture_end(r, job, rv);
}

static int bgd_api_send_brigade(request_rec *r, apr_bucket_brigade *bb,
                                const bgdeliver_pacing_t *p)
{
    if (!bb) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD029: bgdeliver_send_brigade() called without a "
                      "brigade");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return bgd_api_send(r, bb, NULL, NULL, p);
}

/* The range is checked here, while the handler can still answer with an
 * error: once the engine has the response, a range past the end of the
 * file would look like a file truncated during delivery. */
static int bgd_api_send_file(request_rec *r, apr_file_t *fd, apr_off_t off,
                             apr_off_t len, const bgdeliver_pacing_t *p)
{
    apr_bucket_brigade *bb;
    apr_finfo_t finfo;

    if (!fd) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD028: bgdeliver_send_file() called without a file");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    finfo.size = -1;
    if (off < 0 || len < 0
        || apr_file_info_get(&finfo, APR_FINFO_SIZE, fd) != APR_SUCCESS
        || off > finfo.size || len > finfo.size - off) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD028: bgdeliver_send_file(): %" APR_OFF_T_FMT
                      " bytes from offset %" APR_OFF_T_FMT " are not within "
                      "the file (%" APR_OFF_T_FMT " bytes)", len, off,
                      finfo.size);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_brigade_insert_file(bb, fd, off, len, r->pool);
    return bgd_api_send(r, bb, NULL, NULL, p);
}

static int bgd_api_send_producer(request_rec *r, bgdeliver_producer_fn *fn,
                                 void *baton, const bgdeliver_pacing_t *p)
{
    if (!fn) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "BGD029: bgdeliver_send_producer() called without a "
                      "producer");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return bgd_api_send(r, NULL, fn, baton, p);
}

static int bgd_api_request_info(const request_rec *r, bgdeliver_info_t *info)
{
    const bgd_job_t *job;

    r = bgd_main_request(r);
    /* After an internal redirect the job is the last request's, whose
     * handler ran; a logging module holds the first one. */
    while (r->next) {
        r = r->next;
    }
    job = bgd_req_job(r);
    memset(info, 0, sizeof(*info));
    info->bytes_total = -1;
    if (!job || !job->handoff) {
        return 0;
    }
    info->background = job->background || job->in_worker;
    info->handoff = job->handoff;
    info->finished = job->finished;
    /* Paced in the worker, the worker was held from the hand-off on,
     * sleeps and blocking writes included, not just in its slices, and it
     * still is while the request is logged. */
    info->worker_time = !job->in_worker ? job->worker_time
                        : apr_time_now() - job->handoff;
    info->slices = job->slices;
    info->bytes_sent = job->sent;
    info->bytes_total = job->eos ? job->captured : -1;
    info->outcome = job->outcome;
    return info->background;
}

static void bgd_api_get_totals(bgdeliver_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    if (!bgd_table) {
        return;
    }
    t->started = apr_atomic_read64(&bgd_table->started);
    t->completed = apr_atomic_read64(&bgd_table->completed);
    t->aborted = apr_atomic_read64(&bgd_table->aborted);
    t->dropped = apr_atomic_read64(&bgd_table->dropped);
    t->fallbacks = apr_atomic_read64(&bgd_table->fallbacks);
    t->rejected = apr_atomic_read64(&bgd_table->rejected);
    t->bytes = apr_atomic_read64(&bgd_table->bytes);
    t->in_flight = apr_atomic_read32(&bgd_table->in_flight);
}

/* --------------------------------------------------------------- status */

/* The writes of all engine threads (pulses and the rest of deliveries,
 * one per visit that wrote, bgd_engine_pump()), shown as
 * BgDeliverEnginePulses / engine_pulses, the names the status had when
 * the threads only wrote pulses.  Not in
 * bgdeliver_totals_t: that struct is public API, and its size is part of
 * what modules built against it expect. */
static apr_uint64_t bgd_engine_writes_total(void)
{
    apr_uint64_t sum = 0;
    int i;

    for (i = 0; bgd_table && i < BGD_MAX_ENGINE_THREADS; i++) {
        sum += apr_atomic_read64(&bgd_table->engine_writes[i]);
    }
    return sum;
}

/* Engine threads that each child runs: none without WAITIO. */
static int bgd_engine_threads_per_child(void)
{
    return bgd_mpm_can_waitio ? bgd_engine_threads : 0;
}

/* The writes of each engine thread index, summed over the children,
 * separated by sep: how evenly the threads share the work. */
static const char *bgd_engine_thread_writes(apr_pool_t *p, const char *sep)
{
    const char *out = "";
    int i, n = bgd_engine_threads_per_child();

    for (i = 0; bgd_table && i < n; i++) {
        out = apr_psprintf(p, "%s%s%" APR_UINT64_T_FMT, out, i ? sep : "",
                           apr_atomic_read64(&bgd_table->engine_writes[i]));
    }
    return out;
}

typedef struct bgd_slot_view_t {
    bgd_slot_t s;
    apr_time_t age;
    apr_off_t avg_rate;
} bgd_slot_view_t;

/* Copy the in-flight deliveries out of shared memory consistently. */
static apr_array_header_t *bgd_snapshot(apr_pool_t *p)
{
    apr_array_header_t *arr = apr_array_make(p, 16, sizeof(bgd_slot_view_t));
    apr_time_t now = apr_time_now();
    apr_uint32_t i;

    if (!bgd_table) {
        return arr;
    }
    for (i = 0; i < bgd_table->nslots; i++) {
        bgd_slot_t *s = &bgd_table->slots[i];
        bgd_slot_view_t v;
        int tries;

        if (!s->owner) {
            continue;
        }
        for (tries = 0; tries < 8; tries++) {
            apr_uint32_t seq = bgd_slot_seq_read(s);
            if (seq & 1) {
                continue;
            }
            memcpy(&v.s, s, sizeof(v.s));
            if (bgd_slot_seq_read(s) == seq) {
                break;
            }
        }
        if (tries == 8 || !v.s.owner || !v.s.client[0]) {
            continue;
        }
        v.age = now - v.s.started;
        v.avg_rate = v.age > 0
                     ? (apr_off_t)((double)v.s.sent * APR_USEC_PER_SEC
                                   / (double)v.age) : 0;
        *(bgd_slot_view_t *)apr_array_push(arr) = v;
    }
    return arr;
}

static const char *bgd_json_str(apr_pool_t *p, const char *s)
{
    apr_size_t i, n = strlen(s);
    char *out = apr_palloc(p, n * 6 + 3), *o = out;
    *o++ = '"';
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        }
        else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&'
                 || ch >= 0x7f) {
            o += apr_snprintf(o, 7, "\\u%04x", ch);
        }
        else {
            *o++ = (char)ch;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static void bgd_status_totals_auto(request_rec *r)
{
    bgdeliver_totals_t t;
    bgd_api_get_totals(&t);
    ap_rprintf(r, "BgDeliverVersion: %s\n", BGD_VERSION);
    ap_rprintf(r, "BgDeliverEngine: %s\n",
               bgd_mpm_can_waitio ? "async" : "worker");
    ap_rprintf(r, "BgDeliverInFlight: %u\n", t.in_flight);
    ap_rprintf(r, "BgDeliverStarted: %" APR_UINT64_T_FMT "\n", t.started);
    ap_rprintf(r, "BgDeliverCompleted: %" APR_UINT64_T_FMT "\n", t.completed);
    ap_rprintf(r, "BgDeliverAborted: %" APR_UINT64_T_FMT "\n", t.aborted);
    ap_rprintf(r, "BgDeliverDropped: %" APR_UINT64_T_FMT "\n", t.dropped);
    ap_rprintf(r, "BgDeliverFallbacks: %" APR_UINT64_T_FMT "\n", t.fallbacks);
    ap_rprintf(r, "BgDeliverRejected: %" APR_UINT64_T_FMT "\n", t.rejected);
    ap_rprintf(r, "BgDeliverBytes: %" APR_UINT64_T_FMT "\n", t.bytes);
    ap_rprintf(r, "BgDeliverEnginePulses: %" APR_UINT64_T_FMT "\n",
               bgd_engine_writes_total());
    ap_rprintf(r, "BgDeliverEngineThreads: %d\n",
               bgd_engine_threads_per_child());
    if (bgd_engine_threads_per_child() > 0) {
        /* (No empty value for "Key: value" parsers without threads.) */
        ap_rprintf(r, "BgDeliverEngineThreadWrites: %s\n",
                   bgd_engine_thread_writes(r->pool, " "));
    }
}

/* A slot is taken before the handler runs, so that the caps hold: until
 * the hand-off the response is its handler's ("handler"). */
static const char *bgd_slot_mode_name(int mode)
{
    return mode == 1 ? "background" : mode == 2 ? "worker" : "handler";
}

static void bgd_status_auto(request_rec *r)
{
    apr_array_header_t *arr = bgd_snapshot(r->pool);
    int i;

    bgd_status_totals_auto(r);
    for (i = 0; i < arr->nelts; i++) {
        bgd_slot_view_t *v = &APR_ARRAY_IDX(arr, i, bgd_slot_view_t);
        ap_rprintf(r, "Delivery: pid=%" APR_PID_T_FMT " client=%s scheme=%s "
                   "mode=%s sent=%" APR_OFF_T_FMT " total=%" APR_OFF_T_FMT
                   " rate=%" APR_OFF_T_FMT " avg_rate=%" APR_OFF_T_FMT
                   " target_rate=%" APR_OFF_T_FMT " age_ms=%" APR_TIME_T_FMT
                   " label=%s vhost=%s method=%s uri=%s\n",
                   v->s.pid, ap_escape_urlencoded(r->pool, v->s.client),
                   v->s.https ? "https" : "http",
                   bgd_slot_mode_name(v->s.mode),
                   v->s.sent, v->s.total, v->s.current_rate, v->avg_rate,
                   v->s.target_rate, apr_time_as_msec(v->age),
                   v->s.label[0] ? ap_escape_urlencoded(r->pool, v->s.label)
                                 : "-",
                   ap_escape_urlencoded(r->pool, v->s.vhost),
                   ap_escape_urlencoded(r->pool, v->s.method),
                   ap_escape_urlencoded(r->pool, v->s.uri));
    }
}

static void bgd_status_json(request_rec *r)
{
    apr_array_header_t *arr = bgd_snapshot(r->pool);
    bgdeliver_totals_t t;
    int i;

    bgd_api_get_totals(&t);
    ap_rprintf(r, "{\"version\":\"%s\",\"engine\":\"%s\",\"totals\":{"
               "\"in_flight\":%u,\"started\":%" APR_UINT64_T_FMT
               ",\"completed\":%" APR_UINT64_T_FMT
               ",\"aborted\":%" APR_UINT64_T_FMT
               ",\"dropped\":%" APR_UINT64_T_FMT
               ",\"fallbacks\":%" APR_UINT64_T_FMT
               ",\"rejected\":%" APR_UINT64_T_FMT
               ",\"bytes\":%" APR_UINT64_T_FMT
               ",\"engine_pulses\":%" APR_UINT64_T_FMT
               ",\"engine_threads\":%d,\"engine_thread_writes\":[%s]},"
               "\"deliveries\":[",
               BGD_VERSION, bgd_mpm_can_waitio ? "async" : "worker",
               t.in_flight, t.started, t.completed, t.aborted, t.dropped,
               t.fallbacks, t.rejected, t.bytes, bgd_engine_writes_total(),
               bgd_engine_threads_per_child(),
               bgd_engine_thread_writes(r->pool, ","));
    for (i = 0; i < arr->nelts; i++) {
        bgd_slot_view_t *v = &APR_ARRAY_IDX(arr, i, bgd_slot_view_t);
        ap_rprintf(r, "%s{\"pid\":%" APR_PID_T_FMT ",\"client\":%s,"
                   "\"scheme\":\"%s\",\"mode\":\"%s\",\"vhost\":%s,"
                   "\"method\":%s,\"uri\":%s,\"label\":%s,"
                   "\"sent\":%" APR_OFF_T_FMT ",\"total\":%" APR_OFF_T_FMT
                   ",\"rate\":%" APR_OFF_T_FMT ",\"avg_rate\":%"
                   APR_OFF_T_FMT ",\"target_rate\":%" APR_OFF_T_FMT
                   ",\"age_ms\":%" APR_TIME_T_FMT "}",
                   i ? "," : "", v->s.pid, bgd_json_str(r->pool, v->s.client),
                   v->s.https ? "https" : "http",
                   bgd_slot_mode_name(v->s.mode),
                   bgd_json_str(r->pool, v->s.vhost),
                   bgd_json_str(r->pool, v->s.method),
                   bgd_json_str(r->pool, v->s.uri),
                   bgd_json_str(r->pool, v->s.label),
                   v->s.sent, v->s.total, v->s.current_rate, v->avg_rate,
                   v->s.target_rate, apr_time_as_msec(v->age));
    }
    ap_rputs("]}\n", r);
}

static const char *bgd_human(apr_pool_t *p, apr_off_t n)
{
    char buf[6];
    if (n < 0) {
        return "?";
    }
    return apr_pstrcat(p, apr_strfsize(n, buf), "B", NULL);
}

static void bgd_status_html_table(request_rec *r)
{
    apr_array_header_t *arr = bgd_snapshot(r->pool);
    int i;

    if (!arr->nelts) {
        ap_rputs("<p>No delivery in flight.</p>\n", r);
        return;
    }
    ap_rputs("<table border=\"1\" cellpadding=\"3\">\n<tr><th>PID</th>"
             "<th>Client</th><th>Scheme</th><th>Mode</th><th>VHost</th>"
             "<th>Request</th><th>Sent</th><th>Total</th><th>%</th>"
             "<th>Rate now</th><th>Avg rate</th><th>Target</th>"
             "<th>Age</th></tr>\n", r);
    for (i = 0; i < arr->nelts; i++) {
        bgd_slot_view_t *v = &APR_ARRAY_IDX(arr, i, bgd_slot_view_t);
        const char *pct = v->s.total > 0
            ? apr_psprintf(r->pool, "%d", (int)(100.0 * (double)v->s.sent
                                                / (double)v->s.total))
            : "-";
        ap_rprintf(r, "<tr><td>%" APR_PID_T_FMT "</td><td>%s</td>"
                   "<td>%s</td><td>%s</td><td>%s</td><td>%s %s</td>"
                   "<td>%s</td><td>%s</td><td>%s</td><td>%s/s</td>"
                   "<td>%s/s</td><td>%s</td><td>%.1f s</td></tr>\n",
                   v->s.pid, ap_escape_html(r->pool, v->s.client),
                   v->s.https ? "https" : "http",
                   bgd_slot_mode_name(v->s.mode),
                   ap_escape_html(r->pool, v->s.vhost),
                   ap_escape_html(r->pool, v->s.method),
                   ap_escape_html(r->pool, v->s.uri),
                   bgd_human(r->pool, v->s.sent),
                   bgd_human(r->pool, v->s.total), pct,
                   bgd_human(r->pool, v->s.current_rate),
                   bgd_human(r->pool, v->avg_rate),
                   v->s.target_rate > 0
                       ? apr_psprintf(r->pool, "%s/s %s",
                                      bgd_human(r->pool, v->s.target_rate),
                                      ap_escape_html(r->pool, v->s.label))
                       : "-",
                   (double)v->age / APR_USEC_PER_SEC);
    }
    ap_rputs("</table>\n", r);
}

static void bgd_status_html_totals(request_rec *r)
{
    bgdeliver_totals_t t;
    bgd_api_get_totals(&t);
    ap_rprintf(r, "<dl><dt>%s, engine: %s</dt>\n<dt>%u in flight; "
               "%" APR_UINT64_T_FMT " started, %" APR_UINT64_T_FMT
               " completed, %" APR_UINT64_T_FMT " aborted, %"
               APR_UINT64_T_FMT " dropped by the slow-read rules, %"
               APR_UINT64_T_FMT " delivered in the foreground, %"
               APR_UINT64_T_FMT " refused; %s written, %" APR_UINT64_T_FMT
               " writes of them by the engine threads (%d per child, "
               "writes by thread: %s)</dt></dl>\n",
               BGD_VERSION,
               bgd_mpm_can_waitio ? "asynchronous (event MPM, WAITIO)"
                                  : "in the worker (MPM without WAITIO)",
               t.in_flight, t.started, t.completed, t.aborted, t.dropped,
               t.fallbacks, t.rejected,
               bgd_human(r->pool, (apr_off_t)t.bytes),
               bgd_engine_writes_total(), bgd_engine_threads_per_child(),
               bgd_engine_thread_writes(r->pool, ", "));
}

static int bgd_status_handler(request_rec *r)
{
    const char *args = r->args ? r->args : "";

    if (strcmp(r->handler, BGD_STATUS_HANDLER)) {
        return DECLINED;
    }
    /* The Allow header of a 405, and of the core's answer to OPTIONS, is
     * made from allowed_methods, not from r->allowed. */
    ap_allow_methods(r, REPLACE_ALLOW, "GET", NULL);
    if (r->method_number == M_OPTIONS) {
        return DECLINED;
    }
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    if (ap_strstr_c(args, "json")) {
        ap_set_content_type(r, "application/json");
        if (!r->header_only) {
            bgd_status_json(r);
        }
        return OK;
    }
    if (ap_strstr_c(args, "auto")) {
        ap_set_content_type(r, "text/plain; charset=ISO-8859-1");
        if (!r->header_only) {
            bgd_status_auto(r);
        }
        return OK;
    }
    ap_set_content_type(r, "text/html; charset=ISO-8859-1");
    if (r->header_only) {
        return OK;
    }
    ap_rputs(DOCTYPE_HTML_4_01
             "<html><head><title>Background deliveries</title>"
             "<meta http-equiv=\"refresh\" content=\"2\"></head><body>\n"
             "<h1>Background deliveries</h1>\n", r);
    bgd_status_html_totals(r);
    bgd_status_html_table(r);
    ap_rputs("</body></html>\n", r);
    return OK;
}

static int bgd_status_hook(request_rec *r, int flags)
{
    if (flags & AP_STATUS_SHORT) {
        bgd_status_totals_auto(r);
        return OK;
    }
    ap_rputs("<hr>\n<h2>Background deliveries (mod_bgdeliver)</h2>\n", r);
    bgd_status_html_totals(r);
    if (!(flags & AP_STATUS_NOTABLE)) {
        bgd_status_html_table(r);
    }
    return OK;
}

/* --------------------------------------------------------------- hooks */

/* The handler wrapper: REALLY_FIRST so that it runs before the handler
 * that produces the content, which it then runs itself. */
static int bgd_handler(request_rec *r)
{
    bgd_job_t *job = bgd_req_job(r);
    const bgd_dir_conf_t *conf;
    int rv;

    if (job && job->started) {
        return DECLINED;        /* our own nested ap_run_handler() */
    }
    if (r->main) {
        return DECLINED;        /* sub-requests are part of the main one */
    }
    if (!(job && job->requested) && bgd_dir_conf(r)->enabled != 1) {
        return DECLINED;
    }
    if (bgd_status_page(r)) {
        return DECLINED;
    }
    job = bgd_job_get(r);
    conf = job->conf;
    /* A static file known to be small never needs the engine. */
    if (!bgd_job_timed(job)
        && r->finfo.filetype == APR_REG && r->finfo.size < conf->min_size
        && bgd_default_handler(r) && !bgd_resource_filtered(r)) {
        bgd_foreground_unmapped(r);
        return DECLINED;
    }
    rv = bgd_capture_begin(r, job);
    if (rv != OK) {
        return rv;
    }
    rv = ap_run_handler(r);
    return bgd_capture_end(r, job, rv);
}

/* Wraps the HTTP module's processing (REALLY_FIRST, re-entering the hook
 * chain behind a guard) so that a SUSPENDED state left by our handler is
 * seen before the MPM sees it; and, when the MPM hands a parked
 * connection back, drives the next part of the delivery instead. */
static int bgd_process_connection(conn_rec *c)
{
    bgd_conn_t *bc;
    int rv;

    if (!bgd_mpm_can_waitio || c->master || c->outgoing || !c->cs) {
        return DECLINED;
    }
    bc = ap_get_module_config(c->conn_config, &bgdeliver_module);
    if (!bc) {
        return DECLINED;
    }
    if (bc->job) {
        return bgd_drive(bc);
    }
    if (bc->nested) {
        return DECLINED;
    }
    bc->nested = 1;
    rv = ap_run_process_connection(c);
    bc->nested = 0;
    if (bc->job && c->cs->state == CONN_STATE_SUSPENDED) {
        /* First slice right away, on this warm worker: a fast client may
         * get the whole response before we ever return to the MPM. */
        return bgd_drive(bc);
    }
    return rv;
}

/* Every path that closes a connection (lingering close after a Timeout,
 * shutdown, an error) comes through here first: the real socket must be
 * back on its descriptor before anything writes to or closes it, and an
 * unfinished delivery is logged as such. */
static apr_status_t bgd_conn_release(bgd_conn_t *bc, const char *outcome)
{
    bgd_job_t *job = bc->job;
    const char *killed = bgd_wd_unlist(bc);

    bgd_timed_wait_release(bc);
    if (job) {
        apr_bucket *eor;
        if (!job->outcome) {
            /* The MPM's own Timeout, where it waits for the socket (TLS,
             * producers), can beat the watchdog to the same rule: the
             * same drop, logged and reset the same way. */
            job->outcome = killed ? killed : outcome;
            if (bgd_outcome_dropped(job->outcome)) {
                bgd_drop(job, job->outcome);
                bgd_reset_on_close(job);
            }
        }
        bgd_account_end(job);
        bgd_correct_bytes_sent(job);
        /* Also what keeps the core's lingering close off the socket it
         * fetched before running this hook: if the MPM's Timeout struck
         * during an engine thread's visit, that was the duplicate, which
         * bgd_timed_wait_release() has just closed; httpd shuts down no
         * socket of an aborted connection. */
        bc->c->aborted = 1;
        bgd_live_set(bc, NULL);
        apr_brigade_cleanup(job->queue);
        /* Logs the request and frees r, as the core does with an EOR
         * bucket, without touching the connection's state. */
        eor = ap_bucket_eor_create(bc->c->bucket_alloc, job->top);
        apr_bucket_destroy(eor);
    }
    return APR_SUCCESS;
}

static int bgd_pre_close_connection(conn_rec *c)
{
    bgd_conn_t *bc = ap_get_module_config(c->conn_config, &bgdeliver_module);
    if (bc) {
        /* The MPM's Timeout, or a stopping child closing what it holds:
         * only the first is the client's doing. */
        bgd_conn_release(bc, apr_atomic_read32(&bgd_child_stopping_flag)
                             ? "aborted" : "timeout");
    }
    return OK;
}

/* A job still attached here was never logged: the MPM dropped the
 * connection without the pre_close_connection hook (event does that when
 * it cannot add a WAITIO connection to its pollset, AH10503).  Its request
 * is logged as aborted and counted, as on any other end. */
static apr_status_t bgd_conn_pool_cleanup(void *data)
{
    bgd_conn_t *bc = data;

    if (bc->job) {
        ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, bc->c,
                      "BGD034: the connection was closed under a background "
                      "delivery (%" APR_OFF_T_FMT " bytes sent); logging it "
                      "as aborted", bc->job->sent);
    }
    bgd_conn_release(bc, "aborted");
    return APR_SUCCESS;
}

/* The last of the child (pchild), after its engine threads and workers
 * have stopped: at a hard stop, or once GracefulShutdownTimeout runs out,
 * the event MPM exits without closing the connections it waits for, and
 * their pools are never destroyed.  Their requests are logged here, as
 * aborted, with the bytes that left. */
static apr_status_t bgd_child_exit(void *data)
{
    server_rec *s = data;
    int n = 0;

    for (;;) {
        bgd_conn_t *bc;

        apr_thread_mutex_lock(bgd_live_mutex);
        bc = bgd_live_head;
        apr_thread_mutex_unlock(bgd_live_mutex);
        if (!bc) {
            break;
        }
        n++;
        bgd_conn_release(bc, "aborted");
        bgd_live_set(bc, NULL);         /* in case it had no request */
    }
    if (n) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "BGD038: the child "
                     "stopped with %d background deliveries in flight; "
                     "they are logged as aborted", n);
    }
    bgd_live_mutex = NULL;
    return APR_SUCCESS;
}

/* Connection state for every client connection the MPM may park for us;
 * secondary (HTTP/2) and outgoing connections never get one. */
static int bgd_pre_connection(conn_rec *c, void *csd)
{
    bgd_conn_t *bc;
    apr_os_sock_t fd = -1;

    if (!bgd_mpm_can_waitio || c->master || c->outgoing || !c->cs) {
        return DECLINED;
    }
    if (apr_os_sock_get(&fd, csd) != APR_SUCCESS || fd < 0) {
        return DECLINED;
    }
    bc = apr_pcalloc(c->pool, sizeof(*bc));
    bc->c = c;
    bc->fd = fd;
    bc->sock_dup = -1;
    bc->pace_index = -1;
    ap_set_module_config(c->conn_config, &bgdeliver_module, bc);
    /* A pre-cleanup runs before the socket's own cleanup closes it and
     * before r->pool (a sub-pool) goes. */
    apr_pool_pre_cleanup_register(c->pool, bc, bgd_conn_pool_cleanup);
    return DECLINED;
}

static void bgd_child_stopping(apr_pool_t *pchild, int graceful)
{
    int i;

    (void)pchild;
    /* New responses go out normally from here on.  After a graceful
     * restart (the parent runs a newer generation) paced ones also drain
     * at full speed, so that the old generation exits quickly: the engine
     * threads hand their connections back at once.  A child that only
     * retires (idle, MaxConnectionsPerChild, or a graceful stop, as stock
     * Apache finishes its transfers then) keeps pacing them: its engine
     * threads serve until the last one ends. */
    apr_atomic_set32(&bgd_child_stopping_flag, 1);
    /* Not on a hard stop: the MPM is closing the sockets its workers hold
     * and the workers exit without taking more work, so connections
     * handed back now would only race with that (2.4.71's event MPM then
     * closed the socket of a connection whose pool a worker had just
     * destroyed: SIGSEGV in the child's main thread).  The engine threads
     * stop with the child, and bgd_child_exit() logs what they held. */
    if (!graceful || !bgd_draining()) {
        return;
    }
    apr_atomic_set32(&bgd_child_draining_flag, 1);
    for (i = 0; i < bgd_engine_count; i++) {
        bgd_engine_t *e = &bgd_engines[i];
        apr_thread_mutex_lock(e->mutex);
        bgd_engine_wake_locked(e);
        apr_thread_mutex_unlock(e->mutex);
    }
}

static int bgd_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp)
{
    (void)pconf; (void)plog; (void)ptemp;
    bgd_max_deliveries = BGD_UNSET;
    bgd_max_wakeups = BGD_UNSET;
    bgd_engine_threads = BGD_UNSET;
    return OK;
}

/* The MPM is asked, not bgd_mpm_can_waitio: a module built on the engine
 * may call this from its post_config before ours has run. */
static int bgd_api_waits_off_worker(void)
{
    int async = 0, waitio = 0;

    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS) {
        return 0;
    }
#ifdef AP_MPMQ_CAN_WAITIO
    if (ap_mpm_query(AP_MPMQ_CAN_WAITIO, &waitio) != APR_SUCCESS) {
        return 0;
    }
#endif
    return async && waitio;
}

static int bgd_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    apr_size_t size;
    apr_uint32_t want;
    apr_status_t rv;

    (void)plog; (void)ptemp;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    bgd_mpm_can_waitio = bgd_api_waits_off_worker();
    if (!bgd_mpm_can_waitio) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "BGD001: the %s MPM cannot wait for connections "
                     "without a worker (needs the event MPM of httpd "
                     "2.4.63 or later): responses are delivered normally, "
                     "paced ones are paced in the worker", ap_show_mpm());
    }

    if (bgd_engine_threads == BGD_UNSET) {
        bgd_engine_threads = BGD_DEFAULT_ENGINE_THREADS;
    }
    want = bgd_max_deliveries > 0 ? (apr_uint32_t)bgd_max_deliveries
                                  : BGD_DEFAULT_MAX_DELIVERIES;
    bgd_retained = ap_retained_data_get("mod_bgdeliver");
    if (!bgd_retained) {
        bgd_retained = ap_retained_data_create("mod_bgdeliver",
                                               sizeof(*bgd_retained));
    }
    if (bgd_retained->table && bgd_retained->table->magic != BGD_SHM_MAGIC) {
        /* Left by a build with another layout: children of the old
         * generation keep their own mapping of it. */
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "BGD024: the delivery table of the previous module "
                     "build has another layout; starting a new one");
        apr_shm_destroy(bgd_retained->shm);
        bgd_retained->table = NULL;
    }
    if (bgd_retained->table && bgd_retained->nslots != want) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "BGD015: BgDeliverMaxDeliveries changed from %u to %u: "
                     "the new value takes effect after a stop and start "
                     "(a restart keeps the table)",
                     bgd_retained->nslots, want);
    }
    if (!bgd_retained->table) {
        /* Created once in the process pool and found again after each
         * graceful restart: deliveries of the old generation stay visible
         * and counted while they finish. */
        size = APR_OFFSETOF(bgd_shm_t, slots) + want * sizeof(bgd_slot_t);
        rv = apr_shm_create(&bgd_retained->shm, size, NULL,
                            s->process->pool);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                         "BGD016: cannot create %" APR_SIZE_T_FMT " bytes of "
                         "shared memory for the delivery table", size);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        bgd_retained->table = apr_shm_baseaddr_get(bgd_retained->shm);
        memset(bgd_retained->table, 0, size);
        bgd_retained->table->magic = BGD_SHM_MAGIC;
        bgd_retained->table->nslots = want;
        bgd_retained->nslots = want;
    }
    bgd_table = bgd_retained->table;
    (void)pconf;
    return OK;
}

static apr_status_t bgd_blocks_destroy(void *data)
{
    (void)data;
    apr_allocator_destroy(bgd_blocks);
    bgd_blocks = NULL;
    return APR_SUCCESS;
}

/* The child-wide allocator of pass blocks (bgd_read_pass()): workers take
 * and give back blocks concurrently, so it has a mutex; it keeps what 128
 * passes in flight need and gives the rest back to malloc.  Without it the
 * core reads passes into the connections' own allocators. */
static void bgd_blocks_create(apr_pool_t *pchild, server_rec *s)
{
    apr_thread_mutex_t *mutex;
    apr_status_t rv;

    if ((rv = apr_allocator_create(&bgd_blocks)) != APR_SUCCESS) {
        bgd_blocks = NULL;
    }
    else if ((rv = apr_thread_mutex_create(&mutex, APR_THREAD_MUTEX_DEFAULT,
                                           pchild)) != APR_SUCCESS) {
        apr_allocator_destroy(bgd_blocks);
        bgd_blocks = NULL;
    }
    if (!bgd_blocks) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, "BGD022: cannot "
                     "create the pass buffers; slow readers' passes are "
                     "read by the core");
        return;
    }
    apr_allocator_mutex_set(bgd_blocks, mutex);
    apr_allocator_max_free_set(bgd_blocks, BGD_BLOCKS_KEEP);
    /* Registered after the mutex: runs before the mutex goes, and after
     * the connections' pools (sub-pools of pchild) gave their blocks back. */
    apr_pool_cleanup_register(pchild, NULL, bgd_blocks_destroy,
                              apr_pool_cleanup_null);
}

static void bgd_retrieve_optional_fns(void)
{
    /* Bytes the engine thread writes around the core output filter are
     * counted as the core counts its own (%O, %S). */
    bgd_logio_add_bytes_out = APR_RETRIEVE_OPTIONAL_FN(ap_logio_add_bytes_out);
}

static void bgd_child_init(apr_pool_t *pchild, server_rec *s)
{
    int pace_size;

    bgd_my_pid = getpid();
    if (ap_mpm_query(AP_MPMQ_GENERATION, &bgd_my_generation) != APR_SUCCESS
        && ap_scoreboard_image) {
        bgd_my_generation = ap_scoreboard_image->global->running_generation;
    }
    apr_atomic_set32(&bgd_child_stopping_flag, 0);
    apr_atomic_set32(&bgd_child_draining_flag, 0);
    if (bgd_table) {
        bgd_slots_reap(1);
    }
    if (!bgd_mpm_can_waitio) {
        return;
    }
    bgd_blocks_create(pchild, s);
    /* Registered before the engines' stop, so that it runs after it. */
    bgd_live_head = NULL;
    if (apr_thread_mutex_create(&bgd_live_mutex, APR_THREAD_MUTEX_DEFAULT,
                                pchild) == APR_SUCCESS) {
        apr_pool_pre_cleanup_register(pchild, s, bgd_child_exit);
    }
    else {
        bgd_live_mutex = NULL;
    }
    /* A child never has more deliveries than the table has slots. */
    pace_size = bgd_table ? (int)bgd_table->nslots
                          : BGD_DEFAULT_MAX_DELIVERIES;
    bgd_engines = apr_pcalloc(pchild, sizeof(*bgd_engines)
                                      * (apr_size_t)bgd_engine_threads);
    bgd_engine_count = 0;
    while (bgd_engine_count < bgd_engine_threads
           && bgd_engine_start(&bgd_engines[bgd_engine_count],
                               bgd_engine_count, pace_size, pchild, s)
              == APR_SUCCESS) {
        bgd_engine_count++;
    }
    if (bgd_engine_count) {
        apr_pool_pre_cleanup_register(pchild, NULL, bgd_engines_stop);
    }
}

/* ------------------------------------------------------ configuration */

static void *bgd_create_dir_conf(apr_pool_t *p, char *dir)
{
    bgd_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->enabled = BGD_UNSET;
    conf->min_size = BGD_UNSET;
    conf->mem_limit = BGD_UNSET;
    conf->spool_max = BGD_UNSET;
    conf->min_rate = BGD_UNSET;
    conf->min_rate_grace = BGD_UNSET;
    conf->idle_timeout = BGD_UNSET;
    conf->max_time = BGD_UNSET;
    conf->overflow = BGD_UNSET;
    conf->retry_after = BGD_UNSET;
    return conf;
}

#define BGD_MERGE(field) \
    conf->field = add->field != BGD_UNSET ? add->field : base->field

/* Unset stays unset (see bgd_resolved_conf()). */
static void *bgd_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    bgd_dir_conf_t *base = basev, *add = addv;
    bgd_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    BGD_MERGE(enabled);
    BGD_MERGE(min_size);
    BGD_MERGE(mem_limit);
    BGD_MERGE(spool_max);
    BGD_MERGE(min_rate);
    BGD_MERGE(min_rate_grace);
    BGD_MERGE(idle_timeout);
    BGD_MERGE(max_time);
    BGD_MERGE(overflow);
    BGD_MERGE(retry_after);
    return conf;
}

static void *bgd_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    bgd_srv_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
    (void)s;
    conf->max_per_client = BGD_UNSET;
    conf->client_bits4 = BGD_UNSET;
    conf->client_bits6 = BGD_UNSET;
    return conf;
}

static void *bgd_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    bgd_srv_conf_t *base = basev, *add = addv;
    bgd_srv_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
    conf->spool_dir = add->spool_dir ? add->spool_dir : base->spool_dir;
    BGD_MERGE(max_per_client);
    BGD_MERGE(client_bits4);
    BGD_MERGE(client_bits6);
    return conf;
}

/* Sizes: a number with an optional k, M or G suffix (powers of 1024). */
static const char *bgd_parse_size(cmd_parms *cmd, const char *arg,
                                  apr_off_t min, apr_off_t *out)
{
    apr_off_t size;

    if (bgdeliver_parse_size(arg, &size) || size < min) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid size; "
                            "expected a whole number of bytes of at least %"
                            APR_OFF_T_FMT ", optionally followed by k, M or "
                            "G (e.g. 64k)", cmd->cmd->name, arg, min);
    }
    *out = size;
    return NULL;
}

/* A time: a plain decimal number of seconds, or of milliseconds with "ms"
 * ("30", "0.5", "1.5s", "250ms").  A value that rounds to 0 while not 0 is
 * refused rather than turned into `zero`, what 0 means; a NULL `zero`
 * asks for at least a second. */
static const char *bgd_parse_seconds(cmd_parms *cmd, const char *arg,
                                     const char *zero,
                                     apr_interval_time_t *out)
{
    double us = 0;
    apr_size_t n = bgdeliver_parse_decimal(arg, &us);

    if (n && !strcasecmp(arg + n, "ms")) {
        us *= 1000;
    }
    else if (n && (!arg[n] || !strcasecmp(arg + n, "s"))) {
        us *= APR_USEC_PER_SEC;
    }
    else {
        n = 0;
    }
    if (!n || us > 86400.0 * 366 * APR_USEC_PER_SEC || (us > 0 && us < 0.5)
        || (!zero && us < APR_USEC_PER_SEC)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid time; "
                            "expected seconds from %s to 31622400 "
                            "(fractions allowed; or milliseconds with 'ms', "
                            "e.g. %s)%s%s", cmd->cmd->name, arg,
                            zero ? "0.000001" : "1", zero ? "250ms" : "1500ms",
                            zero ? ", or 0 for " : "", zero ? zero : "");
    }
    *out = (apr_interval_time_t)(us + 0.5);
    return NULL;
}

static const char *bgd_parse_count(cmd_parms *cmd, const char *arg,
                                   int min, int max, int *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(arg, &end, 10);
    if (!apr_isdigit(*arg) || *end || errno || n < min || n > max) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not valid; expected a "
                            "whole number from %d to %d", cmd->cmd->name,
                            arg, min, max);
    }
    *out = (int)n;
    return NULL;
}

/* TAKE1 rather than FLAG: the core's FLAG check neither names the bad
 * value nor refuses words after the first ("BgDeliver On Off"). */
static const char *bgd_cmd_enable(cmd_parms *cmd, void *dconf,
                                  const char *arg)
{
    bgd_dir_conf_t *conf = dconf;

    if (!strcasecmp(arg, "on")) {
        conf->enabled = 1;
    }
    else if (!strcasecmp(arg, "off")) {
        conf->enabled = 0;
    }
    else {
        return apr_psprintf(cmd->pool, "%s: '%s' is not valid; expected On "
                            "or Off", cmd->cmd->name, arg);
    }
    return NULL;
}

static const char *bgd_cmd_min_size(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    return bgd_parse_size(cmd, arg, 0, &((bgd_dir_conf_t *)dconf)->min_size);
}

static const char *bgd_cmd_mem_limit(cmd_parms *cmd, void *dconf,
                                     const char *arg)
{
    return bgd_parse_size(cmd, arg, 0, &((bgd_dir_conf_t *)dconf)->mem_limit);
}

static const char *bgd_cmd_spool_limit(cmd_parms *cmd, void *dconf,
                                       const char *arg)
{
    return bgd_parse_size(cmd, arg, BGD_SPOOL_LIMIT_MIN,
                          &((bgd_dir_conf_t *)dconf)->spool_max);
}

static const char *bgd_cmd_min_rate(cmd_parms *cmd, void *dconf,
                                    const char *rate, const char *grace)
{
    bgd_dir_conf_t *conf = dconf;
    const char *err = bgd_parse_size(cmd, rate, 0, &conf->min_rate);

    /* The directive sets the whole rule: a grace not given is the
     * default, not the enclosing scope's. */
    conf->min_rate_grace = BGD_DEFAULT_GRACE;
    if (!err && grace) {
        /* At least a second: no client can have read anything the
         * moment its response starts, nor within a round trip or two, so
         * a shorter grace would drop clients that read at full speed. */
        err = bgd_parse_seconds(cmd, grace, NULL, &conf->min_rate_grace);
    }
    return err;
}

static const char *bgd_cmd_idle_timeout(cmd_parms *cmd, void *dconf,
                                        const char *arg)
{
    return bgd_parse_seconds(cmd, arg, "the server's Timeout",
                             &((bgd_dir_conf_t *)dconf)->idle_timeout);
}

static const char *bgd_cmd_max_time(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    return bgd_parse_seconds(cmd, arg, "no limit",
                             &((bgd_dir_conf_t *)dconf)->max_time);
}

static const char *bgd_cmd_overflow(cmd_parms *cmd, void *dconf,
                                    const char *mode, const char *retry)
{
    bgd_dir_conf_t *conf = dconf;
    /* The directive sets the whole action: "reject" without a value
     * sends no Retry-After, whatever the enclosing scope's said. */
    conf->retry_after = 0;
    if (!strcasecmp(mode, "fallback")) {
        conf->overflow = BGD_OVERFLOW_FALLBACK;
        if (retry) {
            return apr_psprintf(cmd->pool, "BgDeliverOverflow: '%s' is not "
                                "valid after 'fallback'; a Retry-After "
                                "value only goes with 'reject'", retry);
        }
        return NULL;
    }
    if (!strcasecmp(mode, "reject")) {
        conf->overflow = BGD_OVERFLOW_REJECT;
        return retry ? bgd_parse_count(cmd, retry, 0, 86400,
                                       &conf->retry_after)
                     : NULL;
    }
    return apr_psprintf(cmd->pool, "BgDeliverOverflow: '%s' is not valid; "
                        "expected 'fallback' (deliver in the foreground) or "
                        "'reject [retry-after-seconds]' (503)", mode);
}

static const char *bgd_cmd_spool_dir(cmd_parms *cmd, void *dconf,
                                     const char *arg)
{
    bgd_srv_conf_t *conf = ap_get_module_config(cmd->server->module_config,
                                                &bgdeliver_module);
    apr_finfo_t finfo;
    const char *path = ap_server_root_relative(cmd->pool, arg);
    (void)dconf;
    if (!path) {
        return apr_psprintf(cmd->pool, "BgDeliverSpoolDir: '%s' is not a "
                            "valid path", arg);
    }
    if (apr_stat(&finfo, path, APR_FINFO_TYPE, cmd->pool) != APR_SUCCESS
        || finfo.filetype != APR_DIR) {
        /* Refused at start-up (and by -t).  On a restart, a directory that
         * a temporary-file cleaner removed meanwhile must not stop the
         * whole server (httpd itself only warns of a missing DocumentRoot):
         * responses go out the ordinary way (BGD010) until it is back. */
        if (ap_state_query(AP_SQ_CONFIG_GEN) <= 1) {
            return apr_psprintf(cmd->pool, "BgDeliverSpoolDir: '%s' is not "
                                "an existing directory", arg);
        }
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, cmd->server,
                     "BGD039: BgDeliverSpoolDir '%s' is not an existing "
                     "directory (any more); generated responses beyond "
                     "BgDeliverMemoryLimit go out in the foreground (BGD010) "
                     "until it is created", arg);
    }
    conf->spool_dir = path;
    return NULL;
}

static const char *bgd_cmd_max_per_client(cmd_parms *cmd, void *dconf,
                                          const char *arg)
{
    bgd_srv_conf_t *conf = ap_get_module_config(cmd->server->module_config,
                                                &bgdeliver_module);
    (void)dconf;
    return bgd_parse_count(cmd, arg, 0, 1000000, &conf->max_per_client);
}

static const char *bgd_cmd_client_prefix(cmd_parms *cmd, void *dconf,
                                         const char *bits4,
                                         const char *bits6)
{
    bgd_srv_conf_t *conf = ap_get_module_config(cmd->server->module_config,
                                                &bgdeliver_module);
    const char *err = bgd_parse_count(cmd, bits4, 1, 32,
                                      &conf->client_bits4);
    (void)dconf;
    if (!err && bits6) {
        return bgd_parse_count(cmd, bits6, 1, 128, &conf->client_bits6);
    }
    conf->client_bits6 = BGD_DEFAULT_CLIENT_BITS6;
    return err;
}

/* The whole numbers that hold for the whole server: where each goes and
 * within which bounds, as the directive's cmd->info. */
typedef struct {
    int *value;
    int min;
    int max;
} bgd_global_count_t;

static bgd_global_count_t bgd_max_wakeups_arg = {
    &bgd_max_wakeups, 0, 1000000
};
static bgd_global_count_t bgd_max_deliveries_arg = {
    &bgd_max_deliveries, 1, 1000000
};
static bgd_global_count_t bgd_engine_threads_arg = {
    &bgd_engine_threads, 1, BGD_MAX_ENGINE_THREADS
};

static const char *bgd_cmd_global_count(cmd_parms *cmd, void *dconf,
                                        const char *arg)
{
    const bgd_global_count_t *what = cmd->info;
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dconf;
    if (err) {
        return err;
    }
    return bgd_parse_count(cmd, arg, what->min, what->max, what->value);
}

/* ------------------------------------------------------------ register */

/* APR_REGISTER_OPTIONAL_FN() wants the function to carry the public name;
 * ours carry the module prefix, with the same compile-time type check. */
#define BGD_REGISTER_FN(name, fn) do {                              \
        APR_OPTIONAL_FN_TYPE(name) *bgd_checked_fn = fn;            \
        apr_dynamic_fn_register(#name, (apr_opt_fn_t *)bgd_checked_fn); \
    } while (0)

static void bgd_register_hooks(apr_pool_t *p)
{
    static const char *const after_ssl[] = { "mod_ssl.c", NULL };
    (void)p;

    /* Before every other handler: it runs them itself, behind a filter
     * that captures their output. */
    ap_hook_handler(bgd_handler, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_handler(bgd_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* REALLY_FIRST: it wraps everything the HTTP module does with a
     * connection, so it must see the connection before anyone else. */
    ap_hook_process_connection(bgd_process_connection, NULL, NULL,
                               APR_HOOK_REALLY_FIRST);
    /* After mod_ssl has set up its filters, so that c->output_filters is
     * complete; nothing here depends on it, but the order documents that
     * TLS lies below us. */
    ap_hook_pre_connection(bgd_pre_connection, after_ssl, NULL,
                           APR_HOOK_MIDDLE);
    ap_hook_pre_close_connection(bgd_pre_close_connection, NULL, NULL,
                                 APR_HOOK_REALLY_FIRST);
    ap_hook_child_stopping(bgd_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_config(bgd_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(bgd_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(bgd_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_optional_fn_retrieve(bgd_retrieve_optional_fns, NULL, NULL,
                                 APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, bgd_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);

    /* After CHUNK (AP_FTYPE_TRANSCODE) and every protocol filter, before
     * the connection filters: it sees the bytes the client will get. */
    bgd_capture_filter_handle = ap_register_output_filter(
        "BGDELIVER", bgd_capture_filter, NULL, AP_FTYPE_TRANSCODE + 5);
    bgd_unmapped_filter_handle = ap_register_output_filter(
        "BGDELIVER_UNMAPPED", bgd_unmapped_filter, NULL,
        AP_FTYPE_TRANSCODE + 5);

    BGD_REGISTER_FN(bgdeliver_request_background,
                    bgd_api_request_background);
    BGD_REGISTER_FN(bgdeliver_send_file, bgd_api_send_file);
    BGD_REGISTER_FN(bgdeliver_send_brigade, bgd_api_send_brigade);
    BGD_REGISTER_FN(bgdeliver_send_producer, bgd_api_send_producer);
    BGD_REGISTER_FN(bgdeliver_request_info, bgd_api_request_info);
    BGD_REGISTER_FN(bgdeliver_get_totals, bgd_api_get_totals);
    BGD_REGISTER_FN(bgdeliver_waits_off_worker, bgd_api_waits_off_worker);
}

static const command_rec bgd_cmds[] = {
    AP_INIT_TAKE1("BgDeliver", bgd_cmd_enable, NULL, OR_FILEINFO,
                 "On to deliver large responses without holding a worker"),
    AP_INIT_TAKE1("BgDeliverMinSize", bgd_cmd_min_size, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Smallest response (bytes, k/M/G) delivered in the "
                  "background"),
    AP_INIT_TAKE1("BgDeliverMemoryLimit", bgd_cmd_mem_limit, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Generated bytes kept in memory per response before "
                  "spooling to BgDeliverSpoolDir"),
    AP_INIT_TAKE1("BgDeliverSpoolLimit", bgd_cmd_spool_limit, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Largest spool per response; beyond it the rest is "
                  "delivered in the foreground"),
    AP_INIT_TAKE12("BgDeliverMinRate", bgd_cmd_min_rate, NULL,
                   RSRC_CONF | ACCESS_CONF,
                   "Minimum average client read rate in bytes/s and the "
                   "grace period in seconds before it applies (0 = off)"),
    AP_INIT_TAKE1("BgDeliverIdleTimeout", bgd_cmd_idle_timeout, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Seconds a delivery may make no progress (0 = Timeout)"),
    AP_INIT_TAKE1("BgDeliverMaxTime", bgd_cmd_max_time, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Absolute limit in seconds for a response, counted from "
                  "the request (0 = none)"),
    AP_INIT_TAKE12("BgDeliverOverflow", bgd_cmd_overflow, NULL,
                   RSRC_CONF | ACCESS_CONF,
                   "What to do past a cap: fallback, or reject "
                   "[retry-after-seconds]"),
    AP_INIT_TAKE1("BgDeliverSpoolDir", bgd_cmd_spool_dir, NULL, RSRC_CONF,
                  "Directory for spool files of generated responses"),
    AP_INIT_TAKE12("BgDeliverClientPrefix", bgd_cmd_client_prefix, NULL,
                   RSRC_CONF,
                   "Prefix lengths in bits (IPv4 1-32, IPv6 1-128) that make "
                   "one client for BgDeliverMaxPerClient"),
    AP_INIT_TAKE1("BgDeliverMaxPerClient", bgd_cmd_max_per_client, NULL,
                  RSRC_CONF,
                  "Concurrent background deliveries per client address "
                  "(0 = unlimited)"),
    AP_INIT_TAKE1("BgDeliverMaxDeliveries", bgd_cmd_global_count,
                  &bgd_max_deliveries_arg, RSRC_CONF,
                  "Concurrent background deliveries of the whole server"),
    AP_INIT_TAKE1("BgDeliverMaxWakeups", bgd_cmd_global_count,
                  &bgd_max_wakeups_arg, RSRC_CONF,
                  "Paced wake-ups per second and child before pulses "
                  "lengthen (0 = never lengthen)"),
    AP_INIT_TAKE1("BgDeliverEngineThreads", bgd_cmd_global_count,
                  &bgd_engine_threads_arg, RSRC_CONF,
                  "Engine threads per child that write deliveries "
                  "(HTTP and HTTPS) and pulses (1-64)"),
    { NULL }
};

AP_DECLARE_MODULE(bgdeliver) = {
    STANDARD20_MODULE_STUFF,
    bgd_create_dir_conf,        /* create per-directory config */
    bgd_merge_dir_conf,         /* merge per-directory config */
    bgd_create_srv_conf,        /* create per-server config */
    bgd_merge_srv_conf,         /* merge per-server config */
    bgd_cmds,                   /* command table */
    bgd_register_hooks,         /* register hooks */
    AP_MODULE_FLAG_NONE         /* flags */
};
