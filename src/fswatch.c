/*
 * fswatch.c: loom.fs.watch — change events of a file or directory from
 * libuv's fs events (inotify on Linux), as an iterator. Owns the
 * uv_fs_event_t (malloc'd, freed in its close callback, so the Lua object
 * may be collected at any time after closing) and the queue of events not
 * yet taken.
 */

/***
@module loom.fs
*/
#include <stdlib.h>
#include <string.h>
#include "loom.h"

#define LOOM_WATCHER "loom.Watcher"

typedef struct watcher {
  loom_handle h; /* first: loom.run's teardown closes an open watcher through it */
  uv_fs_event_t *ev;
  loom_loop *lp;
  int ref;        /* anchors the userdata while the handle is open */
  int head, tail; /* queued events: pairs name, kind at [head+1 .. tail] of uservalue 1 */
  loom_link waiters;
} watcher;

/* Upvalues: 1 = module state, 2 = the watcher metatable. */
#define MT lua_upvalueindex(2)

static void free_handle(uv_handle_t *h) {
  free(h);
}

/* Closes the handle and wakes the waiters (their next() returns nil); L is
   the running thread. */
static void shut(lua_State *L, watcher *w) {
  loom_loop *lp = w->lp;
  if (w->ev == NULL) return;
  uv_fs_event_stop(w->ev);
  uv_close((uv_handle_t *)w->ev, free_handle);
  w->ev = NULL;
  while (!loom_list_empty(&w->waiters)) loom_wake(lp, loom_container(w->waiters.next, loom_task, wait), 0);
  luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
  w->ref = LUA_NOREF;
}

static void teardown_close(uv_handle_t *h) {
  watcher *w = h->data;
  shut(w->lp->L, w);
}

static void on_event(uv_fs_event_t *ev, const char *filename, int events, int status) {
  watcher *w = ev->data;
  lua_State *L = w->lp->L;
  const char *kind = status < 0 ? "error" : (events & UV_RENAME) ? "rename" : "change";
  if (!loom_list_empty(&w->waiters)) {
    loom_task *t = loom_container(w->waiters.next, loom_task, wait);
    lua_checkstack(t->co, 2);
    if (filename)
      lua_pushstring(t->co, filename);
    else
      lua_pushnil(t->co);
    lua_pushstring(t->co, kind);
    loom_wake(w->lp, t, 2);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->ref);
  lua_getiuservalue(L, -1, 1);
  if (filename)
    lua_pushstring(L, filename);
  else
    lua_pushboolean(L, 0);
  lua_rawseti(L, -2, ++w->tail);
  lua_pushstring(L, kind);
  lua_rawseti(L, -2, ++w->tail);
  lua_pop(L, 2);
}

static int next_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, next_k);
  (void)status;
  return lua_gettop(L) - t->kept;
}

/***
A watcher from `loom.fs.watch`.
@type Watcher
*/

/***
The next change. Blocks.
@function Watcher:next
@return name (relative to a watched directory) and kind ("change" or
"rename"); nil once closed
@usage local name, kind = w:next()
*/
static int w_next(lua_State *L) {
  loom_state *S = loom_getstate(L);
  watcher *w = loom_checkudata(L, 1, MT);
  loom_task *t = loom_checkrunning(L, S, "watch");
  lua_settop(L, 1);
  if (w->head < w->tail) {
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, 2, w->head + 1);
    lua_rawgeti(L, 2, w->head + 2);
    lua_pushnil(L);
    lua_rawseti(L, 2, w->head + 1);
    lua_pushnil(L);
    lua_rawseti(L, 2, w->head + 2);
    w->head += 2;
    if (w->head == w->tail) w->head = w->tail = 0;
    if (!lua_toboolean(L, 3)) {
      lua_pushnil(L);
      lua_replace(L, 3);
    }
    return 2;
  }
  if (w->ev == NULL) return 0;
  loom_suspend(L, t);
  loom_list_append(&w->waiters, &t->wait);
  return loom_yield(L, t, next_k);
}

/***
Stops watching; again is harmless; also `<close>`. Never blocks.
@function Watcher:close
@usage w:close()
*/
static int w_close(lua_State *L) {
  watcher *w = loom_checkudata(L, 1, MT);
  shut(L, w);
  return 0;
}

/* loom.fs.watch(path): a watcher of the file or directory, and the generic-for
   quadruple: `for name, kind in loom.fs.watch(dir) do ... end` (the watcher
   is closed when the loop ends). nil, msg, code if it cannot watch. */
static int l_watch(lua_State *L) {
  loom_state *S = loom_getstate(L);
  const char *path = luaL_checkstring(L, 1);
  watcher *w;
  int rc;
  if (S->loop == NULL) return loom_not_in_task(L, "watch");
  w = lua_newuserdatauv(L, sizeof *w, 1);
  memset(w, 0, sizeof *w);
  w->ref = LUA_NOREF;
  w->h.close = teardown_close;
  w->lp = S->loop;
  loom_list_init(&w->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if ((w->ev = malloc(sizeof *w->ev)) == NULL) return luaL_error(L, "watch: out of memory");
  uv_fs_event_init(&S->loop->uv, w->ev);
  w->ev->data = w;
  rc = uv_fs_event_start(w->ev, on_event, path, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)w->ev, free_handle);
    w->ev = NULL;
    return loom_fail(L, rc, path);
  }
  lua_pushvalue(L, -1);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, MT, "__index");
  lua_getfield(L, -1, "next");
  lua_replace(L, -2);
  lua_pushvalue(L, -2);
  lua_pushnil(L);
  lua_pushvalue(L, -4);
  return 4;
}

/* Expects [state, module] on the stack, module._fs present. */
void loom_open_fswatch(lua_State *L) {
  static const luaL_Reg methods[] = {{"next", w_next}, {"close", w_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", w_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"watch", l_watch}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  loom_newclass(L, S, LOOM_WATCHER, methods, meta);
  lua_getfield(L, S + 1, "_fs");
  loom_classfuncs(L, S + 3, S, S + 2, funcs);
  lua_pop(L, 2);
}
