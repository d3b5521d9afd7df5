/*
 * debug.c: loom's debugging aids. Debug mode (LOOM_DEBUG=1, or
 * loom.run(fn, {debug = true})) records where each task was spawned and
 * where it last yielded, and warns on stderr when one step of a task holds
 * the loop longer than a threshold (a blocking call made inside a task);
 * loom.tasks(), task:traceback() and the data loom.dump() prints work in
 * any mode. Costs nothing when debug mode is off: the scheduler only tests
 * a flag.
 */

/***
@module loom
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loom.h"

/* A frame of loom's own Lua modules is not where the user's code is. */
static int is_library(const lua_Debug *ar) {
  const char *s = ar->short_src;
  return (strstr(s, "/loom/") != NULL || strncmp(s, "loom/", 5) == 0) && strstr(s, ".lua") != NULL &&
         strstr(s, "examples/") == NULL && strstr(s, "spec/") == NULL;
}

/* Pushes "file:line" of the innermost frame of co at or above level that
   runs the user's Lua code, or nil. */
static int push_where(lua_State *L, lua_State *co, int level) {
  lua_Debug ar;
  for (; lua_getstack(co, level, &ar); level++) {
    if (!lua_getinfo(co, "Sl", &ar) || ar.currentline <= 0 || is_library(&ar)) continue;
    lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
    return 1;
  }
  lua_pushnil(L);
  return 0;
}

/* Pushes the name of the loom function a suspended coroutine waits in: the
   one the user's code called (nil when unknown). */
static void push_waits_in(lua_State *L, lua_State *co) {
  lua_Debug ar;
  const char *name = NULL, *innermost = NULL;
  int level, user = 0;
  for (level = 0; lua_getstack(co, level, &ar); level++) {
    if (!lua_getinfo(co, "Sln", &ar)) continue;
    if (ar.currentline > 0 && !is_library(&ar)) {
      user = 1;
      break;
    }
    if (ar.name) name = ar.name;
    if (ar.name && innermost == NULL) innermost = ar.name;
  }
  if (!user) name = innermost; /* a task of loom's own (a connection's): where loom waits */
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushnil(L);
}

/* Called by loom_newtask in debug mode, the new task on top of L's stack:
   remembers where the user's code spawned it. */
void loom_debug_spawned(lua_State *L) {
  if (push_where(L, L, 1)) loom_set_extra(L, -2, "spawned");
  else lua_pop(L, 1);
}

/* Called by the scheduler in debug mode after each step of t (status: what
   lua_resume returned), before an ended task is finished: records where
   the task now waits and warns when the step took longer than the limit. */
void loom_debug_step(loom_loop *lp, loom_task *t, int status) {
  lua_State *L = lp->L;
  uint64_t took = uv_hrtime() - lp->step_start;
  int T;
  loom_pushtask(L, lp->S, t);
  T = lua_gettop(L);
  if (status == LUA_YIELD) push_where(L, t->co, 0);
  else lua_pushliteral(L, "its end");
  if (took > lp->slow_ns) {
    loom_push_name(L, T, t);
    if (loom_get_extra(L, T, "where") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushliteral(L, "its start");
    }
    if (loom_get_extra(L, T, "spawned") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushliteral(L, "?");
    }
    fprintf(stderr,
            "loom: slow step: task '%s' held the loop for %.0f ms (resumed at %s, ran to %s; spawned at %s)."
            " A blocking call inside a task stops every other task: use loom's own calls or"
            " loom.thread.run.\n",
            lua_tostring(L, -3), (double)took / 1e6, lua_tostring(L, -2),
            lua_isnil(L, T + 1) ? "?" : lua_tostring(L, T + 1), lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 3);
  }
  loom_set_extra(L, T, "where");
  lua_pop(L, 1);
}

