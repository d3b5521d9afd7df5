/*
 * inspect.c: what a running loop is doing, for loom.stats() and the
 * inspect signal. Owns the loop's counters (steps run, how late timers
 * fire) and the signal handle that makes a live program write its task tree
 * (lua/loom/init.lua writes it; the handler runs from the loop thread, in a
 * libuv callback between steps, never from the signal handler itself).
 */

/***
@module loom
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "loom.h"
#include "handle.h"

#define WINDOW_NS 1000000000ull /* loop_lag_recent: the last second */

/* A task woken by a timer due at `due` ran at `now` (sched.c's step): the
   loop's lag, as the user's code feels it. */
void loom_lag_note(loom_loop *lp, uint64_t now, uint64_t due) {
  uint64_t late = now > due ? now - due : 0;
  if (late > lp->lag_max) lp->lag_max = late;
  if (now - lp->lag_start >= WINDOW_NS) {
    lp->lag_prev = now - lp->lag_start < 2 * WINDOW_NS ? lp->lag_cur : 0;
    lp->lag_cur = 0;
    lp->lag_start = now;
  }
  if (late > lp->lag_cur) lp->lag_cur = late;
}

/* Handles a user opened and has not closed: each object's own handle once
   (a server's accept poll and loom's internal handles are not counted). */
static void count_handle(uv_handle_t *h, void *arg) {
  loom_loop *lp = arg;
  loom_handle *o = h->data;
  if (o == NULL || uv_is_closing(h) || h->type == UV_SIGNAL || h == (uv_handle_t *)&lp->timer ||
      h == (uv_handle_t *)&lp->jobs_async || o->uv != h)
    return;
  lp->nhandles++;
}

/***
What the running loop is doing. Never blocks.
@function stats
@return `{tasks =, ready =, handles =, steps =, loop_lag_max =,
loop_lag_recent =}`: live tasks (main included), tasks ready to run, open
handles (streams, servers, UDP sockets, processes, watchers, database
connections), task steps run, and how late the loop has woken timers, in
seconds: the most since loom.run began and over the last second
@usage print(loom.stats().loop_lag_recent)
*/
static int l_stats(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_loop *lp = S->loop;
  loom_task *t;
  int ready = 0;
  uint64_t now = uv_hrtime();
  if (lp == NULL) return loom_not_in_task(L, "loom.stats");
  for (t = lp->ready_head; t; t = t->next_ready) ready++;
  lp->nhandles = 0;
  uv_walk(&lp->uv, count_handle, lp);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, lp->nlive);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, ready);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, lp->nhandles);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, (lua_Integer)lp->steps);
  lua_setfield(L, -2, "steps");
  lua_pushnumber(L, (lua_Number)lp->lag_max / 1e9);
  lua_setfield(L, -2, "loop_lag_max");
  if (now - lp->lag_start >= 2 * WINDOW_NS)
    lua_pushnumber(L, 0);
  else if (now - lp->lag_start >= WINDOW_NS)
    lua_pushnumber(L, (lua_Number)lp->lag_cur / 1e9);
  else
    lua_pushnumber(L, (lua_Number)(lp->lag_cur > lp->lag_prev ? lp->lag_cur : lp->lag_prev) / 1e9);
  lua_setfield(L, -2, "loop_lag_recent");
  return 1;
}

static void inspect_closed(uv_handle_t *h) {
  free(h);
}

/* The signal came: the writer (a Lua function without blocking calls) runs
   on the loop's own thread, between steps. */
static void on_inspect(uv_signal_t *h, int signum) {
  loom_loop *lp = h->data;
  lua_State *L = lp->L;
  (void)signum;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lp->inspect_ref);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: inspect: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* loom.core._inspect(signal, writer): on that signal (a name or number),
   the running loop calls writer(). The handle does not keep the loop alive. */
static int l_inspect(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_loop *lp = S->loop;
  int signum = loom_check_signal(L, 1), rc;
  uv_signal_t *h;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lp == NULL) return loom_not_in_task(L, "inspect");
  if (lp->inspect) return luaL_error(L, "inspect: already on");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "inspect: out of memory");
  uv_signal_init(&lp->uv, h);
  h->data = lp;
  if ((rc = uv_signal_start(h, on_inspect, signum)) < 0) {
    uv_close((uv_handle_t *)h, inspect_closed);
    return loom_fail(L, rc, "inspect");
  }
  uv_unref((uv_handle_t *)h);
  lua_pushvalue(L, 2);
  lp->inspect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lp->inspect = h;
  lua_pushboolean(L, 1);
  return 1;
}

/* A real-time alarm: fn() once, `seconds` of wall time after it was set,
   whatever the loop's clock (the virtual one jumps); it does not keep the
   loop alive. loom.busted's hard timeout. */
static void on_alarm(uv_timer_t *h) {
  loom_loop *lp = h->data;
  lua_State *L = lp->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lp->alarm_ref);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: alarm: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  uv_stop(&lp->uv); /* what it woke runs now */
}

/* loom.core._alarm(seconds, fn): see on_alarm; one per loop. */
static int l_alarm(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_loop *lp = S->loop;
  lua_Number s = luaL_checknumber(L, 1);
  uv_timer_t *h;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lp == NULL) return loom_not_in_task(L, "alarm");
  if (lp->alarm) return luaL_error(L, "alarm: already set");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "alarm: out of memory");
  uv_timer_init(&lp->uv, h);
  h->data = lp;
  uv_timer_start(h, on_alarm, (uint64_t)(s > 0 ? s * 1000 : 0), 0);
  uv_unref((uv_handle_t *)h);
  lua_pushvalue(L, 2);
  lp->alarm_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lp->alarm = h;
  return 0;
}

/* loom.core._unretrieved(): how many unretrieved task errors were reported,
   and the last report. */
static int l_unretrieved(lua_State *L) {
  lua_pushinteger(L, loom_getstate(L)->unretrieved);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.unretrieved");
  return 2;
}

/* loom.run's teardown: the inspect and alarm handles go first (they are
   not the user's). */
void loom_inspect_close(loom_loop *lp) {
  if (lp->inspect) {
    uv_close((uv_handle_t *)lp->inspect, inspect_closed);
    luaL_unref(lp->L, LUA_REGISTRYINDEX, lp->inspect_ref);
    lp->inspect = NULL;
  }
  if (lp->alarm) {
    uv_close((uv_handle_t *)lp->alarm, inspect_closed);
    luaL_unref(lp->L, LUA_REGISTRYINDEX, lp->alarm_ref);
    lp->alarm = NULL;
  }
}

/* Expects [state, module]. */
void loom_open_inspect(lua_State *L) {
  static const luaL_Reg funcs[] = {{"stats", l_stats}, {"_inspect", l_inspect}, {"_alarm", l_alarm},
                                   {"_unretrieved", l_unretrieved}, {NULL, NULL}};
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
}
