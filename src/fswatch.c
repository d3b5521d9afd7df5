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
#include "handle.h"

#define LOOM_WATCHER "loom.Watcher"

typedef struct watcher {
  loom_handle h; /* first: its uv_fs_event_t */
  int head, tail; /* queued events: pairs name, kind at [head+1 .. tail] of uservalue 1 */
  loom_link waiters;
} watcher;

/* Upvalues: 1 = module state, 2 = the watcher metatable. */
#define MT lua_upvalueindex(2)

/* Closes the handle and wakes the waiters (their next() returns nil); L is
   the running thread. */
static void shut(watcher *w) {
  if (!loom_handle_close(&w->h)) return;
  while (!loom_list_empty(&w->waiters)) loom_wake(w->h.lp, loom_container(w->waiters.next, loom_task, wait), 0);
}

static void teardown(loom_handle *h) {
  shut((watcher *)h);
}

static void on_event(uv_fs_event_t *ev, const char *filename, int events, int status) {
  watcher *w = ev->data;
  lua_State *L = w->h.lp->L;
  const char *kind = status < 0 ? "error" : (events & UV_RENAME) ? "rename" : "change";
  if (!loom_list_empty(&w->waiters)) {
    loom_task *t = loom_container(w->waiters.next, loom_task, wait);
    lua_checkstack(t->co, 2);
    if (filename)
      lua_pushstring(t->co, filename);
    else
      lua_pushnil(t->co);
    lua_pushstring(t->co, kind);
    loom_wake(w->h.lp, t, 2);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->h.ref);
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
  if (w->h.uv == NULL) return 0;
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
  shut(w);
  return 0;
}

/* loom.fs.watch(path): a watcher of the file or directory, and the generic-for
   quadruple: `for name, kind in loom.fs.watch(dir) do ... end` (the watcher
   is closed when the loop ends). nil, msg, code if it cannot watch. */
static int l_watch(lua_State *L) {
  loom_state *S = loom_getstate(L);
  const char *path = luaL_checkstring(L, 1);
  watcher *w;
  uv_fs_event_t *ev;
  int rc;
  if (S->loop == NULL) return loom_not_in_task(L, "watch");
  w = lua_newuserdatauv(L, sizeof *w, 1);
  memset(w, 0, sizeof *w);
  loom_list_init(&w->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if ((ev = malloc(sizeof *ev)) == NULL) return luaL_error(L, "watch: out of memory");
  uv_fs_event_init(&S->loop->uv, ev);
  loom_handle_open(L, &w->h, S->loop, (uv_handle_t *)ev, -1, teardown);
  rc = uv_fs_event_start(ev, on_event, path, 0);
  if (rc < 0) {
    shut(w);
    return loom_fail(L, rc, path);
  }
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