/***
Where the task is: the stack of a suspended task (the blocking call it
waits in and the user's code that made it), of the running task, of a
failed task where it raised (its error first), or a line saying it has not
started or has ended. Never blocks.
@function Task:traceback
@tparam[opt] string msg a first line
@treturn string
@usage print(stuck:traceback("stuck task:"))
*/
int loom_task_traceback(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_totask(L, S, 1);
  const char *msg = luaL_optstring(L, 2, NULL);
  if (t == NULL) return luaL_typeerror(L, 1, LOOM_TASK);
  if (S->loop && S->loop->current == t) {
    luaL_traceback(L, L, msg, 1);
  } else if (t->co && (t->state == LOOM_WAITING || t->state == LOOM_READY)) {
    luaL_traceback(L, t->co, msg, 0);
  } else if (t->state == LOOM_FAILED && loom_get_extra(L, 1, "traceback") == LUA_TSTRING) {
    const char *err;
    lua_getiuservalue(L, 1, LOOM_UV_VALUE); /* the error, then where it was raised */
    err = luaL_tolstring(L, -1, NULL);
    lua_pushfstring(L, "%s%s%s\n%s", msg ? msg : "", msg ? "\n" : "", err, lua_tostring(L, -3));
  } else {
    static const char *const what[] = {"has not started yet", "is ready", "is running", "is waiting",
                                       "has ended (done)", "has ended (failed)", "has ended (cancelled)"};
    loom_push_name(L, 1, t);
    lua_pushfstring(L, "%s%stask '%s' %s", msg ? msg : "", msg ? "\n" : "", lua_tostring(L, -1), what[t->state]);
  }
  return 1;
}

/***
Debugging.
@section debugging
*/

/***
The live tasks (not ended), oldest first. Never blocks.
@function tasks
@treturn {Task,...}
@usage for _, t in ipairs(loom.tasks()) do print(t.name, t:status()) end
*/
static int l_tasks(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_link *n;
  int i = 0;
  lua_newtable(L);
  if (S->loop == NULL) return 1;
  for (n = S->loop->live.next; n != &S->loop->live; n = n->next) {
    loom_pushtask(L, S, loom_container(n, loom_task, live));
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* _task_info(task): id, parent's id (0: none), where the user's code in it
   is now (suspended tasks; nil otherwise), where it was spawned (debug mode;
   else nil), and for a waiting task how long it has waited, in seconds, and
   the loom function it waits in (its name as the caller called it). */
static int l_task_info(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_totask(L, S, 1);
  if (t == NULL) return luaL_typeerror(L, 1, LOOM_TASK);
  lua_pushinteger(L, t->id);
  lua_pushinteger(L, t->parent);
  if (S->loop && S->loop->current == t) push_where(L, L, 1);
  else if (t->co && (t->state == LOOM_WAITING || t->state == LOOM_READY)) push_where(L, t->co, 0);
  else lua_pushnil(L);
  loom_get_extra(L, 1, "spawned");
  if (t->state == LOOM_WAITING && S->loop && t->since) {
    lua_pushnumber(L, (lua_Number)(uv_hrtime() - t->since) / 1e9);
    push_waits_in(L, t->co);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  return 6;
}

/* _debug(on [, slow_seconds]): debug mode for the next loom.run. */
static int l_debug(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lua_Number slow = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, slow >= 0, 2, "must not be negative");
  S->debug_next = lua_toboolean(L, 1);
  S->slow_next = (uint64_t)(slow * 1e9);
  return 0;
}

/* Called by loom.run: debug mode from _debug or the environment
   (LOOM_DEBUG=1, LOOM_DEBUG_SLOW=seconds; default 0.1). */
void loom_debug_setup(loom_state *S, loom_loop *lp) {
  const char *env = getenv("LOOM_DEBUG"), *slow = getenv("LOOM_DEBUG_SLOW");
  lp->debug = S->debug_next || (env && *env && strcmp(env, "0") != 0);
  lp->slow_ns = S->slow_next ? S->slow_next : slow && atof(slow) > 0 ? (uint64_t)(atof(slow) * 1e9) : 100000000u;
  S->debug_next = 0;
  S->slow_next = 0;
}

/* Expects [state, module]. */
void loom_open_debug(lua_State *L) {
  static const luaL_Reg funcs[] = {{"tasks", l_tasks}, {"_task_info", l_task_info}, {"_debug", l_debug},
                                   {NULL, NULL}};
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
}
