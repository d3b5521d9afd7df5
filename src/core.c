/*
 * core.c: luaopen_loom_core, the entry point of the C module. Creates the
 * per-Lua-state module state (the running loop, the coroutine pool) and
 * registers each file's functions with it as their first upvalue.
 */
#include <signal.h>
#include <string.h>
#include "loom.h"
#include "tls.h"

/* loom.core._last_handles(): handles the last loom.run found still open when
   its tasks had all ended (0 for a clean program). For tests. */
static int l_last_handles(lua_State *L) {
  lua_pushinteger(L, loom_getstate(L)->last_handles);
  return 1;
}

void loom_classfuncs(lua_State *L, int tbl, int S, int mt, const luaL_Reg *funcs) {
  lua_pushvalue(L, tbl);
  lua_pushvalue(L, S);
  lua_pushvalue(L, mt);
  luaL_setfuncs(L, funcs, 2);
  lua_pop(L, 1);
}

void loom_newclass(lua_State *L, int S, const char *name, const luaL_Reg *methods, const luaL_Reg *meta) {
  int mt;
  luaL_newmetatable(L, name);
  mt = lua_gettop(L);
  lua_newtable(L);
  loom_classfuncs(L, mt + 1, S, mt, methods);
  lua_setfield(L, mt, "__index");
  if (meta) loom_classfuncs(L, mt, S, mt, meta);
}

static int state_gc(lua_State *L) {
  loom_free_slots(lua_touserdata(L, 1));
  loom_free_scopes(lua_touserdata(L, 1));
  loom_thread_shutdown();
  return 0;
}

int luaopen_loom_core(lua_State *L) {
  signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error value, not the end of the process */
  static const luaL_Reg funcs[] = {{"run", loom_run}, {"_last_handles", l_last_handles}, {NULL, NULL}};
  loom_state *S = lua_newuserdatauv(L, sizeof *S, LOOM_SUV_NUV);
  memset(S, 0, sizeof *S);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, LOOM_SUV_POOL);
  lua_newtable(L); /* the slot table: anchors every live task */
  S->slots_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "loom.state");
  lua_newtable(L);
  loom_open_errors(L);
  loom_open_task(L);
  loom_open_debug(L);
  loom_open_inspect(L);
  loom_open_timer(L);
  loom_open_sync(L);
  loom_open_queue(L);
  loom_open_watch(L);
  loom_open_fs(L);
  loom_open_fswatch(L);
  loom_open_stream(L);
  loom_open_tcp(L);
  loom_open_tls(L);
  loom_open_lsocket(L);
  loom_open_http(L);
  loom_open_ws(L);
  loom_open_inflate(L);
  loom_open_pg(L);
  loom_open_udp(L);
  loom_open_process(L);
  loom_open_thread(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
  luaL_getmetatable(L, LOOM_TASK);
  lua_setfield(L, -2, "_Task"); /* for the Lua layer's argument checks */
  return 1;
}
