/*
 * lsocket.c: the hot calls of loom.socket (lua/loom/socket.lua) in C:
 * LuaSocket's tcp:receive of a line or of n bytes and tcp:send of a whole
 * string, on a connected socket whose call needs nothing of the Lua layer.
 * Libraries written for LuaSocket (redis-lua, MQTT clients ...) make two or
 * three such calls per request, so one Lua frame and its checks fewer per
 * call is a tenth of their time.
 *
 * The Lua layer keeps `sock._fast`: the loom.Stream when every call may come
 * here (connected, no timeout, receiving not shut, nothing read ahead by
 * select), else false. A call here reads that field and its arguments; any
 * other call, and any read that cannot simply be served (the end, an error,
 * a closed stream), goes to the Lua layer's own method with the arguments
 * as they came; a send that fails takes its error string from the Lua
 * layer's table, so LuaSocket's results stay in one place. The
 * reads are a parser on the stream's buffer (stream.h), as http_parse.c and
 * ws.c are.
 */
#include <string.h>

#include "loom.h"
#include "stream.h"

/* Upvalues: 1 = module state, 2 = the Lua layer's method, 3 = LuaSocket's
   error strings by loom's error code (the Lua layer's table). */
#define SLOW lua_upvalueindex(2)
#define ERRORS lua_upvalueindex(3)

/* The stream of a socket whose calls may be served here, or NULL. */
static lstream *fast_stream(lua_State *L) {
  lstream *st;
  if (lua_type(L, 1) != LUA_TTABLE) return NULL;
  lua_getfield(L, 1, "_fast");
  st = lua_touserdata(L, -1); /* set by the Lua layer: a loom.Stream or false */
  lua_pop(L, 1);
  return st;
}

static int pass_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* The call made by the Lua layer's method, with the first n arguments. */
static int slow(lua_State *L, int n) {
  lua_settop(L, n);
  lua_pushvalue(L, SLOW);
  lua_insert(L, 1);
  lua_callk(L, n, LUA_MULTRET, 0, pass_k);
  return lua_gettop(L);
}

/* ---------------------------------------------------------------- receive */

/* What receive's pattern asks for: -1 a line, n >= 0 that many bytes,
   -2 something for the Lua layer. */
static lua_Integer wanted(lua_State *L) {
  switch (lua_type(L, 2)) {
    case LUA_TNONE:
    case LUA_TNIL:
      return -1;
    case LUA_TSTRING: {
      const char *p = lua_tostring(L, 2);
      return strcmp(p, "*l") == 0 || strcmp(p, "l") == 0 ? -1 : -2;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, 2) && lua_tointeger(L, 2) >= 0) return lua_tointeger(L, 2);
      return -2;
    default:
      return -2;
  }
}

/* Pushes the line p[0, n) without its CRs (LuaSocket drops every one). */
static void push_line(lua_State *L, const char *p, size_t n) {
  luaL_Buffer b;
  const char *cr = memchr(p, '\r', n), *end = p + n;
  if (cr == NULL) {
    lua_pushlstring(L, p, n);
    return;
  }
  luaL_buffinitsize(L, &b, n);
  for (; p < end; p++)
    if (*p != '\r') luaL_addchar(&b, *p);
  luaL_pushresult(&b);
}

static int receive_k(lua_State *L, int status, lua_KContext ctx);

/* Serves the read from the buffer, or waits. Stack: [sock, pattern, stream]. */
static int receive_step(lua_State *L, loom_task *t, lstream *st, lua_Integer want) {
  size_t have;
  const char *p = loom_stream_peek(st, &have);
  if (want < 0) {
    const char *nl = have ? memchr(p, '\n', have) : NULL; /* an empty buffer may have no memory */
    if (nl) {
      push_line(L, p, (size_t)(nl - p));
      loom_stream_consume(st, (size_t)(nl - p) + 1);
      goto done;
    }
  } else if (have >= (size_t)want) {
    lua_pushlstring(L, p, (size_t)want);
    loom_stream_consume(st, (size_t)want);
    goto done;
  }
  if (loom_stream_end(st)) return slow(L, 2); /* a partial result, or an error: the Lua layer's */
  return loom_stream_wait(L, t, st, 0, receive_k);
done:
  lua_pushnil(L);
  lua_pushnil(L); /* as LuaSocket: three results */
  return 3;
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, receive_k);
  lstream *st = fast_stream(L);
  (void)status;
  /* another task may have closed the socket, or read ahead with select */
  if (st != lua_touserdata(L, 3) || st->closed) return slow(L, 2);
  return receive_step(L, t, st, wanted(L));
}

/* tcp:receive(pattern, prefix): see socket.lua. */
static int ls_receive(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int n = lua_gettop(L);
  lstream *st = fast_stream(L);
  lua_Integer want;
  loom_task *t;
  if (st == NULL || st->closed || n > 3 || (n == 3 && !lua_isnil(L, 3)) || (want = wanted(L)) == -2)
    return slow(L, n);
  t = loom_checkrunning(L, S, "receive");
  lua_settop(L, 2);
  lua_pushlightuserdata(L, st);
  return receive_step(L, t, st, want);
}

/* ---------------------------------------------------------------- send */

/* Turns the nil, msg, code a failed stream call pushed into LuaSocket's
   nil, err, 0 bytes sent: err from the Lua layer's table, else msg. */
static int send_failed(lua_State *L) {
  if (lua_getfield(L, ERRORS, lua_tostring(L, -1)) == LUA_TSTRING)
    lua_replace(L, -3);
  else
    lua_pop(L, 1);
  lua_pushnumber(L, 0);
  lua_replace(L, -2);
  return 3;
}

/* The index of the last byte sent: the whole string's (LuaSocket's counts
   are floats, its results three). */
static int sent(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnumber(L, (lua_Number)lua_rawlen(L, 2));
  lua_pushnil(L);
  lua_pushnil(L);
  return 3;
}

/* After a wait for the queue to drain. Stack: [sock, data, stream]. */
static int send_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, send_k);
  (void)status;
  if (loom_stream_drained(L, t, lua_touserdata(L, 3))) return send_failed(L);
  return sent(L);
}

/* tcp:send(data, i, j): see socket.lua. */
static int ls_send(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int n = lua_gettop(L);
  lstream *st = fast_stream(L);
  loom_task *t;
  uv_buf_t b;
  size_t len;
  if (st == NULL || n != 2 || lua_type(L, 2) != LUA_TSTRING) return slow(L, n);
  t = loom_checkrunning(L, S, "send");
  b.base = (char *)lua_tolstring(L, 2, &len);
  b.len = len;
  lua_pushlightuserdata(L, st);
  switch (loom_stream_send(L, st, &b, 1)) {
    case 0: /* more than the high-water mark queued */
      return loom_stream_drain(L, t, st, send_k);
    case 1:
      return sent(L);
    default:
      return send_failed(L);
  }
}

/* loom.core._lsocket(receive, send, errors): the C receive and send in front
   of the Lua layer's (socket.lua's TCP methods). */
static int l_lsocket(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, ls_receive, 3);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, ls_send, 3);
  return 2;
}

/* Expects [state, module]. */
void loom_open_lsocket(lua_State *L) {
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_lsocket, 1);
  lua_setfield(L, -2, "_lsocket");
}
