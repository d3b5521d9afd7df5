/*
 * http.c: loom.HttpConn, HTTP/1.1 over a loom.Stream with http_parser: the
 * object (one per connection, a server's or a client's), its life and its
 * method table. The work is in http_parse.c (reading messages),
 * http_format.c (writing them; a server response's framing and keep-alive
 * are decided there) and http_serve.c (the server's common case in C);
 * http.h says how they fit. The Lua layer (lua/loom/http/) owns handlers'
 * other answers, the server's connection loop and the client's pool.
 */
#include <stdlib.h>
#include <string.h>
#include "http.h"

const char *const loom_http_keys[] = {
    NULL,   "method", "target", "path", "upgrade", "status", "version", "headers", "keep_alive", "_conn",
    "_req", "_server", "req",   "ran",  "ok",      "n",      "res",     "err",     "code",       "unsent"};

/* conn:stream(): the underlying loom.Stream. */
static int c_stream(lua_State *L) {
  loom_http_check(L);
  lua_getiuservalue(L, 1, HC_STREAM);
  return 1;
}

static int c_gc(lua_State *L) {
  hconn *hc = lua_touserdata(L, 1);
  free(hc->hbuf);
  free(hc->bbuf);
  free(hc->wbuf);
  hc->hbuf = hc->bbuf = hc->wbuf = NULL;
  return 0;
}

static double opt_seconds(lua_State *L, int idx) {
  lua_Number s = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, s >= 0, idx, "must not be negative");
  return s;
}

/* _http_conn(stream, kind, headers_mt, message_mt, max_head, max_body,
   idle_timeout, head_timeout, body_timeout, cancel_gone): a connection
   reading requests (kind "request") or responses ("response") from the
   stream; with cancel_gone, the handlers conn:serve runs are cancelled if
   the client goes while they run. */
static int c_new(lua_State *L) {
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  static const char *const kinds[] = {"request", "response", NULL};
  int kind = luaL_checkoption(L, 2, NULL, kinds);
  hconn *hc;
  lua_settop(L, 10);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  hc = lua_newuserdatauv(L, sizeof *hc, HC_NUV);
  memset(hc, 0, sizeof *hc);
  hc->kind = kind == 0 ? HTTP_REQUEST : HTTP_RESPONSE;
  http_parser_init(&hc->p, (enum http_parser_type)hc->kind);
  hc->p.data = hc;
  hc->st = st;
  hc->max_head = (size_t)luaL_optinteger(L, 5, 16 * 1024);
  hc->max_body = lua_isnoneornil(L, 6) ? SIZE_MAX : (size_t)luaL_checkinteger(L, 6);
  hc->idle_timeout = opt_seconds(L, 7);
  hc->head_timeout = opt_seconds(L, 8);
  hc->body_timeout = opt_seconds(L, 9);
  hc->cancel_gone = lua_toboolean(L, 10);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, HC_STREAM);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, HC_HEADERS_MT);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, -2, HC_MESSAGE_MT);
  return 1;
}

/* Expects [state, module]: adds _http_conn, _http_parse_url,
   _http_unescape. The methods get the headers metatable as upvalue 3, so
   it is made here and exposed as _http_headers_mt for the Lua layer. */
void loom_open_http(lua_State *L) {
  static const luaL_Reg own[] = {{"stream", c_stream}, {NULL, NULL}};
  const luaL_Reg *const lists[] = {own, loom_http_parse_methods, loom_http_format_methods, loom_http_serve_methods};
  size_t l;
  int S = lua_absindex(L, -2), mod = S + 1, mt, i;
  lua_newtable(L); /* the headers metatable; http.lua fills in __index */
  lua_setfield(L, mod, "_http_headers_mt");
  luaL_newmetatable(L, "loom.HttpConn");
  mt = lua_gettop(L);
  lua_createtable(L, K_LAST, 0);
  for (i = K_METHOD; i <= K_LAST; i++) {
    lua_pushstring(L, loom_http_keys[i]);
    lua_rawseti(L, -2, i);
  }
  lua_newtable(L);
  for (l = 0; l < sizeof lists / sizeof lists[0]; l++) {
    for (i = 0; lists[l][i].name; i++) {
      lua_pushvalue(L, S);
      lua_pushvalue(L, mt);
      lua_getfield(L, mod, "_http_headers_mt");
      lua_pushvalue(L, mt + 1);
      lua_pushcclosure(L, lists[l][i].func, 4);
      lua_setfield(L, -2, lists[l][i].name);
    }
  }
  lua_setfield(L, mt, "__index");
  lua_pop(L, 1); /* the keys */
  lua_pushvalue(L, S);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, c_gc, 2);
  lua_setfield(L, mt, "__gc");
  lua_pushvalue(L, S);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, c_new, 2);
  lua_setfield(L, mod, "_http_conn");
  for (i = 0; loom_http_parse_functions[i].name; i++) {
    lua_pushcfunction(L, loom_http_parse_functions[i].func);
    lua_setfield(L, mod, loom_http_parse_functions[i].name);
  }
  lua_pop(L, 1);
}
