/*
 * handle.c: the lifecycle of the libuv handles behind Lua objects (see
 * handle.h): open, close once, free and release in the close callback.
 */
#include <stdlib.h>
#include "handle.h"

void loom_handle_open(lua_State *L, loom_handle *h, loom_loop *lp, uv_handle_t *uv, int idx,
                      void (*teardown)(loom_handle *h)) {
  h->teardown = teardown;
  h->uv = uv;
  h->lp = lp;
  uv->data = h;
  lua_pushvalue(L, idx);
  h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void loom_handle_closed(uv_handle_t *uv) {
  loom_handle *h = uv->data;
  free(uv);
  if (h == NULL) return;
  luaL_unref(h->lp->L, LUA_REGISTRYINDEX, h->ref);
  h->ref = LUA_NOREF;
}

void loom_handle_free(uv_handle_t *uv) {
  free(uv);
}

int loom_handle_close(loom_handle *h) {
  if (h->uv == NULL) return 0;
  uv_close(h->uv, loom_handle_closed);
  h->uv = NULL;
  return 1;
}
