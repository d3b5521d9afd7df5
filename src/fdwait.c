/*
 * fdwait.c: polling a duplicate of another library's descriptor (see
 * fdwait.h).
 */
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include "fdwait.h"

static void on_poll(uv_poll_t *p, int status, int events) {
  loom_fdwait *w = p->data;
  w->ready(w, status, events);
}

/* A poll on a fresh duplicate of fd in *pp; 0 or a libuv error. */
static int new_poll(loom_loop *lp, int fd, uv_poll_t **pp, int *dupfd) {
  uv_poll_t *p;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0), rc;
  if (d < 0) return uv_translate_sys_error(errno);
  if ((p = malloc(sizeof *p)) == NULL) {
    close(d);
    return UV_ENOMEM;
  }
  if ((rc = uv_poll_init_socket(&lp->uv, p, d)) < 0) {
    free(p);
    close(d);
    return rc;
  }
  *pp = p;
  *dupfd = d;
  return 0;
}

int loom_fdwait_open(lua_State *L, loom_fdwait *w, loom_loop *lp, int fd, int idx,
                     void (*teardown)(loom_handle *h), loom_fdwait_cb ready) {
  uv_poll_t *p;
  int rc;
  w->h.uv = NULL;
  w->fd = -1;
  w->events = 0;
  w->ready = ready;
  if ((rc = new_poll(lp, fd, &p, &w->fd)) < 0) return rc;
  loom_handle_open(L, &w->h, lp, (uv_handle_t *)p, idx, teardown);
  return 0;
}

int loom_fdwait_want(loom_fdwait *w, int events) {
  int rc = 0;
  if (w->h.uv == NULL || events == w->events) return 0;
  if (events == 0)
    rc = uv_poll_stop((uv_poll_t *)w->h.uv);
  else
    rc = uv_poll_start((uv_poll_t *)w->h.uv, events, on_poll);
  w->events = rc < 0 ? 0 : events;
  return rc;
}

int loom_fdwait_move(loom_fdwait *w, int fd) {
  uv_poll_t *p;
  int d, rc;
  if (w->h.uv == NULL) return UV_EBADF;
  if ((rc = new_poll(w->h.lp, fd, &p, &d)) < 0) return rc;
  w->h.uv->data = NULL; /* the old poll's close frees it, the object stays anchored */
  uv_close(w->h.uv, loom_handle_free);
  close(w->fd);
  p->data = &w->h;
  w->h.uv = (uv_handle_t *)p;
  w->fd = d;
  w->events = 0;
  return 0;
}

void loom_fdwait_close(loom_fdwait *w) {
  if (loom_handle_close(&w->h)) { /* libuv lets the descriptor go once uv_close returned */
    close(w->fd);
    w->fd = -1;
    w->events = 0;
  }
}
