/*
 * handle.h: the one lifecycle of the libuv handles loom opens for Lua
 * objects (streams, servers, UDP sockets, processes, file watchers), as
 * luv's handle.c has one. An object's struct starts with a loom_handle; its
 * libuv handle is malloc'd, owned from loom_handle_open to the close
 * callback, closed exactly once through loom_handle_close, and freed in that
 * callback, which is also when the object's userdata stops being anchored
 * (callbacks of requests still in flight, such as writes cancelled by the
 * close, run before it and may use the object).
 */
#ifndef LOOM_HANDLE_H
#define LOOM_HANDLE_H

#include "loom.h"

struct loom_handle {
  /* The owner's close: loom.run's teardown calls it for a handle still
     open when every task has ended (it wakes waiters, then closes). */
  void (*teardown)(loom_handle *h);
  uv_handle_t *uv; /* NULL once closing */
  loom_loop *lp;
  int ref; /* anchors the owner's userdata until the close callback */
};

/* Takes ownership of uv (initialised, malloc'd) for h, whose owner's
   userdata is at idx (anchored from now on). */
void loom_handle_open(lua_State *L, loom_handle *h, loom_loop *lp, uv_handle_t *uv, int idx,
                      void (*teardown)(loom_handle *h));
/* Closes h's handle if it is open (1), else does nothing (0). */
int loom_handle_close(loom_handle *h);
/* The close callback, for the closes libuv makes through another call
   (uv_tcp_close_reset): the caller sets h->uv to NULL itself. */
void loom_handle_closed(uv_handle_t *uv);
/* The close callback of a handle no Lua object owns (a half-made one). */
void loom_handle_free(uv_handle_t *uv);

#endif
