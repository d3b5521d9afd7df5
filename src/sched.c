/*
 * sched.c: the scheduler. Owns the loop of one loom.run: the ready queue,
 * resuming tasks, telling a wake-up from a stray resume, the driver that
 * alternates ready tasks and libuv polls, deadlock detection and teardown.
 */
#include <stdlib.h>
#include <string.h>
#include "loom.h"
#include "handle.h"

#define SLICE_NS 1000000 /* poll I/O at least this often while tasks are ready */
#define MAIN_IDX 4       /* the main task, on loom.run's stack after LOOM_DRV_* */

void loom_ready(loom_loop *lp, loom_task *t) {
  t->next_ready = NULL;
  if (lp->ready_tail)
    lp->ready_tail->next_ready = t;
  else
    lp->ready_head = t;
  lp->ready_tail = t;
}

/* Makes a waiting task ready; the `nargs` values its blocking call returns
   are already pushed on its stack. */
void loom_wake(loom_loop *lp, loom_task *t, int nargs) {
  if (t->timer.idx >= 0) loom_timer_stop(lp, &t->timer);
  if (loom_linked(&t->wait)) loom_list_remove(&t->wait);
  t->state = LOOM_READY;
  t->nargs = nargs;
  loom_ready(lp, t);
}

/* Wakes a waiting task so that its blocking call raises the value on top of
   its stack. */
void loom_throw(loom_loop *lp, loom_task *t) {
  t->throwing = 1;
  loom_wake(lp, t, 1);
}

/* The running task, checked to be able to block here: the error messages
   of API.md for every way of calling a blocking function from the wrong place.
   Raises a pending cancellation: every blocking call is a cancellation point. */
loom_task *loom_checkrunning(lua_State *L, loom_state *S, const char *fname) {
  loom_loop *lp = S->loop;
  loom_task *t = lp ? lp->current : NULL;
  if (t == NULL) loom_not_in_task(L, fname);
  if (t->co != L)
    luaL_error(L, "%s: cannot block inside a coroutine that is not a loom task (use loom.spawn)",
               fname);
  if (!lua_isyieldable(L))
    luaL_error(L, "%s: cannot block here (inside a metamethod, iterator or C call that cannot yield)",
               fname);
  if (t->cancel_pending) loom_raise_pending(L, S, t);
  return t;
}

void loom_suspend(lua_State *L, loom_task *t) {
  t->state = LOOM_WAITING;
  t->kept = lua_gettop(L);
  t->timed_out = 0;
  t->keep_wake = 0;
  t->undo = NULL;
}

/* First call of every continuation. Only the scheduler's resume of the task
   that blocked is a wake-up; any other resume (a user's coroutine.resume) is
   answered by yielding again, with the caller's arguments dropped and the
   values of a wake-up already queued kept. */
loom_task *loom_resumed(lua_State *L, loom_state *S, lua_KContext ctx, lua_KFunction k) {
  loom_task *t = (loom_task *)ctx;
  if (S->loop == NULL || S->loop->current != t) {
    lua_settop(L, t->kept + (t->state == LOOM_READY ? t->nargs : 0));
    lua_yieldk(L, 0, ctx, k);
  }
  if (t->throwing) {
    t->throwing = 0;
    lua_error(L);
  }
  return t;
}

static void step(loom_loop *lp, loom_task *t) {
  int nres, status;
  if (t->state == LOOM_NEW) {
    if (t->cancel_pending) { /* cancelled before it ran: it never runs */
      loom_finish(lp, t, LUA_ERRRUN, 0);
      return;
    }
    loom_start(lp, t);
  } else if (lua_status(t->co) != LUA_YIELD) {
    /* its coroutine was closed from outside (coroutine.close): it is gone */
    lua_settop(t->co, 0);
    lua_pushliteral(t->co, "loom: the task's coroutine was closed from outside");
    loom_finish(lp, t, LUA_ERRRUN, 0);
    return;
  }
  t->state = LOOM_RUNNING;
  lp->current = t;
  if (t->due) { /* how late a timer's task runs is the lag users feel */
    if (!lp->vclock) loom_lag_note(lp, lp->step_start, t->due);
    t->due = 0;
  }
  status = lua_resume(t->co, lp->L, t->nargs, &nres);
  lp->current = NULL;
  lp->steps++;
  if (lp->debug) loom_debug_step(lp, t, status);
  if (status != LUA_YIELD) {
    loom_finish(lp, t, status, nres);
    return;
  }
  lua_pop(t->co, nres);
  t->since = lp->step_start; /* waiting from this step on, for loom.dump */
  if (t->state == LOOM_RUNNING) { /* a plain coroutine.yield(): as sleep(0) */
    t->kept = -1; /* not in a loom call: a cancellation waits for one */
    t->state = LOOM_WAITING;
    loom_wake(lp, t, 0);
  }
}

