/*
 * http_format.c: the writing side of loom.HttpConn (see http.h): request
 * heads (a client's), and a server's response to the current request:
 * its status and headers as the handler sets them, then its head and body
 * in one write, or its head and a body streamed in pieces. The response's
 * framing (Content-Length, chunked, as it is) and whether the connection
 * goes on after it are decided here, in one place (decide_keep), for the
 * Lua layer's answers and conn:serve's alike; the Lua layer asks
 * (conn:keep, conn:state). Owns the buffer heads are formatted in.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "http.h"

typedef struct wbuf {
  hconn *hc;
  size_t len;
  int bad;
} wbuf;

static void put_slow(wbuf *w, const char *s, size_t n) {
  if (w->bad || loom_http_grow(&w->hc->wbuf, &w->hc->wcap, w->len + n) < 0) {
    w->bad = 1;
    return;
  }
  memcpy(w->hc->wbuf + w->len, s, n);
  w->len += n;
}

static inline void put(wbuf *w, const char *s, size_t n) {
  if (n == 0) return;
  if (w->len + n > w->hc->wcap) {
    put_slow(w, s, n);
    return;
  }
  memcpy(w->hc->wbuf + w->len, s, n);
  w->len += n;
}

#define PUTLIT(w, s) put((w), "" s, sizeof(s) - 1)

static void put_int(wbuf *w, size_t v, int hex) {
  char tmp[32], *e = tmp + sizeof tmp, *p = e;
  unsigned base = hex ? 16 : 10;
  do {
    *--p = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  put(w, p, (size_t)(e - p));
}

static const char *reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

/* The Date header's value, formatted once a second. */
static const char *http_date(void) {
  static char buf[40];
  static time_t last;
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return buf;
}

/* RFC 9110 token characters, for header names and methods. */
static int is_token_char(int c) {
  static unsigned char table[256];
  if (!table['a']) {
    int i;
    for (i = 33; i < 127; i++) table[i] = strchr("()<>@,;:\\\"/[]?={}", i) == NULL;
  }
  return table[c & 255];
}

static int same(const char *a, size_t al, const char *b) {
  size_t i;
  if (al != strlen(b)) return 0;
  for (i = 0; i < al; i++)
    if ((a[i] | 0x20) != b[i] && !(a[i] == '-' && b[i] == '-')) return 0;
  return 1;
}

/* Which headers put_headers saw (its result, or'ed). */
enum { G_HOST = 1, G_DATE = 2, G_CLOSE = 4, G_LENGTH = 8 };

/* Writes the headers of the table at idx, skipping those the framing sets
   (Content-Length too unless keep_length) and, with skip, those the table
   at skip also has (its values win). Returns which of the G_ headers it
   saw, or -1 with an error message pushed for a name or value that would
   break the message. */
static int put_headers(lua_State *L, wbuf *w, int idx, int skip, int keep_length) {
  int given = 0;
  if (lua_isnoneornil(L, idx)) return 0;
  if (!lua_istable(L, idx)) {
    lua_pushfstring(L, "headers: table expected, got %s", luaL_typename(L, idx));
    return -1;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kl, vl, i;
    const char *k, *v;
    int n = 1, j;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pushliteral(L, "header names must be strings");
      return -1;
    }
    if (skip) {
      lua_pushvalue(L, -2);
      if (lua_rawget(L, skip) != LUA_TNIL) {
        lua_pop(L, 2);
        continue;
      }
      lua_pop(L, 1);
    }
    k = lua_tolstring(L, -2, &kl);
    for (i = 0; i < kl; i++) {
      if (!is_token_char((unsigned char)k[i])) {
        lua_pushfstring(L, "invalid header name '%s'", k);
        return -1;
      }
    }
    if (kl == 0) {
      lua_pushliteral(L, "empty header name");
      return -1;
    }
    if (same(k, kl, "host")) given |= G_HOST;
    if (same(k, kl, "date")) given |= G_DATE;
    if (same(k, kl, "content-length")) given |= G_LENGTH;
    if (same(k, kl, "connection") && lua_type(L, -1) == LUA_TSTRING) {
      size_t vl0;
      const char *v0 = lua_tolstring(L, -1, &vl0);
      if (same(v0, vl0, "close")) given |= G_CLOSE; /* the handler wants the connection closed */
    }
    if (same(k, kl, "connection") || same(k, kl, "transfer-encoding") ||
        (same(k, kl, "content-length") && !keep_length)) {
      lua_pop(L, 1);
      continue;
    }
    if (lua_type(L, -1) == LUA_TTABLE) n = (int)lua_rawlen(L, -1);
    for (j = 1; j <= n; j++) {
      if (lua_type(L, -1) == LUA_TTABLE) lua_rawgeti(L, -1, j);
      else lua_pushvalue(L, -1);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
        lua_pushfstring(L, "header '%s': string or number expected, got %s", k, luaL_typename(L, -1));
        return -1;
      }
      v = lua_tolstring(L, -1, &vl);
      for (i = 0; i < vl; i++) {
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0') {
          lua_pushfstring(L, "header '%s': invalid character in value", k);
          return -1;
        }
      }
      put(w, k, kl);
      PUTLIT(w, ": ");
      put(w, v, vl);
      PUTLIT(w, "\r\n");
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return given;
}

