/*
 * errors.c: how loom reports errors, in one place. Operational failures as
 * values (`nil, msg, code`, libuv's code names), the userdata check of the
 * methods, and the "not inside a task" misuse error, which names the
 * function the user called (not the loom internal that noticed) and points
 * at the user's line.
 */
#include <string.h>
#include "loom.h"

static int fail3(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

int loom_fail_closed(lua_State *L) {
  return fail3(L, "closed", "ECLOSED");
}

int loom_fail_timeout(lua_State *L) {
  return fail3(L, "timeout", "ETIMEDOUT");
}

int loom_fail(lua_State *L, int err, const char *prefix) {
  lua_pushnil(L);
  if (prefix)
    lua_pushfstring(L, "%s: %s", prefix, uv_strerror(err));
  else
    lua_pushstring(L, uv_strerror(err));
  lua_pushstring(L, uv_err_name(err));
  return 3;
}

void *loom_checkudata(lua_State *L, int arg, int mtidx) {
  void *p = lua_touserdata(L, arg);
  if (p != NULL && lua_getmetatable(L, arg)) {
    int same = lua_rawequal(L, -1, mtidx);
    lua_pop(L, 1);
    if (same) return p;
  }
  lua_getfield(L, mtidx, "__name");
  luaL_typeerror(L, arg, lua_tostring(L, -1));
  return NULL;
}

/* A frame of loom itself: C, or a Lua file of the loom package (the source
   directory lua/loom/init.lua registered, "loom.srcdir"). */
static int is_loom_frame(lua_State *L, lua_Debug *ar) {
  size_t n;
  const char *dir;
  int mine;
  if (strcmp(ar->what, "C") == 0) return 1;
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.srcdir");
  dir = lua_tolstring(L, -1, &n);
  mine = dir != NULL && strncmp(ar->source, dir, n) == 0;
  lua_pop(L, 1);
  return mine;
}

/* Looks for the function at fidx in the table at tidx (and, depth 1, in
   its tables); pushes "<prefix>.<key>[.<key>]" and returns 1 when found. */
static int find_in(lua_State *L, int fidx, int tidx, const char *prefix, int depth) {
  lua_pushnil(L);
  while (lua_next(L, tidx)) {
    int k = lua_gettop(L) - 1;
    if (lua_type(L, k) == LUA_TSTRING && lua_tostring(L, k)[0] != '_') {
      if (lua_rawequal(L, k + 1, fidx)) {
        lua_pushfstring(L, "%s.%s", prefix, lua_tostring(L, k));
        lua_replace(L, k);
        lua_pop(L, 1);
        return 1;
      }
      if (depth > 0 && lua_type(L, k + 1) == LUA_TTABLE) {
        lua_pushfstring(L, "%s.%s", prefix, lua_tostring(L, k));
        if (find_in(L, fidx, k + 1, lua_tostring(L, -1), depth - 1)) {
          lua_replace(L, k);
          lua_settop(L, k);
          return 1;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* Pushes the name of frame ar's function as the loom module holds it
   ("loom.tcp.listen"), or NULL's absence: returns 0 and pushes nothing. */
static int push_func_name(lua_State *L, lua_Debug *ar) {
  int top = lua_gettop(L), found = 0;
  lua_getinfo(L, "f", ar);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "loom") == LUA_TTABLE) found = find_in(L, top + 1, top + 3, "loom", 1);
  if (found) {
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
  }
  lua_settop(L, top);
  return 0;
}

/* fname: what the Lua layer says was called, or (from C) what to say when
   the stack does not tell. */
static int not_in_task(lua_State *L, const char *fname, int explicit) {
  lua_Debug ar;
  int level = 0, entry = -1;
  /* the outermost loom frame below the first user frame is what the user called */
  while (lua_getstack(L, level, &ar)) {
    lua_getinfo(L, "S", &ar);
    if (!is_loom_frame(L, &ar)) break;
    entry = level++;
  }
  if (entry < 0 || !lua_getstack(L, level, &ar))
    return luaL_error(L, "%s: not inside a task (wrap the program in loom.run)", fname);
  lua_getstack(L, entry, &ar);
  if (explicit || !push_func_name(L, &ar)) {
    lua_getinfo(L, "n", &ar);
    if (!explicit && ar.namewhat && strcmp(ar.namewhat, "method") == 0 && lua_getlocal(L, &ar, 1) &&
        luaL_getmetafield(L, -1, "__name") == LUA_TSTRING) /* obj:method() */
      lua_pushfstring(L, "%s:%s", lua_tostring(L, -1), ar.name);
    else
      lua_pushstring(L, fname);
  }
  luaL_where(L, entry + 1);
  lua_pushfstring(L, "%s%s: not inside a task (wrap the program in loom.run)", lua_tostring(L, -1),
                  lua_tostring(L, -2));
  return lua_error(L);
}

int loom_not_in_task(lua_State *L, const char *fname) {
  return not_in_task(L, fname, 0);
}

/* loom.core._not_in_task(fname): the same error, for the Lua layer. */
static int l_not_in_task(lua_State *L) {
  return not_in_task(L, luaL_checkstring(L, 1), 1);
}

void loom_open_errors(lua_State *L) {
  lua_pushcfunction(L, l_not_in_task);
  lua_setfield(L, -2, "_not_in_task");
}