/* Runs ready tasks in FIFO order, including those they make ready, until the
   queue is empty or the slice is used up (then timers and libuv get their
   turn). The clock is read after every step: a few long steps must not hold
   timers and I/O back for longer than one of them. */
static void run_ready(loom_loop *lp) {
  uint64_t now = uv_hrtime(), end = now + SLICE_NS;
  loom_task *t;
  while ((t = lp->ready_head) != NULL) {
    lp->ready_head = t->next_ready;
    if (lp->ready_head == NULL) lp->ready_tail = NULL;
    lp->step_start = now;
    step(lp, t);
    if ((now = uv_hrtime()) > end) break;
  }
}

/* Called from a libuv callback that has just woken a task: when that task
   is the only ready work, it runs now, while the data it was handed is hot
   in the cache (as a C callback would use it), instead of after the whole
   poll's batch. With other tasks ready, FIFO order wins: nothing happens. */
void loom_run_inline(loom_loop *lp) {
  if (lp->current == NULL && lp->ready_head != NULL && lp->ready_head == lp->ready_tail) run_ready(lp);
}

/* True when the running task's step has lasted a whole slice: a call that
   would return at once (data already buffered) lets the others run first. */
int loom_step_expired(loom_loop *lp) {
  return uv_hrtime() - lp->step_start > SLICE_NS;
}

static int pause_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, pause_k);
  return lua_gettop(L);
}

/* Returns every value on the stack, after the other ready tasks have run
   (as sleep(0) does). For fast paths of blocking calls whose step has run
   long; the caller leaves only its results on the stack. */
int loom_pause(lua_State *L, loom_task *t) {
  loom_suspend(L, t);
  t->keep_wake = 1; /* its results are already taken: a cancellation waits for the next call */
  loom_wake(loom_getstate(L)->loop, t, 0);
  return loom_yield(L, t, pause_k);
}

static void cancel_all(loom_loop *lp) {
  lua_State *L = lp->L;
  loom_link *n;
  for (n = lp->live.next; n != &lp->live; n = n->next) {
    loom_task *t = loom_container(n, loom_task, live);
    lua_pushnil(L);
    loom_cancel(L, lp, t, lua_gettop(L));
    lua_pop(L, 1);
  }
}

/* Nothing is ready, no timer is armed and no handle is active: no waiting
   task can ever be woken. The main task (or, once it has ended, every
   waiting task) gets an error at its blocking call instead of a hang. */
static void deadlock(loom_loop *lp) {
  static const char msg[] = "loom: deadlock: every task is waiting and nothing can wake them";
  loom_link *n;
  if (lp->main->state == LOOM_WAITING) {
    lua_pushstring(lp->main->co, msg);
    loom_throw(lp, lp->main);
    return;
  }
  for (n = lp->live.next; n != &lp->live; n = n->next) {
    loom_task *t = loom_container(n, loom_task, live);
    if (t->state == LOOM_WAITING) {
      lua_pushstring(t->co, msg);
      loom_throw(lp, t);
    }
  }
}

/* Runs with the stack [loop, pool, slots] (LOOM_DRV_*). */
static int driver(lua_State *L) {
  loom_loop *lp = lua_touserdata(L, LOOM_DRV_LOOP);
  for (;;) {
    uint64_t now;
    run_ready(lp);
    if (lp->nlive == 0 && (lp->lingering == 0 || !uv_loop_alive(&lp->uv))) break;
    if (loom_ended(lp->main) && !lp->closing) {
      lp->closing = 1;
      cancel_all(lp);
      continue;
    }
    now = loom_time(lp);
    loom_timers_fire(lp, now);
    if (lp->ready_head) {
      uv_run(&lp->uv, UV_RUN_NOWAIT);
      continue;
    }
    if (lp->vclock) {
      if (lp->heap_n == 0 && !uv_loop_alive(&lp->uv)) {
        deadlock(lp);
        continue;
      }
      loom_virtual_wait(lp);
      continue;
    }
    loom_timers_arm(lp, now);
    loom_assert(lp->heap_n == 0 || uv_is_active((uv_handle_t *)&lp->timer));
    if (!uv_loop_alive(&lp->uv)) {
      deadlock(lp);
      continue;
    }
    uv_run(&lp->uv, UV_RUN_ONCE);
  }
  return 0;
}

