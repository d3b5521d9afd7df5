/*
 * timer.c: deadlines. One binary heap of loom_timer per loop and one
 * uv_timer_t armed for the earliest, instead of a libuv handle per sleeper;
 * loom.sleep and loom.now.
 */
#include <math.h>
#include <stdlib.h>
#include "loom.h"

#define NO_DEADLINE UINT64_MAX

static int earlier(const loom_timer *a, const loom_timer *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void put(loom_timer **h, int i, loom_timer *tm) {
  h[i] = tm;
  tm->idx = i;
}

static void sift_up(loom_timer **h, int i) {
  loom_timer *tm = h[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!earlier(tm, h[parent])) break;
    put(h, i, h[parent]);
    i = parent;
  }
  put(h, i, tm);
}

static void sift_down(loom_timer **h, int n, int i) {
  loom_timer *tm = h[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && earlier(h[c + 1], h[c])) c++;
    if (!earlier(h[c], tm)) break;
    put(h, i, h[c]);
    i = c;
  }
  put(h, i, tm);
}

void loom_timer_start(loom_loop *lp, loom_timer *tm, uint64_t deadline) {
  if (lp->heap_n == lp->heap_cap) {
    int cap = lp->heap_cap ? lp->heap_cap * 2 : 64;
    loom_timer **h = realloc(lp->heap, (size_t)cap * sizeof *h);
    if (h == NULL) abort(); /* no Lua error can unwind from here safely */
    lp->heap = h;
    lp->heap_cap = cap;
  }
  tm->deadline = deadline;
  tm->seq = lp->timer_seq++;
  put(lp->heap, lp->heap_n++, tm);
  sift_up(lp->heap, tm->idx);
}

void loom_timer_stop(loom_loop *lp, loom_timer *tm) {
  int i = tm->idx;
  if (i < 0) return;
  tm->idx = -1;
  if (--lp->heap_n == i) return;
  put(lp->heap, i, lp->heap[lp->heap_n]);
  if (i > 0 && earlier(lp->heap[i], lp->heap[(i - 1) / 2]))
    sift_up(lp->heap, i);
  else
    sift_down(lp->heap, lp->heap_n, i);
}

void loom_timers_fire(loom_loop *lp, uint64_t now) {
  while (lp->heap_n > 0 && lp->heap[0]->deadline <= now) {
    loom_timer *tm = lp->heap[0];
    loom_timer_stop(lp, tm);
    tm->fire(lp, tm);
  }
}

static void on_timer(uv_timer_t *h) {
  loom_loop *lp = h->data;
  loom_timers_fire(lp, uv_hrtime());
}

/* libuv counts in whole milliseconds of a cached clock: wait one more so the
   wake-up is never before the deadline (no early, empty wake-ups). */
void loom_timers_arm(loom_loop *lp, uint64_t now) {
  if (lp->heap_n == 0) {
    uv_timer_stop(&lp->timer);
    return;
  }
  uint64_t due = lp->heap[0]->deadline;
  uint64_t ms = due > now ? (due - now) / 1000000 + 1 : 0;
  lp->timer.data = lp;
  uv_update_time(&lp->uv);
  uv_timer_start(&lp->timer, on_timer, ms, 0);
}

/* The deadline `arg` seconds from now; NO_DEADLINE for math.huge. */
uint64_t loom_deadline(lua_State *L, int arg) {
  lua_Number s = luaL_checknumber(L, arg);
  if (!(s >= 0)) /* also NaN */
    luaL_argerror(L, arg, lua_pushfstring(L, "duration must be a non-negative number, got %s",
                                          s != s ? "nan" : lua_tostring(L, arg)));
  if (s > 1e9) return NO_DEADLINE; /* beyond 31 years: forever */
  return uv_hrtime() + (uint64_t)(s * 1e9);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, sleep_k);
  return 0;
}

/* loom.sleep(seconds): suspends the running task; sleep(0) requeues it behind
   every ready task; math.huge sleeps until cancelled. May block. */
static int l_sleep(lua_State *L) {
  loom_state *S = loom_getstate(L);
  uint64_t deadline = loom_deadline(L, 1);
  int zero = lua_tonumber(L, 1) == 0;
  loom_task *t = loom_checkrunning(L, S, "loom.sleep");
  lua_settop(L, 0);
  loom_suspend(L, t);
  if (zero)
    loom_wake(S->loop, t, 0);
  else if (deadline != NO_DEADLINE)
    loom_timer_start(S->loop, &t->timer, deadline);
  return loom_yield(L, t, sleep_k);
}

