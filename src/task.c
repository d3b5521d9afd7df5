/*
 * task.c: the loom.Task object. Spawning, starting a task on a pooled
 * coroutine, storing its outcome when it ends, cancellation requests, await,
 * the non-blocking accessors, and the report of errors nobody retrieved.
 */

/***
@module loom
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loom.h"

#define POOL_MAX 256 /* idle coroutines kept for reuse */
#define LOOM_REPORT_MT "loom.UnretrievedError"

static const char *const state_names[] = {"new",  "ready",  "running",  "waiting",
                                          "done", "failed", "cancelled"};

/* The task at idx, or a "loom.Task expected" argument error. Compares the
   metatable's identity instead of looking its name up in the registry. */
loom_task *loom_totask(lua_State *L, loom_state *S, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == S->task_mt) return p;
  }
  luaL_typeerror(L, idx, LOOM_TASK);
  return NULL;
}

#define checktask(L, idx) loom_totask((L), loom_getstate(L), (idx))

void loom_pushtask(lua_State *L, loom_state *S, loom_task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->slots_ref);
  lua_rawgeti(L, -1, t->slot);
  lua_remove(L, -2);
}

static int take_slot(loom_state *S) {
  return S->nfree > 0 ? S->free_slots[--S->nfree] : ++S->nslots;
}

static void give_slot(loom_state *S, int slot) {
  if (S->nfree == S->cap_free) {
    int cap = S->cap_free ? S->cap_free * 2 : 256;
    int *f = realloc(S->free_slots, (size_t)cap * sizeof *f);
    if (f == NULL) return; /* the slot is only lost for reuse */
    S->free_slots = f;
    S->cap_free = cap;
  }
  S->free_slots[S->nfree++] = slot;
}

void loom_free_slots(loom_state *S) {
  free(S->free_slots);
  S->free_slots = NULL;
  S->nfree = S->cap_free = 0;
}

static int is_cancel_error(lua_State *L, int idx) {
  int yes;
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, LOOM_CANCEL_MT);
  yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return yes;
}

/* Pushes field k of the task's table of rare fields (nil if none). */
int loom_get_extra(lua_State *L, int idx, const char *k) {
  if (lua_getiuservalue(L, idx, LOOM_UV_EXTRA) != LUA_TTABLE) return LUA_TNIL;
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
  return lua_type(L, -1);
}

/* Sets field k of the task's rare fields to the value on top (popped). */
void loom_set_extra(lua_State *L, int idx, const char *k) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, LOOM_UV_EXTRA) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, LOOM_UV_EXTRA);
  }
  lua_insert(L, -2);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
}

/* Pushes the task's name: the one set, or "task-<id>". */
void loom_push_name(lua_State *L, int idx, loom_task *t) {
  if (loom_get_extra(L, idx, "name") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushfstring(L, "task-%d", (int)t->id);
  }
}

static void task_timer_fire(loom_loop *lp, loom_timer *tm) {
  loom_task *t = loom_container(tm, loom_task, timer);
  t->timed_out = 1;
  t->due = tm->deadline;
  loom_wake(lp, t, 0);
}

/* Creates a task running the function at fidx with the nargs values after
   it, queues it to start, and pushes it. Called only from C functions whose
   first upvalue is the module state. */
loom_task *loom_newtask(lua_State *L, loom_state *S, int fidx, int nargs) {
  loom_loop *lp = S->loop;
  loom_task *t = lua_newuserdatauv(L, sizeof *t, LOOM_TASK_NUV);
  int i;
  memset(t, 0, sizeof *t);
  t->timer.idx = -1;
  t->timer.fire = task_timer_fire;
  loom_list_init(&t->awaiters);
  lua_getiuservalue(L, lua_upvalueindex(1), LOOM_SUV_TASKMT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, fidx);
  lua_setiuservalue(L, -2, LOOM_UV_VALUE);
  if (nargs == 1) {
    lua_pushvalue(L, fidx + 1);
    lua_setiuservalue(L, -2, LOOM_UV_ARGS);
  } else if (nargs > 1) {
    lua_createtable(L, nargs, 0);
    for (i = 1; i <= nargs; i++) {
      lua_pushvalue(L, fidx + i);
      lua_rawseti(L, -2, i);
    }
    lua_setiuservalue(L, -2, LOOM_UV_ARGS);
  }
  t->slot = take_slot(S);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->slots_ref);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, t->slot);
  lua_pop(L, 1);
  t->id = ++S->next_id;
  t->parent = lp->current ? lp->current->id : 0;
  t->nargs = nargs;
  t->state = LOOM_NEW;
  loom_list_append(&lp->live, &t->live);
  lp->nlive++;
  loom_ready(lp, t);
  if (lp->debug) loom_debug_spawned(L);
  return t;
}