static void count_and_close(uv_handle_t *h, void *arg) {
  loom_loop *lp = arg;
  if (h == (uv_handle_t *)&lp->timer || h == (uv_handle_t *)&lp->jobs_async) {
    uv_close(h, NULL);
    return;
  }
  if (uv_is_closing(h)) return;
  lp->S->last_handles++;
  if (h->data)
    ((loom_handle *)h->data)->teardown(h->data);
  else
    uv_close(h, NULL);
}

/* After an internal error in the driver, tasks may still be suspended: close
   their coroutines (running their <close> handlers) so no frame outlives the
   loop its continuation would look at. */
static void abandon(loom_loop *lp) {
  while (!loom_list_empty(&lp->live)) {
    loom_task *t = loom_container(lp->live.next, loom_task, live);
    if (t->co) {
      lua_resetthread(t->co);
      lua_pushliteral(t->co, "loom: task abandoned after an internal error");
    } else {
      lua_pushnil(lp->L);
      loom_cancel(lp->L, lp, t, lua_gettop(lp->L));
      lua_pop(lp->L, 1);
    }
    loom_finish(lp, t, LUA_ERRRUN, 0);
  }
}

static void teardown(loom_loop *lp) {
  loom_thread_detach(lp);
  loom_inspect_close(lp);
  lp->S->last_handles = 0;
  uv_walk(&lp->uv, count_and_close, lp);
  uv_run(&lp->uv, UV_RUN_DEFAULT);
  uv_loop_close(&lp->uv);
  free(lp->heap);
  lp->heap = NULL;
  free(lp->readbuf);
  lp->readbuf = NULL;
}

static void report_unretrieved(lua_State *L, int failed) {
  lua_pushnil(L);
  while (lua_next(L, failed)) {
    loom_task *t = lua_touserdata(L, -2);
    lua_pop(L, 1);
    if (t->unretrieved) loom_report(L, t, lua_gettop(L));
  }
}

/* loom.run(fn, ...): runs fn(...) as the main task of a fresh loop and returns
   its results or raises its error; leftover tasks are cancelled and awaited,
   handles closed. Blocks the caller (it is the loop). */
int loom_run(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int nargs = lua_gettop(L) - 1, status, base;
  loom_loop *lp;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (S->loop) return luaL_error(L, "loom.run: a loop is already running (use loom.spawn inside it)");
  lp = lua_newuserdatauv(L, sizeof *lp, 1);
  memset(lp, 0, sizeof *lp);
  lua_newtable(L); /* failed tasks, weak keys: reported at the end if unseen */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, -2, 1);
  lua_insert(L, 1); /* [lp, fn, args...] */
  if (uv_loop_init(&lp->uv) != 0) return luaL_error(L, "loom.run: cannot create the event loop");
  uv_timer_init(&lp->uv, &lp->timer);
  loom_thread_attach(lp);
  lp->S = S;
  lp->L = L;
  loom_debug_setup(S, lp);
  lp->vclock = S->vclock_next;
  S->vclock_next = 0;
  loom_list_init(&lp->live);
  S->loop = lp;
  lua_getiuservalue(L, lua_upvalueindex(1), LOOM_SUV_POOL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->slots_ref);
  lua_rotate(L, 2, 2); /* [lp, pool, slots, fn, args...] */
  lp->main = loom_newtask(L, S, 4, nargs);
  lua_pushliteral(L, "main");
  lua_setfield(L, -2, "name");
  lua_replace(L, MAIN_IDX);
  lua_settop(L, MAIN_IDX);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, driver, 1);
  lua_pushvalue(L, LOOM_DRV_LOOP);
  lua_pushvalue(L, LOOM_DRV_POOL);
  lua_pushvalue(L, LOOM_DRV_SLOTS);
  status = lua_pcall(L, 3, 0, 0);
  if (status != LUA_OK) abandon(lp);
  S->loop = NULL;
  teardown(lp);
  lp->main->unretrieved = 0; /* raised by loom.run itself */
  lua_getiuservalue(L, 1, 1);
  report_unretrieved(L, lua_gettop(L));
  lua_pop(L, 1);
  if (status != LUA_OK) return lua_error(L);
  if (lp->main->state == LOOM_FAILED) { /* the outermost level: a string says where it was raised */
    lua_settop(L, MAIN_IDX);
    lua_getiuservalue(L, MAIN_IDX, LOOM_UV_VALUE);
    if (lua_type(L, -1) == LUA_TSTRING && loom_get_extra(L, MAIN_IDX, "traceback") == LUA_TSTRING)
      lua_pushfstring(L, "%s\n%s", lua_tostring(L, -2), lua_tostring(L, -1));
    lp->main->unretrieved = 0;
    return lua_error(L);
  }
  base = lua_gettop(L);
  lua_getfield(L, MAIN_IDX, "result");
  lua_pushvalue(L, MAIN_IDX);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - base;
}
