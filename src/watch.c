/*
 * watch.c: countdowns, the C side of the combinators. A countdown watches
 * a number of tasks and wakes whoever waits on it when its condition is met:
 * every task ended ("settle"), every task succeeded or the first failed
 * ("all", gather's rule), or the first ended ("first"). The scheduler counts
 * it down as each watched task ends, without calling into Lua.
 */
#include <string.h>
#include "loom.h"

#define LOOM_COUNTDOWN "loom.Countdown"
enum { CD_SETTLE, CD_ALL, CD_FIRST };

typedef struct countdown {
  lua_Integer left;
  int mode;
  int fired;
  loom_link waiters;
} countdown;

/* Uservalue 1 of a countdown: the task that decided it (the first failure
   for "all", the first ended for "first"). Upvalues of its functions:
   1 = module state, 2 = the countdown metatable. */
#define MT lua_upvalueindex(2)

static void fire(loom_loop *lp, countdown *cd) {
  cd->fired = 1;
  while (lp && !loom_list_empty(&cd->waiters))
    loom_wake(lp, loom_container(cd->waiters.next, loom_task, wait), 0);
}

/* Counts down the countdown at cdidx for the ended task at T. */
static void count(lua_State *L, loom_loop *lp, countdown *cd, int cdidx, int T, loom_task *t) {
  int decisive = (cd->mode == CD_FIRST) || (cd->mode == CD_ALL && t->state != LOOM_DONE);
  cd->left--;
  if (cd->fired) return;
  if (decisive) {
    lua_pushvalue(L, T);
    lua_setiuservalue(L, cdidx, 1);
  }
  if (decisive || cd->left <= 0) fire(lp, cd);
}

/* Called by the scheduler for a done-notification entry at idx that is not a
   function: counts down if it is a countdown. Returns 0 otherwise. */
int loom_countdown_notify(lua_State *L, loom_loop *lp, int idx, int T, loom_task *t) {
  countdown *cd = lua_touserdata(L, idx);
  const void *mt = NULL;
  if (cd != NULL && lua_getmetatable(L, idx)) {
    mt = lua_topointer(L, -1);
    lua_pop(L, 1);
  }
  if (mt == NULL || mt != lp->S->countdown_mt) return 0;
  count(L, lp, cd, lua_absindex(L, idx), T, t);
  return 1;
}

static countdown *checkcd(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

/* loom.core._countdown(n, mode): a countdown over n tasks, mode "settle",
   "all" or "first". Fired at once when n is 0. */
static int l_countdown(lua_State *L) {
  static const char *const modes[] = {"settle", "all", "first", NULL};
  lua_Integer n = luaL_checkinteger(L, 1);
  int mode = luaL_checkoption(L, 2, NULL, modes);
  countdown *cd = lua_newuserdatauv(L, sizeof *cd, 1);
  memset(cd, 0, sizeof *cd);
  cd->left = n;
  cd->mode = mode;
  cd->fired = n <= 0;
  loom_list_init(&cd->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* countdown:watch(task): counts the task down when it ends (at once if it has). */
static int cd_watch(lua_State *L) {
  loom_state *S = loom_getstate(L);
  countdown *cd = checkcd(L);
  loom_task *t = loom_totask(L, S, 2);
  lua_settop(L, 2);
  if (loom_ended(t)) {
    count(L, S->loop, cd, 1, 2, t);
    return 0;
  }
  lua_pushvalue(L, 1);
  loom_add_notify(L, 2);
  return 0;
}

/* countdown:spawn(fn, ...): loom.spawn(fn, ...) with the new task watched. */
static int cd_spawn(lua_State *L) {
  loom_state *S = loom_getstate(L);
  checkcd(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (S->loop == NULL) return loom_not_in_task(L, "loom.spawn");
  loom_newtask(L, S, 2, lua_gettop(L) - 2);
  lua_pushvalue(L, 1);
  loom_add_notify(L, -2);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, wait_k);
  (void)status;
  lua_pushboolean(L, !t->timed_out);
  return 1;
}

/* countdown:wait([timeout]): blocks until the countdown fires; true, or
   false on timeout. May block. */
static int cd_wait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  countdown *cd = checkcd(L);
  uint64_t deadline = lua_isnoneornil(L, 2) ? UINT64_MAX : loom_deadline(L, 2);
  loom_task *t = loom_checkrunning(L, S, "wait");
  if (cd->fired) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&cd->waiters, &t->wait);
  if (deadline != UINT64_MAX) loom_timer_start(S->loop, &t->timer, deadline);
  return loom_yield(L, t, wait_k);
}

/* countdown:task(): the task that decided the countdown, or nil. */
static int cd_task(lua_State *L) {
  checkcd(L);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* Expects [state, module] on the stack. */
void loom_open_watch(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"watch", cd_watch}, {"spawn", cd_spawn}, {"wait", cd_wait},
      {"task", cd_task},   {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"_countdown", l_countdown}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  loom_newclass(L, S, LOOM_COUNTDOWN, methods, NULL);
  ((loom_state *)lua_touserdata(L, S))->countdown_mt = lua_topointer(L, -1);
  loom_classfuncs(L, S + 1, S, lua_gettop(L), funcs);
  lua_pop(L, 1);
}
