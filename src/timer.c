/*
 * timer.c: deadlines. One binary heap of loom_timer per loop and one
 * uv_timer_t armed for the earliest, instead of a libuv handle per sleeper;
 * loom.sleep and loom.now.
 */

/***
@module loom
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

/* libuv runs due timers at the top of uv_run, before it polls: anything
   woken here must make that poll return at once (uv_stop), and the timer must
   be armed again for what is left in the heap, or the poll would wait for I/O
   alone. libuv's clock may also make the timer fire a little before the
   earliest deadline, with nothing due: re-arming covers that too. */
static void on_timer(uv_timer_t *h) {
  loom_loop *lp = h->data;
  uint64_t now = uv_hrtime();
  if (lp->vclock) { /* the real-time cap of a virtual wait: it only ends the poll */
    uv_stop(&lp->uv);
    return;
  }
  loom_timers_fire(lp, now);
  loom_timers_arm(lp, now);
  if (lp->ready_head) uv_stop(&lp->uv);
  loom_assert(lp->heap_n == 0 || uv_is_active((uv_handle_t *)&lp->timer));
}

/* Arms the libuv timer for the earliest deadline, in whole milliseconds
   rounded up. libuv compares its own millisecond clock, so the wake-up can
   still come a little early; on_timer then finds nothing due and arms again. */
void loom_timers_arm(loom_loop *lp, uint64_t now) {
  uint64_t due, ms = 0;
  if (lp->heap_n == 0) {
    uv_timer_stop(&lp->timer);
    return;
  }
  due = lp->heap[0]->deadline;
  if (due > now) ms = (due - now + 999999) / 1000000;
  lp->timer.data = lp;
  uv_update_time(&lp->uv);
  uv_timer_start(&lp->timer, on_timer, ms, 0);
}

/* Polls without waiting until a poll runs nothing: a task run inline from a
   callback may write what another socket of this process reads, which only
   the next poll sees. */
static void drain_io(loom_loop *lp) {
  int i;
  for (i = 0; i < 64; i++) {
    uint64_t steps = lp->steps;
    uv_run(&lp->uv, UV_RUN_NOWAIT);
    if (lp->ready_head || (lp->steps == steps && i > 0)) return;
  }
}

/* The virtual clock's turn, when no task is ready: I/O that has arrived is
   taken first (polls that do not wait); thread.run work still running is
   waited for, and other requests in flight (files, name lookups, connects,
   writes) are given 1 ms of real time; then, if still nothing is ready,
   time jumps to the next deadline. With no deadline left, only I/O can wake
   anything: the poll waits for it. */
void loom_virtual_wait(loom_loop *lp) {
  drain_io(lp);
  if (lp->ready_head) return;
  if (lp->jobs > 0 || lp->uv.active_reqs.count > 0) {
    lp->timer.data = lp;
    uv_timer_start(&lp->timer, on_timer, 1, 0);
    uv_run(&lp->uv, UV_RUN_ONCE);
    uv_timer_stop(&lp->timer);
    if (lp->ready_head || lp->jobs > 0) return;
  }
  if (lp->heap_n > 0) {
    if (lp->heap[0]->deadline > lp->vnow) lp->vnow = lp->heap[0]->deadline;
    return;
  }
  if (uv_loop_alive(&lp->uv)) uv_run(&lp->uv, UV_RUN_ONCE);
}

/* The deadline `arg` seconds from now; NO_DEADLINE for math.huge. */
uint64_t loom_deadline(lua_State *L, int arg) {
  lua_Number s = luaL_checknumber(L, arg);
  loom_loop *lp = loom_getstate(L)->loop;
  if (!(s >= 0)) /* also NaN */
    luaL_argerror(L, arg, lua_pushfstring(L, "duration must be a non-negative number, got %s",
                                          s != s ? "nan" : lua_tostring(L, arg)));
  if (s > 1e9) return NO_DEADLINE; /* beyond 31 years: forever */
  return loom_time(lp) + (uint64_t)(s * 1e9);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, sleep_k);
  return 0;
}

/***
Time.
@section time
*/

/***
Suspends the running task for `seconds`; `loom.sleep(0)` lets every other
ready task run first. Blocks (a cancellation point).
@function sleep
@tparam number seconds how long, 0 or more
@raise "bad argument" for a negative or non-number; "not inside a task" outside loom.run
@usage loom.sleep(0.25)
*/
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

/* A deadline scope: the timer of one loom.timeout call. Scopes are C
   structs from a per-state free list, linked on their task innermost first;
   loom_finish closes whatever a task leaves open, so no timer outlives its
   task. On expiry a scope cancels its task with an error whose field `scope`
   holds the scope's number: the timeout that catches it can tell its own
   expiry from an outer one's. */
struct loom_scope {
  loom_timer timer;
  loom_task *task;
  loom_scope *outer;
  lua_Integer gen;
};

static void scope_fire(loom_loop *lp, loom_timer *tm) {
  loom_scope *sc = loom_container(tm, loom_scope, timer);
  lua_State *L = lp->L;
  if (sc->task->cancel_pending || sc->task->throwing)
    return; /* another cancellation, which unwinds this scope too, is on its way */
  lua_pushliteral(L, "timeout");
  loom_push_cancel_error(L, lua_gettop(L));
  lua_pushinteger(L, sc->gen);
  lua_setfield(L, -2, "scope");
  lua_remove(L, -2);
  sc->task->due = tm->deadline; /* the loop's lag is noted when the task runs */
  loom_cancel_with(L, lp, sc->task, 1);
}