/* nil, the message on top, "EINVAL": a head that cannot be sent. */
static int bad_head(lua_State *L) {
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushliteral(L, "EINVAL");
  return 3;
}

/* ---------------------------------------------------------------- decisions */

/* Whether the connection goes on after the response being formatted: the
   one place this is decided. Not when the client or the handler asked
   (Connection: close), the server is closing, the request could not be
   read whole, the client was asked to wait for 100 Continue and never got
   it (its body may still come), the request upgraded, or a streamed body
   without a length can only end with the connection (HTTP/1.0). */
static int decide_keep(const hconn *hc, int given, int streaming) {
  const http_parser *p = &hc->p;
  if ((given & G_CLOSE) || hc->closing || hc->broken || hc->err_status || p->upgrade) return 0;
  if (!http_should_keep_alive(p)) return 0;
  if (hc->expect && !hc->continued && hc->begun && !hc->msg_done) return 0;
  if (streaming && p->http_minor == 0 && !(given & G_LENGTH)) return 0;
  return 1;
}

int loom_http_format_response(lua_State *L, hconn *hc, lua_Integer status, int hidx, size_t bl, int streaming) {
  wbuf w = {hc, 0, 0};
  const char *r = reason((int)status);
  int given = 0, g, pending = 0, nobody;
  PUTLIT(&w, "HTTP/1.1 ");
  put_int(&w, (size_t)status, 0);
  put(&w, " ", 1);
  put(&w, r, strlen(r));
  PUTLIT(&w, "\r\n");
  if (hc->rtouched && lua_getiuservalue(L, 1, HC_PENDING) == LUA_TTABLE) pending = lua_gettop(L);
  else if (hc->rtouched) lua_pop(L, 1);
  if (pending) {
    g = put_headers(L, &w, pending, lua_istable(L, hidx) ? hidx : 0, streaming);
    if (g < 0) {
      lua_remove(L, pending);
      return -1;
    }
    given |= g;
  }
  if ((g = put_headers(L, &w, hidx, 0, streaming)) < 0) {
    if (pending) lua_remove(L, pending);
    return -1;
  }
  if (pending) lua_remove(L, pending);
  given |= g;
  nobody = hc->p.method == HTTP_HEAD || status < 200 || status == 204 || status == 304;
  hc->rkeep = decide_keep(hc, given, streaming);
  hc->rnobody = nobody;
  hc->rframing = !streaming ? FR_LENGTH : (given & G_LENGTH) || hc->p.http_minor == 0 ? FR_RAW : FR_CHUNKED;
  if (!(given & G_DATE)) {
    PUTLIT(&w, "Date: ");
    put(&w, http_date(), 29);
    PUTLIT(&w, "\r\n");
  }
  if (hc->rframing == FR_CHUNKED) {
    PUTLIT(&w, "Transfer-Encoding: chunked\r\n");
  } else if (!streaming && status >= 200 && status != 204 && status != 304) {
    PUTLIT(&w, "Content-Length: ");
    put_int(&w, bl, 0);
    PUTLIT(&w, "\r\n");
  }
  if (!hc->rkeep) PUTLIT(&w, "Connection: close\r\n");
  else if (hc->p.http_minor == 0) PUTLIT(&w, "Connection: keep-alive\r\n");
  PUTLIT(&w, "\r\n");
  if (w.bad) return luaL_error(L, "out of memory");
  return (int)w.len;
}

/* ---------------------------------------------------------------- sending */

static int sent_k(lua_State *L, int status, lua_KContext ctx);

/* After loom_stream_send's r: true, or the failure, which also ends the
   response (nothing more can follow it on this connection). */
static int sent(lua_State *L, hconn *hc, loom_task *t, int r) {
  if (r == 0) return loom_stream_drain(L, t, hc->st, sent_k);
  if (r > 1) {
    hc->rstate = RS_DONE;
    hc->rkeep = 0;
  }
  return r;
}

static int sent_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, sent_k);
  hconn *hc = lua_touserdata(L, 1);
  int n = loom_stream_drained(L, t, hc->st);
  (void)status;
  if (n) return sent(L, hc, t, n);
  lua_pushboolean(L, 1);
  return 1;
}

