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
 * EPOLL_CTL_ADD for readability fails with ENOMEM, and the file is removed
 * (an unlink that succeeds once makes it one failure, whichever thread
 * gets there first).  The event MPM then drops a connection that waits in
 * CONN_STATE_ASYNC_WAITIO (AH10503) without the pre_close_connection
 * hook: bgdeliver_server.t checks that the delivery is still logged.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    static epoll_ctl_fn real;
    const char *trigger = getenv("BGD_EPOLL_FAULT");

    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "epoll_ctl");
    }
    if (trigger && op == EPOLL_CTL_ADD && ev && (ev->events & EPOLLIN)
        && unlink(trigger) == 0) {
        errno = ENOMEM;
        return -1;
    }
    return real(epfd, op, fd, ev);
}
