/*
 * http_serve.c: conn:serve, a server connection's common case in C (see
 * http.h). Each plain request (kept-alive HTTP/1.1, not HEAD, no Expect or
 * Upgrade: see conn:next) goes to handler(req) (or handler(req, res), with
 * a res made here, when the server and the Response metatable are given);
 * when it returns status, headers, body and set nothing on res, the answer
 * is formatted by http_format.c (which decides its framing and keep-alive)
 * and sent here, and the next request is read. Anything else goes back to
 * the Lua layer (lua/loom/http/server.lua) as one result table:
 *   {err =, code = [, status =]}      the connection ended or failed; status
 *                                     is the answer owed (400, 408, 413 ...)
 *   {req =}                           a request that is not plain: not run
 *   {req =, ran = true, ok =, n =, res =, ...}
 *                                     a request whose handler ran: ok and
 *                                     its n results (or the error) as
 *                                     xpcall's, answered (conn:state() says
 *                                     so) or for the Lua layer to answer
 *   {unsent = true, err =, code =}    a response could not be sent
 * The Lua loop it replaces measured about 3,700 instructions of the 13,500
 * a hello-world request took.
 */
#include "http.h"

/* The stack while serving: [conn, handler, msgh, server, Response], then
   per request [req, plain, res, results...]. */
enum { SV_SERVER = 4, SV_RESMT, SV_REQ, SV_PLAIN, SV_RES, SV_A, SV_B, SV_C };

static int serve_next_k(lua_State *L, int status, lua_KContext ctx);
static int serve_handler_k(lua_State *L, int status, lua_KContext ctx);
static int serve_drain_k(lua_State *L, int status, lua_KContext ctx);

/* The n failure values on top (nil or false, msg, code [, status]) as a
   result table. */
static int failed(lua_State *L, int n, int unsent) {
  int base = lua_gettop(L) - n + 1;
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, base + 1);
  loom_http_setk(L, K_ERR);
  lua_pushvalue(L, base + 2);
  loom_http_setk(L, K_CODE);
  if (n > 3) {
    lua_pushvalue(L, base + 3);
    loom_http_setk(L, K_STATUS);
  }
  if (unsent) {
    lua_pushboolean(L, 1);
    loom_http_setk(L, K_UNSENT);
  }
  return 1;
}

/* A request the handler ran: its results (ok) or its error, with req and
   res, as a result table. */
static int hand_over(lua_State *L, int ok) {
  int i, n = ok ? 3 : 1;
  lua_settop(L, SV_A + n - 1);
  lua_createtable(L, n, 5);
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, SV_A + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushvalue(L, SV_REQ);
  loom_http_setk(L, K_REQ);
  lua_pushboolean(L, 1);
  loom_http_setk(L, K_RAN);
  lua_pushboolean(L, ok);
  loom_http_setk(L, K_OK);
  lua_pushinteger(L, n);
  loom_http_setk(L, K_N);
  lua_pushvalue(L, SV_RES);
  loom_http_setk(L, K_RES);
  return 1;
}

/* The handler's outcome is on the stack above [.., req, plain, res]: a, b,
   c (status LUA_OK) or the error. Answers it and returns -1 to go on, or
   returns the result for the Lua layer; may yield for backpressure. */
static int serve_answer(lua_State *L, hconn *hc, loom_task *t, int status) {
  lua_Integer code;
  size_t bl;
  const char *body;
  uv_buf_t b[2];
  int len, r, n = 1;
  loom_stream_watch_gone(hc->st, NULL); /* the handler has ended */
  if (status != LUA_OK) return hand_over(L, 0);
  code = lua_isinteger(L, SV_A) ? lua_tointeger(L, SV_A) : 0;
  if (code < 100 || code > 999 || !lua_istable(L, SV_B) || lua_type(L, SV_C) != LUA_TSTRING ||
      hc->rstate != RS_NONE || hc->rtouched)
    return hand_over(L, 1);
  body = lua_tolstring(L, SV_C, &bl);
  if ((len = loom_http_format_response(L, hc, code, SV_B, bl, 0)) < 0) { /* as the handler's error */
    lua_replace(L, SV_A);
    return hand_over(L, 0);
  }
  hc->rstate = RS_DONE;
  b[0] = uv_buf_init(hc->wbuf, (unsigned)len);
  if (bl > 0 && !hc->rnobody) b[n++] = uv_buf_init((char *)body, (unsigned)bl);
  r = loom_stream_send(L, hc->st, b, n);
  if (r == 0) return loom_stream_drain(L, t, hc->st, serve_drain_k);
  if (r > 1) {
    hc->rkeep = 0;
    return failed(L, r, 1);
  }
  lua_pop(L, 1); /* true */
  return hc->rkeep ? -1 : hand_over(L, 1);
}