static loom_scope *scope_open(loom_state *S, loom_task *t, uint64_t deadline) {
  loom_scope *sc = S->free_scopes;
  if (sc)
    S->free_scopes = sc->outer;
  else if ((sc = malloc(sizeof *sc)) == NULL)
    return NULL;
  sc->task = t;
  sc->gen = ++S->scope_gen;
  sc->outer = t->scopes;
  t->scopes = sc;
  sc->timer.idx = -1;
  sc->timer.fire = scope_fire;
  if (deadline != NO_DEADLINE) loom_timer_start(S->loop, &sc->timer, deadline);
  return sc;
}

static void scope_release(loom_state *S, loom_scope *sc) {
  if (S->loop) loom_timer_stop(S->loop, &sc->timer);
  sc->task->scopes = sc->outer;
  sc->outer = S->free_scopes;
  S->free_scopes = sc;
}

void loom_close_scopes(loom_loop *lp, loom_task *t) {
  while (t->scopes) scope_release(lp->S, t->scopes);
}

void loom_free_scopes(loom_state *S) {
  while (S->free_scopes) {
    loom_scope *sc = S->free_scopes;
    S->free_scopes = sc->outer;
    free(sc);
  }
}

static int is_scope_error(lua_State *L, int idx, lua_Integer gen) {
  int mine;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_getfield(L, idx, "scope");
  mine = lua_tointeger(L, -1) == gen && lua_isinteger(L, -1);
  lua_pop(L, 1);
  return mine;
}

/* Closes the task's innermost scope. Returns 1 if the body was cut by this
   scope's expiry (its error, at errorix, is the scope's cancellation). A
   cancellation of this scope not yet delivered when the body finished is
   withdrawn, so a body that completed keeps its results; a cancellation
   requested while this scope's was in flight is raised now. */
static int scope_close(lua_State *L, loom_state *S, loom_task *t, int errorix) {
  loom_scope *sc = t->scopes;
  lua_Integer gen = sc->gen;
  int mine = errorix != 0 && is_scope_error(L, errorix, gen);
  scope_release(S, sc);
  if (!mine && t->cancel_pending && t->scope_cancel) {
    loom_pushtask(L, S, t);
    loom_get_extra(L, -1, "cancel");
    if (is_scope_error(L, -1, gen)) {
      t->cancel_pending = 0;
      lua_pushnil(L);
      loom_set_extra(L, -3, "cancel");
    }
    lua_pop(L, 2);
  }
  if (t->cancel_missed && (mine || !t->cancel_pending)) {
    t->cancel_missed = 0;
    loom_pushtask(L, S, t);
    loom_get_extra(L, -1, "missed");
    loom_push_cancel_error(L, lua_gettop(L));
    lua_error(L);
  }
  return mine;
}

static int timeout_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = (loom_task *)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    if (scope_close(L, S, t, lua_gettop(L))) {
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    return lua_error(L);
  }
  scope_close(L, S, t, 0);
  return lua_gettop(L); /* true (at index 1), results... */
}

/***
Runs `fn(...)` with a deadline. If it finishes in time, returns true and
its results; on expiry the work inside is cancelled and unwound (its
`<close>` handlers and pcalls run) and `false, "timeout"` is returned.
Errors raised by `fn` pass through. Nestable: the nearest deadline wins, and
an outer deadline is never taken for an inner one. Blocks.
@function timeout
@tparam number seconds the time allowed
@tparam function fn the work
@param ... its arguments
@treturn boolean true if fn finished in time
@return fn's results, or "timeout"
@usage local ok, body = loom.timeout(2, fetch, url)
if not ok then print("too slow") end
*/
static int l_timeout(lua_State *L) {
  loom_state *S = loom_getstate(L);
  uint64_t deadline = loom_deadline(L, 1);
  loom_task *t;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  t = loom_checkrunning(L, S, "timeout");
  if (scope_open(S, t, deadline) == NULL) return luaL_error(L, "timeout: out of memory");
  lua_pushboolean(L, 1);
  lua_replace(L, 1); /* [true, fn, args...] */
  return timeout_k(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, (lua_KContext)t, timeout_k),
                   (lua_KContext)t);
}

/***
A monotonic clock in seconds (a float), for measuring durations. Never
blocks.
@function now
@treturn number
@usage local t0 = loom.now(); work(); print(loom.now() - t0)
*/
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)loom_time(loom_getstate(L)->loop) / 1e9);
  return 1;
}

/* loom.core._clock("virtual" | "real"): the clock of the next loom.run. */
static int l_clock(lua_State *L) {
  static const char *const names[] = {"real", "virtual", NULL};
  loom_getstate(L)->vclock_next = luaL_checkoption(L, 1, NULL, names);
  return 0;
}

void loom_open_timer(lua_State *L) {
  static const luaL_Reg funcs[] = {{"sleep", l_sleep},
                                   {"now", l_now},
                                   {"timeout", l_timeout},
                                   {"_clock", l_clock},
                                   {NULL, NULL}};
  lua_pushvalue(L, -2); /* state */
  luaL_setfuncs(L, funcs, 1);
}