static int task_msgh(lua_State *co);

static int body_k(lua_State *co, int status, lua_KContext ctx) {
  (void)ctx;
  lua_pushboolean(co, status == LUA_OK || status == LUA_YIELD);
  lua_replace(co, 1);
  return lua_gettop(co);
}

/* The body of every task coroutine: the user's function under a yieldable
   pcall, so the coroutine always ends cleanly (reusable) and <close>
   handlers may block while an error unwinds. Returns ok, values... */
static int task_body(lua_State *co) {
  int n = lua_gettop(co) - 1;
  lua_pushcfunction(co, task_msgh);
  lua_insert(co, 1);
  return body_k(co, lua_pcallk(co, n, LUA_MULTRET, 1, 0, body_k), 0);
}

/* Gives the task a coroutine (from the pool when one is idle) with its
   body, function and arguments pushed, ready for its first resume. Runs in
   the driver's frame. Pool entries above npool are stale and harmless. */
void loom_start(loom_loop *lp, loom_task *t) {
  lua_State *L = lp->L, *co;
  loom_state *S = lp->S;
  int n = t->nargs, i;
  lua_rawgeti(L, LOOM_DRV_SLOTS, t->slot);
  if (S->npool > 0) {
    lua_rawgeti(L, LOOM_DRV_POOL, S->npool--);
    co = lua_tothread(L, -1);
  } else {
    co = lua_newthread(L);
  }
  luaL_checkstack(L, n + 2, "too many arguments");
  if (!lua_checkstack(co, n + 2)) luaL_error(L, "loom.spawn: too many arguments");
  lua_pushcfunction(co, task_body);
  lua_getiuservalue(L, -2, LOOM_UV_VALUE);
  if (n == 1) {
    lua_getiuservalue(L, -3, LOOM_UV_ARGS);
  } else if (n > 1) {
    int args = lua_gettop(L) + 1;
    lua_getiuservalue(L, -3, LOOM_UV_ARGS);
    for (i = 1; i <= n; i++) lua_rawgeti(L, args, i);
    lua_remove(L, args);
  }
  lua_xmove(L, co, 1 + n);
  lua_setiuservalue(L, -2, LOOM_UV_VALUE);
  if (n > 0) {
    lua_pushnil(L);
    lua_setiuservalue(L, -2, LOOM_UV_ARGS);
  }
  lua_pop(L, 1);
  t->co = co;
  t->nargs = 1 + n;
}

/* A failed task carries a small finalized sentinel that points back at it:
   when both become garbage, the sentinel reports the error if nobody has
   retrieved it. Tasks themselves have no __gc, which keeps them cheap. */
static void arm_report(lua_State *L, int T) {
  lua_newuserdatauv(L, 0, 1);
  lua_pushvalue(L, T);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, LOOM_REPORT_MT);
  loom_set_extra(L, T, "report");
}

/* Runs one done-notification entry (on top of L, popped): a callback, or a
   countdown counted in C. */
static void call_one(lua_State *L, loom_loop *lp, int T, loom_task *t) {
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    loom_countdown_notify(L, lp, -1, T, t);
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, T);
  lua_pushstring(L, state_names[t->state]);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: error in a done callback: %s\n", luaL_tolstring(L, -1, NULL));
    fflush(stderr);
    lua_pop(L, 2);
  }
}

/* Runs the done callbacks of the ended task at T, in registration order,
   as fn(task, status). They run in the scheduler, between task steps: they
   must not block. */