/* Sends hc->wbuf's first len bytes and the string at bidx (0: none). */
static int send_wbuf(lua_State *L, loom_task *t, hconn *hc, size_t len, int bidx) {
  uv_buf_t b[2];
  int n = 1;
  size_t bl = 0;
  const char *body = bidx ? lua_tolstring(L, bidx, &bl) : NULL;
  b[0] = uv_buf_init(hc->wbuf, (unsigned)len);
  if (body && bl > 0) b[n++] = uv_buf_init((char *)body, (unsigned)bl);
  return sent(L, hc, t, loom_stream_send(L, hc->st, b, n));
}

/* ---------------------------------------------------------------- the response */

static void check_unsent(lua_State *L, hconn *hc, const char *what) {
  if (hc->kind != HTTP_REQUEST) luaL_error(L, "%s: not a server's connection", what);
  if (hc->rstate != RS_NONE) luaL_error(L, "%s: the response head was already sent", what);
}

/* conn:status(n): the status of the response to come (default 200). */
static int c_status(lua_State *L) {
  hconn *hc = loom_http_check(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 100 && n <= 999, 2, "status must be 100-999");
  check_unsent(L, hc, "status");
  hc->rstatus = n;
  if (!hc->rtouched) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, HC_PENDING);
    hc->rtouched = 1;
  }
  return 0;
}

/* conn:header(name, value): sets a header of the response to come (nil
   removes it); conn:header(name): its value, whatever the spelling of its
   name, or nil. */
static int c_header(lua_State *L) {
  hconn *hc = loom_http_check(L);
  size_t nl;
  const char *name = luaL_checklstring(L, 2, &nl);
  if (lua_gettop(L) == 2) {
    if (hc->kind != HTTP_REQUEST || !hc->rtouched || lua_getiuservalue(L, 1, HC_PENDING) != LUA_TTABLE) return 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      size_t kl;
      const char *k = lua_tolstring(L, -2, &kl);
      if (kl == nl && strncasecmp(k, name, nl) == 0) return 1;
      lua_pop(L, 1);
    }
    return 0;
  }
  lua_settop(L, 3);
  check_unsent(L, hc, "header");
  if (!hc->rtouched || lua_getiuservalue(L, 1, HC_PENDING) != LUA_TTABLE) {
    if (hc->rtouched) lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, HC_PENDING);
    hc->rtouched = 1;
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* conn:clear(): forgets the status and headers set for the response to
   come (an error answer replaces what the handler prepared). */
static int c_clear(lua_State *L) {
  hconn *hc = loom_http_check(L);
  check_unsent(L, hc, "clear");
  hc->rstatus = 200;
  hc->rtouched = 0;
  return 0;
}

/* conn:state(): "none" (nothing sent), "streaming" (the head is out, the
   body follows) or "done", for the response to the current request. */
static int c_state(lua_State *L) {
  static const char *const names[] = {"none", "streaming", "done"};
  lua_pushstring(L, names[loom_http_check(L)->rstate]);
  return 1;
}

/* conn:keep(): whether the connection goes on after the response to the
   current request (decided when its head went out; false until it is
   whole). */
static int c_keep(lua_State *L) {
  hconn *hc = loom_http_check(L);
  lua_pushboolean(L, hc->rstate == RS_DONE && hc->rkeep);
  return 1;
}

/* conn:continue(): answers "Expect: 100-continue" before the body is read,
   once, and only while nothing else was sent. true, or nil, msg, code. May
   block. */
static int c_continue(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "continue");
  uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
  int r;
  if (!hc->expect || hc->continued || hc->rstate != RS_NONE) {
    lua_pushboolean(L, 1);
    return 1;
  }
  hc->continued = 1;
  lua_settop(L, 1);
  r = loom_stream_send(L, hc->st, &b, 1);
  return r ? r : loom_stream_drain(L, t, hc->st, NULL);
}

/* conn:respond([status, headers, body]): the whole response to the current
   request, in one write: the status (default: conn:status's), the headers
   set with conn:header and those given (which win), Date, Content-Length
   (the body's; none for 1xx, 204, 304; HEAD's body is not sent) and
   Connection as decided. true, or nil, msg, code ("EINVAL": headers that
   cannot be sent, nothing was). May block (backpressure). */
static int c_respond(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "respond");
  lua_Integer status = luaL_optinteger(L, 2, hc->rstatus);
  size_t bl = 0;
  int len;
  luaL_argcheck(L, status >= 100 && status <= 999, 2, "status must be 100-999");
  luaL_optlstring(L, 4, "", &bl);
  check_unsent(L, hc, "respond");
  lua_settop(L, 4);
  if ((len = loom_http_format_response(L, hc, status, 3, bl, 0)) < 0) return bad_head(L);
  hc->rstate = RS_DONE;
  return send_wbuf(L, t, hc, (size_t)len, hc->rnobody || lua_isnil(L, 4) ? 0 : 4);
}