/* Runs from a parsed request (next_step's n results on top) for as long as
   requests are plain and answers are status, headers, body. */
static int serve_run(lua_State *L, hconn *hc, loom_task *t, int n) {
  for (;;) {
    int r, nargs = 1;
    if (n != 2) return failed(L, n, 0);
    if (!lua_toboolean(L, -1)) { /* not plain: {req =} */
      lua_createtable(L, 0, 1);
      lua_pushvalue(L, SV_REQ);
      loom_http_setk(L, K_REQ);
      return 1;
    }
    if (lua_istable(L, SV_RESMT)) { /* res = {_conn, _req, _server} */
      lua_createtable(L, 0, 3);
      lua_pushvalue(L, 1);
      loom_http_setk(L, K_RCONN);
      lua_pushvalue(L, SV_REQ);
      loom_http_setk(L, K_RREQ);
      lua_pushvalue(L, SV_SERVER);
      loom_http_setk(L, K_RSERVER);
      lua_pushvalue(L, SV_RESMT);
      lua_setmetatable(L, -2);
      nargs = 2;
    } else {
      lua_pushnil(L);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, SV_REQ);
    if (nargs == 2) lua_pushvalue(L, SV_RES);
    if (hc->cancel_gone) loom_stream_watch_gone(hc->st, t);
    r = serve_answer(L, hc, t, lua_pcallk(L, nargs, 3, 3, 0, serve_handler_k));
    if (r >= 0) return r;
    lua_settop(L, SV_RESMT);
    loom_http_begin_next(hc);
    n = loom_http_next_step(L, hc, t, serve_next_k);
  }
}

static int serve_next_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, serve_next_k);
  hconn *hc = lua_touserdata(L, 1);
  (void)status;
  if (t->timed_out) return serve_run(L, hc, t, loom_http_head_timeout(L, hc));
  return serve_run(L, hc, t, loom_http_next_step(L, hc, t, serve_next_k));
}

/* The handler blocked and has now returned (LUA_YIELD) or failed. */
static int serve_handler_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = S->loop->current;
  hconn *hc = lua_touserdata(L, 1);
  int r;
  (void)ctx;
  r = serve_answer(L, hc, t, status == LUA_YIELD ? LUA_OK : status);
  if (r >= 0) return r;
  lua_settop(L, SV_RESMT);
  loom_http_begin_next(hc);
  return serve_run(L, hc, t, loom_http_next_step(L, hc, t, serve_next_k));
}

static int serve_drain_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, serve_drain_k);
  hconn *hc = lua_touserdata(L, 1);
  int n = loom_stream_drained(L, t, hc->st);
  (void)status;
  if (n) {
    hc->rkeep = 0;
    return failed(L, n, 1);
  }
  if (!hc->rkeep) return hand_over(L, 1);
  lua_settop(L, SV_RESMT);
  loom_http_begin_next(hc);
  return serve_run(L, hc, t, loom_http_next_step(L, hc, t, serve_next_k));
}

/* conn:serve(handler, msgh [, server, Response]): serves requests as above
   until one needs the Lua layer; its result table. May block. */
static int c_serve(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "serve");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, SV_RESMT);
  if (hc->rstate != RS_NONE && !hc->rkeep) return failed(L, loom_fail_closed(L), 0);
  loom_http_begin_next(hc);
  return serve_run(L, hc, t, loom_http_next_step(L, hc, t, serve_next_k));
}

/* conn:set_closing(): the server is closing: no connection is kept after
   its current response, and plain requests go to the Lua layer. */
static int c_set_closing(lua_State *L) {
  loom_http_check(L)->closing = 1;
  return 0;
}

const luaL_Reg loom_http_serve_methods[] = {{"serve", c_serve}, {"set_closing", c_set_closing}, {NULL, NULL}};