static void call_done(lua_State *L, loom_loop *lp, int T, loom_task *t) {
  int list = t->notify == 2;
  t->notify = 0;
  lua_getiuservalue(L, T, LOOM_UV_NOTIFY);
  if (!list) {
    call_one(L, lp, T, t);
  } else {
    int i, n = (int)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      call_one(L, lp, T, t);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_setiuservalue(L, T, LOOM_UV_NOTIFY);
}

/* Stores the outcome of a task that ended and wakes its awaiters. status
   LUA_OK: the body returned (ok, values...), nres values on the coroutine;
   another status: the error is on top of the coroutine, or, for a task that
   never started, it is the pending cancellation. Runs with the driver's
   stack layout; only the driver passes LUA_OK, and then the coroutine is
   recycled. */
void loom_finish(loom_loop *lp, loom_task *t, int status, int nres) {
  lua_State *L = lp->L, *co = t->co;
  loom_state *S = lp->S;
  int T;
  lua_rawgeti(L, LOOM_DRV_SLOTS, t->slot);
  T = lua_gettop(L);
  if (status == LUA_OK && lua_toboolean(co, -nres)) {
    int n = nres - 1, i;
    t->state = LOOM_DONE;
    t->nvalues = n;
    if (n == 0) {
      lua_pushnil(L);
    } else if (n == 1) {
      lua_xmove(co, L, 1);
    } else {
      luaL_checkstack(L, n + 1, "too many results");
      lua_createtable(L, n, 0);
      lua_xmove(co, L, n);
      for (i = n; i >= 1; i--) lua_rawseti(L, T + 1, i);
    }
  } else {
    if (co)
      lua_xmove(co, L, 1);
    else
      loom_get_extra(L, T, "cancel");
    if (is_cancel_error(L, -1)) {
      t->state = LOOM_CANCELLED;
    } else {
      t->state = LOOM_FAILED;
      t->unretrieved = 1;
      arm_report(L, T);
      lua_getiuservalue(L, LOOM_DRV_LOOP, 1); /* the loop's table of failed tasks */
      lua_pushvalue(L, T);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
  lua_setiuservalue(L, T, LOOM_UV_VALUE);
  if (t->cancel_pending) {
    t->cancel_pending = 0;
    lua_pushnil(L);
    loom_set_extra(L, T, "cancel");
  }
  if (co) {
    if (status == LUA_OK && S->npool < POOL_MAX) {
      lua_settop(co, 0);
      lua_pushthread(co);
      lua_xmove(co, L, 1);
      lua_rawseti(L, LOOM_DRV_POOL, ++S->npool);
    }
    t->co = NULL;
  } else if (t->nargs > 0) {
    lua_pushnil(L);
    lua_setiuservalue(L, T, LOOM_UV_ARGS);
  }
  if (t->scopes) loom_close_scopes(lp, t);
  loom_list_remove(&t->live);
  lp->nlive--;
  if (t->notify) call_done(L, lp, T, t);
  while (!loom_list_empty(&t->awaiters))
    loom_wake(lp, loom_container(t->awaiters.next, loom_task, wait), 0);
  lua_pushnil(L);
  lua_rawseti(L, LOOM_DRV_SLOTS, t->slot);
  give_slot(S, t->slot);
  t->slot = 0;
  lua_settop(L, T - 1);
}

void loom_push_cancel_error(lua_State *L, int reason) {
  int has = !lua_isnoneornil(L, reason); /* before the push: `reason` may be the next free slot */
  lua_createtable(L, 0, 1);
  if (has) {
    lua_pushvalue(L, reason);
    lua_setfield(L, -2, "reason");
  }
  luaL_setmetatable(L, LOOM_CANCEL_MT);
}

/* Requests cancellation of t with the value at `reason` (may be nil).
   A waiting or woken task raises at its current blocking call, any other
   at its next one. Returns 0 if t had already ended. */
int loom_cancel(lua_State *L, loom_loop *lp, loom_task *t, int reason) {
  if (loom_ended(t)) return 0;
  reason = lua_absindex(L, reason);
  loom_push_cancel_error(L, reason);
  return loom_cancel_with(L, lp, t, 0);
}

/* Requests cancellation of t with the cancellation error on top of L
   (popped). While another cancellation is on its way the request is
   dropped (delivered exactly once), unless that one is a deadline scope's,
   which may swallow it: then it is remembered (cancel_missed). `scope`
   says the request comes from a deadline scope. */
int loom_cancel_with(lua_State *L, loom_loop *lp, loom_task *t, int scope) {
  if (loom_ended(t)) {
    lua_pop(L, 1);
    return 0;
  }
  if (t->cancel_pending || t->throwing) {
    if (scope || !t->scope_cancel) {
      lua_pop(L, 1);
      return 1;
    }
    t->cancel_missed = 1;
    loom_pushtask(L, lp->S, t);
    lua_insert(L, -2);
    lua_getfield(L, -1, "reason");
    loom_set_extra(L, -3, "missed");
    lua_pop(L, 2);
    return 1;
  }
  t->scope_cancel = (unsigned char)scope;
  /* A deadline that passes just as the task's operation completed does not
     take that result away: the scope's cancellation waits for the next
     blocking call, and is withdrawn if the body returns first. */
  if ((t->state == LOOM_WAITING || (t->state == LOOM_READY && !scope && !t->keep_wake)) &&
      t->kept >= 0) {
    if (t->undo) {
      t->undo(L, lp, t);
      t->undo = NULL;
    }
    if (t->state == LOOM_READY) lua_settop(t->co, t->kept); /* its wake-up values */
    lua_xmove(L, t->co, 1);
    if (t->state == LOOM_WAITING) {
      loom_throw(lp, t);
    } else {
      t->nargs = 1;
      t->throwing = 1;
    }
  } else {
    t->cancel_pending = 1;
    loom_pushtask(L, lp->S, t);
    lua_insert(L, -2);
    loom_set_extra(L, -2, "cancel");
    lua_pop(L, 1);
  }
  return 1;
}

void loom_raise_pending(lua_State *L, loom_state *S, loom_task *t) {
  t->cancel_pending = 0;
  loom_pushtask(L, S, t);
  loom_get_extra(L, -1, "cancel");
  lua_pushnil(L);
  loom_set_extra(L, -3, "cancel");
  lua_error(L);
}

/* Writes the unretrieved error of the task at idx to stderr, once. */
void loom_report(lua_State *L, loom_task *t, int idx) {
  const char *name, *err;
  t->unretrieved = 0;
  loom_push_name(L, idx, t);
  name = lua_tostring(L, -1);
  lua_getiuservalue(L, idx, LOOM_UV_VALUE);
  err = luaL_tolstring(L, -1, NULL);
  loom_get_extra(L, idx, "traceback");
  if (loom_get_extra(L, idx, "spawned") == LUA_TSTRING)
    fprintf(stderr, "loom: task '%s' (spawned at %s) failed and nobody retrieved its error:\n%s\n%s\n", name,
            lua_tostring(L, -1), err, lua_isstring(L, -2) ? lua_tostring(L, -2) : "");
  else
    fprintf(stderr, "loom: task '%s' failed and nobody retrieved its error:\n%s\n%s\n", name, err,
            lua_isstring(L, -2) ? lua_tostring(L, -2) : "");
  fflush(stderr);
  /* for loom.busted, which fails a test that left one */
  lua_pushfstring(L, "task '%s' failed and nobody retrieved its error: %s", name, err);
  lua_setfield(L, LUA_REGISTRYINDEX, "loom.unretrieved");
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.state");
  ((loom_state *)lua_touserdata(L, -1))->unretrieved++;
  lua_pop(L, 6);
}

/* The message handler of every task body: the error value passes on
   unchanged; the failing task's traceback is kept beside it (the task's
   field "traceback"), for task:traceback(), the unretrieved-error report and
   loom.run's outermost re-raise. A worker thread's traceback (thread.c),
   when the error came from one, follows it. */
static int task_msgh(lua_State *co) {
  loom_state *S;
  int T;
  lua_getfield(co, LUA_REGISTRYINDEX, "loom.state");
  S = lua_touserdata(co, -1);
  lua_pop(co, 1);
  if (S == NULL || S->loop == NULL || S->loop->current == NULL) return 1;
  loom_pushtask(co, S, S->loop->current);
  T = lua_gettop(co);
  loom_push_name(co, T, S->loop->current);
  if (loom_get_extra(co, T, "spawned") == LUA_TSTRING) /* debug mode */
    lua_pushfstring(co, "stack traceback of task '%s' (spawned at %s):", lua_tostring(co, T + 1),
                    lua_tostring(co, T + 2));
  else
    lua_pushfstring(co, "stack traceback of task '%s':", lua_tostring(co, T + 1));
  luaL_traceback(co, co, NULL, 1);
  lua_pushstring(co, lua_tostring(co, -1) + strlen("stack traceback:"));
  lua_remove(co, -2);
  if (loom_get_extra(co, T, "thread_traceback") == LUA_TSTRING) {
    lua_pushnil(co);
    loom_set_extra(co, T, "thread_traceback");
    lua_pushliteral(co, "\nraised on a worker thread, whose ");
    lua_rotate(co, -2, 1);
  } else {
    lua_pop(co, 1);
  }
  lua_concat(co, lua_gettop(co) - T - 2);
  loom_set_extra(co, T, "traceback");
  lua_settop(co, 1);
  return 1;
}

static int push_values(lua_State *L, loom_task *t) {
  int i;
  if (t->nvalues == 0) return 0;
  lua_getiuservalue(L, 1, LOOM_UV_VALUE);
  if (t->nvalues == 1) return 1;
  luaL_checkstack(L, t->nvalues, "too many results");
  for (i = 1; i <= t->nvalues; i++) lua_rawgeti(L, -i, i);
  return t->nvalues;
}

/* The outcome of the ended task at index 1: its values, or raises its error. */
static int outcome(lua_State *L, loom_task *t) {
  if (t->state == LOOM_DONE) return push_values(L, t);
  t->unretrieved = 0;
  lua_getiuservalue(L, 1, LOOM_UV_VALUE);
  return lua_error(L);
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, await_k);
  return outcome(L, checktask(L, 1));
}

/***
A task: a function running concurrently with others, made by `loom.spawn`
(or `gather`, `group:spawn` ...). `task.name` is a settable string shown in
errors and debug output (default `"task-<id>"`).
@type Task
*/

/***
Waits until the task ends and returns its results, or raises its error
(the same value), or raises the cancellation error if it was cancelled.
Blocks (a cancellation point: cancelling the caller does not cancel the
awaited task).
@function Task:await
@return the task's results
@raise the task's error, or the cancellation error
@usage local t = loom.spawn(fetch, url)
local body = t:await()
*/
static int t_await(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t = checktask(L, 1);
  loom_task *me = loom_checkrunning(L, S, "await");
  if (!loom_ended(t)) {
    if (t == me) return luaL_error(L, "await: a task cannot await itself");
    lua_settop(L, 1);
    loom_suspend(L, me);
    loom_list_append(&t->awaiters, &me->wait);
    return loom_yield(L, me, await_k);
  }
  return outcome(L, t);
}

/***
Requests cancellation: the task's current (or next) blocking call raises
the cancellation error, so its `<close>` handlers and `pcall`s run as it
unwinds. A task cancelled before it started never runs. Never blocks.
@function Task:cancel
@param[opt] reason any value, kept in the error (`tostring` shows it)
@treturn boolean false if the task had already ended
@usage worker:cancel("shutting down")
*/
static int t_cancel(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t = checktask(L, 1);
  if (loom_ended(t) || S->loop == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, loom_cancel(L, S->loop, t, 2));
  return 1;
}

/***
The task's state. Never blocks.
@function Task:status
@treturn string "new", "ready", "running", "waiting", "done", "failed" or "cancelled"
@usage if t:status() == "failed" then print(t:error()) end
*/
static int t_status(lua_State *L) {
  lua_pushstring(L, state_names[checktask(L, 1)->state]);
  return 1;
}

/* Adds the value on top of L (popped) to the done notifications of the live
   task at tidx: one entry is kept as is (notify = 1), several in a list
   (notify = 2). */
void loom_add_notify(lua_State *L, int tidx) {
  loom_task *t = lua_touserdata(L, tidx);
  tidx = lua_absindex(L, tidx);
  if (t->notify == 0) {
    lua_setiuservalue(L, tidx, LOOM_UV_NOTIFY);
    t->notify = 1;
    return;
  }
  if (t->notify == 1) {
    lua_createtable(L, 2, 0);
    lua_getiuservalue(L, tidx, LOOM_UV_NOTIFY);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, tidx, LOOM_UV_NOTIFY);
    t->notify = 2;
  } else {
    lua_getiuservalue(L, tidx, LOOM_UV_NOTIFY);
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

/* loom.core._on_done(task, fn): calls fn(task, status) when the task ends (at
   once if it has). For the combinators: fn runs in the scheduler and must
   not block. */
static int l_on_done(lua_State *L) {
  loom_task *t = checktask(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (loom_ended(t)) {
    lua_pushvalue(L, 1);
    lua_pushstring(L, state_names[t->state]);
    lua_call(L, 2, 0);
    return 0;
  }
  loom_add_notify(L, 1);
  return 0;
}

/* loom.core._first_results(tasks, n): the first result of each of the n
   successfully ended tasks in the list, in order (gather's answer). */
static int l_first_results(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lua_Integer i, n = luaL_checkinteger(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstack(L, (int)n + 2, "too many results");
  for (i = 1; i <= n; i++) {
    loom_task *t;
    lua_rawgeti(L, 1, i);
    t = loom_totask(L, S, -1);
    if (t->state != LOOM_DONE) return luaL_error(L, "task %d has not succeeded", (int)i);
    if (t->nvalues == 0) {
      lua_pushnil(L);
    } else {
      lua_getiuservalue(L, -1, LOOM_UV_VALUE);
      if (t->nvalues > 1) {
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
      }
    }
    lua_remove(L, -2);
  }
  return (int)n;
}

/***
Whether the task has ended (done, failed or cancelled). Never blocks.
@function Task:done
@treturn boolean
@usage while not t:done() do loom.sleep(0.1) end
*/
static int t_done(lua_State *L) {
  lua_pushboolean(L, loom_ended(checktask(L, 1)));
  return 1;
}

/***
Whether the task ended by cancellation. Never blocks.
@function Task:cancelled
@treturn boolean
@usage t:cancel(); pcall(t.await, t); assert(t:cancelled())
*/
static int t_cancelled(lua_State *L) {
  lua_pushboolean(L, checktask(L, 1)->state == LOOM_CANCELLED);
  return 1;
}

/***
The results of a task that has ended: its values if it succeeded, else
raises its error (or the cancellation error). Raises if it has not ended.
Never blocks.
@function Task:result
@return the task's results
@raise its error; "task has not finished" while it runs
@usage for t in loom.as_completed(tasks) do print(t:result()) end
*/
static int t_result(lua_State *L) {
  loom_task *t = checktask(L, 1);
  if (!loom_ended(t)) return luaL_error(L, "result: task is not done (use await to wait for it)");
  return outcome(L, t);
}

/***
The error value of a task that failed or was cancelled (the cancellation
error), else nil. Retrieving it means it will not be reported as lost.
Never blocks.
@function Task:error
@return the error, or nil
@usage local err = t:error(); if err then log(err) end
*/
static int t_error(lua_State *L) {
  loom_task *t = checktask(L, 1);
  if (t->state != LOOM_FAILED && t->state != LOOM_CANCELLED) return 0;
  t->unretrieved = 0;
  lua_getiuservalue(L, 1, LOOM_UV_VALUE);
  return 1;
}

/* Methods first (the hot path: t:await()), then the `name` field. */
static int t_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) return 1;
  if (lua_rawequal(L, 2, lua_upvalueindex(3))) loom_push_name(L, 1, checktask(L, 1));
  return 1;
}

static int t_newindex(lua_State *L) {
  checktask(L, 1);
  if (!lua_rawequal(L, 2, lua_upvalueindex(3)))
    return luaL_error(L, "cannot set field '%s' of a task (only 'name')", luaL_tolstring(L, 2, NULL));
  luaL_argexpected(L, lua_type(L, 3) == LUA_TSTRING, 3, "string");
  lua_settop(L, 3);
  loom_set_extra(L, 1, "name");
  return 0;
}

static int t_tostring(lua_State *L) {
  loom_task *t = checktask(L, 1);
  loom_push_name(L, 1, t);
  lua_pushfstring(L, "loom.Task '%s' (%s)", lua_tostring(L, -1), state_names[t->state]);
  return 1;
}

static int report_gc(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  if (lua_type(L, -1) == LUA_TUSERDATA) {
    loom_task *t = lua_touserdata(L, -1);
    if (t->unretrieved) loom_report(L, t, lua_gettop(L));
  }
  return 0;
}

/***
Spawning tasks and the running task.
@section spawn
*/

/***
Starts `fn(...)` as a new task and returns it. The task is queued behind
the ready tasks, never run inline. Never blocks; only inside `loom.run`.
@function spawn
@tparam function fn the task's body
@param ... its arguments
@treturn Task the task
@raise "not inside a task" outside loom.run
@usage local t = loom.spawn(function(n) loom.sleep(0.1); return n * 2 end, 21)
print(t:await()) --> 42
*/
static int l_spawn(lua_State *L) {
  loom_state *S = loom_getstate(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (S->loop == NULL) return loom_not_in_task(L, "loom.spawn");
  loom_newtask(L, S, 1, lua_gettop(L) - 1);
  return 1;
}

/***
The running task, or nil outside a task. Never blocks.
@function current
@treturn Task|nil
@usage loom.current().name = "worker"
*/
static int l_current(lua_State *L) {
  loom_state *S = loom_getstate(L);
  if (S->loop == NULL || S->loop->current == NULL) return 0;
  loom_pushtask(L, S, S->loop->current);
  return 1;
}

/***
Whether a value is the cancellation error (as raised by blocking calls
of a cancelled task). Never blocks.
@function is_cancelled
@param err any value, typically from pcall
@treturn boolean
@usage local ok, err = pcall(loom.sleep, 10)
if not ok and loom.is_cancelled(err) then cleanup(); error(err, 0) end
*/
static int l_is_cancelled(lua_State *L) {
  lua_pushboolean(L, is_cancel_error(L, 1));
  return 1;
}

static int c_tostring(lua_State *L) {
  if (lua_getfield(L, 1, "reason") == LUA_TNIL) {
    lua_pushliteral(L, "cancelled");
    return 1;
  }
  lua_pushfstring(L, "cancelled: %s", luaL_tolstring(L, -1, NULL));
  return 1;
}

/* Expects [state, module] on the stack. */
void loom_open_task(lua_State *L) {
  static const luaL_Reg methods[] = {{"await", t_await},   {"cancel", t_cancel},
                                     {"done", t_done},     {"cancelled", t_cancelled},
                                     {"result", t_result}, {"error", t_error},
                                     {"status", t_status}, {"traceback", loom_task_traceback},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__index", t_index},
                                  {"__newindex", t_newindex},
                                  {"__tostring", t_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"spawn", l_spawn},
                                   {"current", l_current},
                                   {"is_cancelled", l_is_cancelled},
                                   {"_on_done", l_on_done},
                                   {"_first_results", l_first_results},
                                   {NULL, NULL}};
  loom_state *S = lua_touserdata(L, -2);
  luaL_newmetatable(L, LOOM_CANCEL_MT);
  lua_pushcfunction(L, c_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, LOOM_REPORT_MT);
  lua_pushcfunction(L, report_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LOOM_TASK); /* [S, mod, mt] */
  S->task_mt = lua_topointer(L, -1);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, -4, LOOM_SUV_TASKMT);
  lua_pushvalue(L, -3);
  lua_createtable(L, 0, 8);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);  /* [S, mod, mt, S, methods] */
  lua_pushliteral(L, "name");
  luaL_setfuncs(L, meta, 3);
  lua_pop(L, 1);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
}
