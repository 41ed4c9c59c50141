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
 * Fault injection for the tests, preloaded (LD_PRELOAD) into a private
 * server only.  Once the file named by BGD_EPOLL_FAULT exists, the next
 * EPOLL_CTL_ADD of a timerfd (what mod_bgdeliver's timed waits put on a
 * connection's descriptor number before the event MPM waits for it in
 * CONN_STATE_ASYNC_WAITIO) fails with ENOMEM, and the file is removed (an
 * unlink that succeeds once makes it one failure, whichever thread gets
 * there first).  Other adds (a lingering close, a keep-alive wait) pass,
 * so that they cannot take the one failure.  The event MPM then drops the
 * connection (AH10503) without the pre_close_connection hook:
 * bgdeliver_server.t checks that the delivery is still logged.
 *
 * While the file named by BGD_TIMERFD_FAULT exists, timerfd_create()
 * fails with EMFILE, as when the process is out of descriptors: the timed
 * waits of mod_bgdeliver cannot be armed (BGD018).
 *
 * With BGD_SHM_FAULT set to a byte count, every anonymous shared mapping
 * (what apr_shm_create() makes without a file name) of at least that size
 * fails with ENOMEM: mod_conntimes then runs without its segment (CT0007,
 * conntimes_shm.t), while the scoreboard, smaller, is made.  Private
 * mappings (malloc's) pass.  "BYTES:FILE" fails them only while FILE
 * exists (a graceful restart, after a start that mapped one).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/timerfd.h>
#include <unistd.h>

typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

static int is_timerfd(int fd)
{
    char path[64], target[64];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) {
        return 0;
    }
    target[n] = '\0';
    return strcmp(target, "anon_inode:[timerfd]") == 0;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    static epoll_ctl_fn real;
    const char *trigger = getenv("BGD_EPOLL_FAULT");

    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "epoll_ctl");
    }
    if (trigger && op == EPOLL_CTL_ADD && is_timerfd(fd)
        && unlink(trigger) == 0) {
        errno = ENOMEM;
        return -1;
    }
    return real(epfd, op, fd, ev);
}

typedef int (*timerfd_create_fn)(int, int);

int timerfd_create(int clockid, int flags)
{
    static timerfd_create_fn real;
    const char *trigger = getenv("BGD_TIMERFD_FAULT");

    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "timerfd_create");
    }
    if (trigger && access(trigger, F_OK) == 0) {
        errno = EMFILE;
        return -1;
    }
    return real(clockid, flags);
}

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    static mmap_fn real;
    const char *min = getenv("BGD_SHM_FAULT");

    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "mmap");
    }
    if (min && (flags & MAP_SHARED) && (flags & MAP_ANONYMOUS)
        && len >= strtoul(min, NULL, 10)
        && (!strchr(min, ':') || access(strchr(min, ':') + 1, F_OK) == 0)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return real(addr, len, prot, flags, fd, off);
}

