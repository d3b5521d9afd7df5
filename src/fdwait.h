/*
 * fdwait.h: readiness of a descriptor that another library owns (libpq's
 * socket), for the drivers built on it: one uv_poll_t, which is also the
 * owner object's handle (handle.h), so the object has the one lifecycle.
 *
 * The poll watches a duplicate of the owner's descriptor, not the
 * descriptor itself: the library may close its socket at any time (libpq
 * does on every connection failure, and while connecting when it moves to
 * the next address), and a poll left on a closed descriptor number would,
 * once the number is reused by another socket, report that socket's events
 * and, on close, remove it from the loop's epoll set. The duplicate keeps
 * the number ours until the poll is closed.
 *
 * Polling is level-triggered: the owner asks for the events it waits for
 * (loom_fdwait_want) and for none while it waits for nothing, or the loop
 * would spin. The ready callback runs from the loop with status < 0 (a
 * libuv error) or the events that are ready.
 */
#ifndef LOOM_FDWAIT_H
#define LOOM_FDWAIT_H

#include "handle.h"

typedef struct loom_fdwait loom_fdwait;
typedef void (*loom_fdwait_cb)(loom_fdwait *w, int status, int events);

struct loom_fdwait {
  loom_handle h;  /* first: h.uv is the uv_poll_t, NULL once closed */
  int fd;         /* the duplicate polled, -1 once closed */
  int events;     /* UV_READABLE | UV_WRITABLE asked for now, 0 stopped */
  loom_fdwait_cb ready;
};

/* Opens w on a duplicate of fd for the object at idx (anchored until the
   close, as loom_handle_open does); 0 or a libuv error, w then closed. */
int loom_fdwait_open(lua_State *L, loom_fdwait *w, loom_loop *lp, int fd, int idx,
                     void (*teardown)(loom_handle *h), loom_fdwait_cb ready);
/* Polls for events from now on (0: none); 0 or a libuv error. */
int loom_fdwait_want(loom_fdwait *w, int events);
/* The owner's descriptor is now fd (its old one may be closed already):
   the poll moves to a duplicate of it, asking for nothing yet. */
int loom_fdwait_move(loom_fdwait *w, int fd);
/* Closes the poll and the duplicate; idempotent. */
void loom_fdwait_close(loom_fdwait *w);

#endif