/* conn:start([status, headers]): the head of a streamed response: with a
   Content-Length among the headers (or to an HTTP/1.0 client) the body is
   sent as it is, otherwise chunked. true, or nil, msg, code. May block. */
static int c_start(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "start");
  lua_Integer status = luaL_optinteger(L, 2, hc->rstatus);
  int len;
  luaL_argcheck(L, status >= 100 && status <= 999, 2, "status must be 100-999");
  check_unsent(L, hc, "start");
  lua_settop(L, 3);
  if ((len = loom_http_format_response(L, hc, status, 3, 0, 1)) < 0) return bad_head(L);
  hc->rstate = RS_STREAMING;
  return send_wbuf(L, t, hc, (size_t)len, 0);
}

/* conn:body(data): the next piece of a streamed body (framed as conn:start
   decided; nothing is sent for a response without a body); conn:body():
   its end (the last chunk). true, or nil, msg, code. May block. */
static int c_body(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "body");
  size_t n = 0;
  const char *d = luaL_optlstring(L, 2, NULL, &n);
  wbuf w = {hc, 0, 0};
  uv_buf_t b[3];
  if (hc->rstate != RS_STREAMING) return luaL_error(L, "body: no streamed response is under way");
  lua_settop(L, 2);
  if (d == NULL) hc->rstate = RS_DONE;
  if (hc->rnobody || (d != NULL && n == 0) || (d == NULL && hc->rframing != FR_CHUNKED)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (hc->rframing != FR_CHUNKED) {
    b[0] = uv_buf_init((char *)d, (unsigned)n);
    return sent(L, hc, t, loom_stream_send(L, hc->st, b, 1));
  }
  if (d == NULL) {
    PUTLIT(&w, "0\r\n\r\n");
    return send_wbuf(L, t, hc, w.len, 0);
  }
  put_int(&w, n, 1);
  PUTLIT(&w, "\r\n");
  if (w.bad) return luaL_error(L, "out of memory");
  b[0] = uv_buf_init(hc->wbuf, (unsigned)w.len);
  b[1] = uv_buf_init((char *)d, (unsigned)n);
  b[2] = uv_buf_init("\r\n", 2);
  return sent(L, hc, t, loom_stream_send(L, hc->st, b, 3));
}

/* ---------------------------------------------------------------- requests */

/* conn:request(method, target, host, headers, body): writes a request head
   (Host unless the headers have one; Content-Length for a body, or for
   methods that carry one) and the body. true, or nil, msg, code. May block. */
static int c_request(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "request");
  size_t ml, tl, hl, bl = 0, i;
  const char *m = luaL_checklstring(L, 2, &ml), *target = luaL_checklstring(L, 3, &tl);
  const char *host = luaL_checklstring(L, 4, &hl);
  int has_body = !lua_isnoneornil(L, 6), given;
  wbuf w = {hc, 0, 0};
  if (has_body) luaL_checklstring(L, 6, &bl);
  lua_settop(L, 6);
  for (i = 0; i < ml; i++)
    if (!is_token_char((unsigned char)m[i])) return luaL_argerror(L, 2, "invalid method");
  for (i = 0; i < tl; i++)
    if ((unsigned char)target[i] <= 32 || target[i] == 127) return luaL_argerror(L, 3, "invalid character in URL");
  put(&w, m, ml);
  put(&w, " ", 1);
  put(&w, target, tl);
  PUTLIT(&w, " HTTP/1.1\r\n");
  if ((given = put_headers(L, &w, 5, 0, 0)) < 0) return bad_head(L);
  if (!(given & G_HOST)) {
    PUTLIT(&w, "Host: ");
    put(&w, host, hl);
    PUTLIT(&w, "\r\n");
  }
  if (has_body || (ml == 4 && memcmp(m, "POST", 4) == 0) || (ml == 3 && memcmp(m, "PUT", 3) == 0) ||
      (ml == 5 && memcmp(m, "PATCH", 5) == 0)) {
    PUTLIT(&w, "Content-Length: ");
    put_int(&w, bl, 0);
    PUTLIT(&w, "\r\n");
  }
  PUTLIT(&w, "\r\n");
  if (w.bad) return luaL_error(L, "out of memory");
  return send_wbuf(L, t, hc, w.len, has_body ? 6 : 0);
}

const luaL_Reg loom_http_format_methods[] = {
    {"status", c_status}, {"header", c_header}, {"clear", c_clear},     {"state", c_state},
    {"keep", c_keep},     {"continue", c_continue}, {"respond", c_respond}, {"start", c_start},
    {"body", c_body},     {"request", c_request},   {NULL, NULL}};