/* A deadline scope: the timer of one loom.timeout call. On expiry it cancels
   its task with an error that names the scope (field `scope`), so the
   timeout that catches it can tell its own expiry from an outer one's. */
typedef struct scope {
  loom_timer timer;
  loom_task *task;
  int open;
} scope;

#define LOOM_SCOPE "loom.DeadlineScope"

static void scope_fire(loom_loop *lp, loom_timer *tm) {
  scope *sc = loom_container(tm, scope, timer);
  lua_State *L = lp->L;
  if (!sc->open || sc->task->cancel_pending || sc->task->throwing)
    return; /* another cancellation, which unwinds this scope too, is on its way */
  lua_pushliteral(L, "timeout");
  loom_push_cancel_error(L, lua_gettop(L));
  lua_pushlightuserdata(L, sc);
  lua_setfield(L, -2, "scope");
  lua_remove(L, -2);
  loom_cancel_with(L, lp, sc->task, 1);
}

static int is_scope_error(lua_State *L, int idx, scope *sc) {
  int mine;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_getfield(L, idx, "scope");
  mine = lua_touserdata(L, -1) == (void *)sc;
  lua_pop(L, 1);
  return mine;
}

/* Raises a cancellation that arrived while the scope's own was in flight. */
static void raise_missed(lua_State *L, loom_state *S, loom_task *t) {
  t->cancel_missed = 0;
  loom_pushtask(L, S, t);
  loom_get_extra(L, -1, "missed");
  loom_push_cancel_error(L, lua_gettop(L));
  lua_error(L);
}

/* loom.core._scope_open(seconds): opens a deadline scope around the caller's
   next steps; returns its token. Never blocks. */
static int l_scope_open(lua_State *L) {
  loom_state *S = loom_getstate(L);
  uint64_t deadline = loom_deadline(L, 1);
  loom_task *t = loom_checkrunning(L, S, "timeout");
  scope *sc = lua_newuserdatauv(L, sizeof *sc, 0);
  sc->task = t;
  sc->open = 1;
  sc->timer.idx = -1;
  sc->timer.fire = scope_fire;
  luaL_setmetatable(L, LOOM_SCOPE);
  if (deadline != NO_DEADLINE) loom_timer_start(S->loop, &sc->timer, deadline);
  return 1;
}

/* loom.core._scope_close(token, ok, err): closes the scope. Returns true if
   the body was cut by this scope's expiry (err is its cancellation); a
   cancellation of this scope not yet delivered when the body finished is
   withdrawn, so a body that completed keeps its results. */
static int l_scope_close(lua_State *L) {
  loom_state *S = loom_getstate(L);
  scope *sc = luaL_checkudata(L, 1, LOOM_SCOPE);
  loom_task *t = sc->task;
  int ok = lua_toboolean(L, 2), mine = 0;
  if (!sc->open) return luaL_error(L, "timeout scope closed twice");
  sc->open = 0;
  if (S->loop) loom_timer_stop(S->loop, &sc->timer);
  if (!ok && is_scope_error(L, 3, sc)) {
    mine = 1;
  } else if (t->cancel_pending && t->scope_cancel) {
    loom_pushtask(L, S, t);
    loom_get_extra(L, -1, "cancel");
    if (is_scope_error(L, -1, sc)) {
      t->cancel_pending = 0;
      lua_pushnil(L);
      loom_set_extra(L, -3, "cancel");
    }
    lua_pop(L, 2);
  }
  if (t->cancel_missed && (mine || !t->cancel_pending)) raise_missed(L, S, t);
  lua_pushboolean(L, mine);
  return 1;
}

/* loom.now(): a monotonic clock in seconds. Never blocks. */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void loom_open_timer(lua_State *L) {
  static const luaL_Reg funcs[] = {{"sleep", l_sleep},
                                   {"now", l_now},
                                   {"_scope_open", l_scope_open},
                                   {"_scope_close", l_scope_close},
                                   {NULL, NULL}};
  luaL_newmetatable(L, LOOM_SCOPE);
  lua_pop(L, 1);
  lua_pushvalue(L, -2); /* state */
  luaL_setfuncs(L, funcs, 1);
}
