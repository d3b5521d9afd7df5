/*
 * http_parse.c: the reading side of loom.HttpConn (see http.h): messages
 * parsed in place from the stream's read buffer with http_parser into Lua
 * tables (requests on a server's connection, responses on a client's),
 * request heads checked against RFC 9112 (Host, version, field names,
 * limits), bodies read by Content-Length, chunks, or (responses) the end;
 * and the URL helpers (_http_parse_url, _http_unescape). Owns the parser
 * state and the head and body buffers of the message being read.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "http.h"

enum { T_URL, T_FIELD, T_VALUE };

/* ---------------------------------------------------------------- parsing */

static int on_begin(http_parser *p) {
  hconn *hc = p->data;
  hc->begun = 1;
  hc->nmsg++;
  hc->head_done = hc->msg_done = 0;
  hc->ntok = 0;
  hc->hlen = 0;
  hc->btotal = 0;
  hc->last = -1;
  if (hc->head_timeout > 0) hc->head_deadline = loom_time(hc->st->lp) + (uint64_t)(hc->head_timeout * 1e9);
  return 0;
}

static int add_token(hconn *hc, int kind, const char *at, size_t n) {
  if (hc->hlen + n > hc->max_head) {
    hc->err_status = 431;
    return -1;
  }
  if (kind != hc->last) { /* a new token; otherwise the rest of a split one */
    if (hc->ntok == 2 * MAX_HEADERS + 1 || (kind == T_VALUE && hc->last != T_FIELD)) {
      hc->err_status = kind == T_VALUE ? 400 : 431;
      return -1;
    }
    hc->tok[hc->ntok].off = hc->hlen;
    hc->tok[hc->ntok].len = 0;
    hc->ntok++;
    hc->last = kind;
  }
  if (n == 0) return 0;
  if (loom_http_grow(&hc->hbuf, &hc->hcap, hc->hlen + n) < 0) return -1;
  memcpy(hc->hbuf + hc->hlen, at, n);
  hc->hlen += n;
  hc->tok[hc->ntok - 1].len += n;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  return add_token(p->data, T_URL, at, n);
}

static int on_field(http_parser *p, const char *at, size_t n) {
  hconn *hc = p->data;
  if (hc->ntok == 0) add_token(hc, T_URL, "", 0); /* responses have no URL */
  return add_token(hc, T_FIELD, at, n);
}

static int on_value(http_parser *p, const char *at, size_t n) {
  return add_token(p->data, T_VALUE, at, n);
}

/* RFC 9110's tchar: what a field name may be made of (http_parser, built
   lenient, also lets spaces through). */
static int is_token(const char *s, size_t n) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && (c == 0 || strchr(extra, c) == NULL)) return 0;
  }
  return 1;
}

/* RFC 9112 on a request's head: HTTP/1.x only (505), field names that are
   tokens, and exactly one Host in HTTP/1.1 (400). */
static int check_request_head(hconn *hc) {
  int i, hosts = 0;
  if (hc->p.http_major != 1) {
    hc->err_status = 505;
    return -1;
  }
  for (i = 1; i + 1 < hc->ntok; i += 2) {
    const char *f = hc->hbuf + hc->tok[i].off;
    size_t n = hc->tok[i].len;
    if (!is_token(f, n)) {
      hc->err_status = 400;
      return -1;
    }
    if (n == 4 && strncasecmp(f, "host", 4) == 0) hosts++;
  }
  if (hosts > 1 || (hosts == 0 && hc->p.http_minor >= 1)) {
    hc->err_status = 400;
    return -1;
  }
  return 0;
}

static int on_headers(http_parser *p) {
  hconn *hc = p->data;
  hc->head_done = 1;
  if (hc->ntok == 0) add_token(hc, T_URL, "", 0);
  if ((hc->ntok - 1) % 2) add_token(hc, T_VALUE, "", 0); /* a field without a value */
  if (hc->kind == HTTP_REQUEST) {
    if (check_request_head(hc) < 0) return -1;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > hc->max_body) {
      hc->err_status = 413;
      return -1;
    }
  }
  return hc->skip_body ? 1 : 0;
}

/* A chunk that would take the body past its limit is refused at its size
   line, before a byte of it is waited for. */
static int on_chunk_header(http_parser *p) {
  hconn *hc = p->data;
  if (p->content_length > hc->max_body - hc->btotal) {
    hc->err_status = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  hconn *hc = p->data;
  hc->btotal += n;
  if (hc->btotal > hc->max_body) {
    hc->err_status = 413;
    return -1;
  }
  if (hc->discard) return 0;
  if (loom_http_grow(&hc->bbuf, &hc->bcap, hc->blen + n) < 0) return -1;
  memcpy(hc->bbuf + hc->blen, at, n);
  hc->blen += n;
  return 0;
}

/* Pausing at the end of each message leaves a pipelined next one in the
   stream's buffer until it is asked for. */
static int on_complete(http_parser *p) {
  hconn *hc = p->data;
  hc->msg_done = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers,
    .on_body = on_body,
    .on_message_complete = on_complete,
    .on_chunk_header = on_chunk_header,
};

static size_t buffered(const lstream *st) {
  size_t n;
  (void)loom_stream_peek(st, &n);
  return n;
}

/* Parses what the stream has buffered (or, at its end, tells the parser so).
   0, or -1 on a protocol error. */
static int feed(hconn *hc) {
  lstream *st = hc->st;
  size_t have;
  const char *p = loom_stream_peek(st, &have);
  enum http_errno e;
  if (hc->msg_done) return 0;
  if (have == 0) {
    if (loom_stream_end(st) != UV_EOF || !hc->begun) return 0;
    http_parser_execute(&hc->p, &settings, NULL, 0);
  } else {
    loom_stream_consume(st, http_parser_execute(&hc->p, &settings, p, have));
  }
  e = HTTP_PARSER_ERRNO(&hc->p);
  if (e == HPE_PAUSED) {
    http_parser_pause(&hc->p, 0);
    return 0;
  }
  if (e != HPE_OK || (hc->p.upgrade && !hc->msg_done)) {
    /* http_parser's own cap on a head (80 KB, however the bytes are spent) */
    if (hc->err_status == 0) hc->err_status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
    return -1;
  }
  return 0;
}

static int parse_fail(lua_State *L, hconn *hc) {
  enum http_errno e = HTTP_PARSER_ERRNO(&hc->p);
  lua_pushnil(L);
  switch (hc->err_status) {
    case 431: lua_pushliteral(L, "header too large"); lua_pushliteral(L, "EHEADER"); break;
    case 413: lua_pushliteral(L, "body too large"); lua_pushliteral(L, "EBODY"); break;
    case 505: lua_pushliteral(L, "HTTP version not supported"); lua_pushliteral(L, "EPROTO"); break;
    default:
      if (e == HPE_INVALID_EOF_STATE) {
        lua_pushliteral(L, "connection closed mid-message");
        lua_pushliteral(L, "EOF");
      } else {
        lua_pushfstring(L, "malformed HTTP: %s", http_errno_description(e));
        lua_pushliteral(L, "EPROTO");
      }
  }
  lua_pushinteger(L, hc->err_status ? hc->err_status : 400);
  return 4;
}

static uint64_t deadline_in(const hconn *hc, double s) {
  return s > 0 ? loom_time(hc->st->lp) + (uint64_t)(s * 1e9) : 0;
}

/* Pushes s[0, n) with %XX decoded (and '+' as a space when plus). */
void loom_http_push_unescaped(lua_State *L, const char *s, size_t n, int plus) {
  luaL_Buffer b;
  size_t i;
  if (memchr(s, '%', n) == NULL && (!plus || memchr(s, '+', n) == NULL)) {
    lua_pushlstring(L, s, n);
    return;
  }
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
        isxdigit((unsigned char)s[i + 2])) {
      char hex[3] = {s[i + 1], s[i + 2], 0};
      c = (int)strtol(hex, NULL, 16);
      i += 2;
    } else if (c == '+' && plus) {
      c = ' ';
    }
    luaL_addchar(&b, (char)c);
  }
  luaL_pushresult(&b);
}

/* Pushes the headers as a table of lower-case names; repeated ones are
   joined with ", ", except set-cookie, whose values stay a list. */
static void push_headers(lua_State *L, hconn *hc, int hmt) {
  int i;
  char small[64];
  lua_createtable(L, 0, (hc->ntok - 1) / 2);
  for (i = 1; i + 1 < hc->ntok; i += 2) {
    const char *f = hc->hbuf + hc->tok[i].off, *v = hc->hbuf + hc->tok[i + 1].off;
    size_t fl = hc->tok[i].len, vl = hc->tok[i + 1].len, j;
    char *lower = fl <= sizeof small ? small : lua_newuserdatauv(L, fl, 0);
    for (j = 0; j < fl; j++) lower[j] = (char)((f[j] >= 'A' && f[j] <= 'Z') ? f[j] + 32 : f[j]);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
    if (fl == 6 && memcmp(lower, "expect", 6) == 0) hc->expect = 1;
    lua_pushlstring(L, lower, fl);
    if (lower != small) lua_remove(L, -2);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      if (fl == 10 && memcmp(lower, "set-cookie", 10) == 0) {
        lua_createtable(L, 1, 0);
        lua_pushlstring(L, v, vl);
        lua_rawseti(L, -2, 1);
      } else {
        lua_pushlstring(L, v, vl);
      }
    } else if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pushlstring(L, v, vl);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    } else {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, vl);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  lua_pushvalue(L, hmt);
  lua_setmetatable(L, -2);
}

/* Pushes the message's HTTP version ("1.1") and whether the connection
   may be kept after it. */
static void push_info(lua_State *L, hconn *hc) {
  http_parser *p = &hc->p;
  if (p->http_major == 1 && p->http_minor == 1) lua_pushliteral(L, "1.1");
  else lua_pushfstring(L, "%d.%d", (int)p->http_major, (int)p->http_minor);
  lua_pushboolean(L, http_should_keep_alive(p));
}

/* Pushes the message just parsed as a table (see c_next). */
static int push_message(lua_State *L, hconn *hc) {
  http_parser *p = &hc->p;
  int req = hc->kind == HTTP_REQUEST;
  /* the connection in the array part; the hash part has room for method,
     target, path, headers and a router's params without a rehash */
  lua_createtable(L, 1, 5);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  if (req) {
    const char *u = hc->hbuf + hc->tok[0].off;
    size_t ul = hc->tok[0].len, pl;
    const char *end;
    lua_pushstring(L, http_method_str((enum http_method)p->method));
    loom_http_setk(L, K_METHOD);
    lua_pushlstring(L, u, ul);
    loom_http_setk(L, K_TARGET);
    if (ul > 0 && u[0] != '/' && u[0] != '*') { /* absolute form: keep its path */
      struct http_parser_url pu;
      http_parser_url_init(&pu);
      if (http_parser_parse_url(u, ul, p->method == HTTP_CONNECT, &pu) == 0) {
        if (pu.field_set & (1 << UF_PATH)) {
          u += pu.field_data[UF_PATH].off;
          ul -= pu.field_data[UF_PATH].off;
        } else {
          u = "/";
          ul = 1;
        }
      }
    }
    pl = (end = memchr(u, '?', ul)) ? (size_t)(end - u) : ul;
    if ((end = memchr(u, '#', pl)) != NULL) pl = (size_t)(end - u);
    loom_http_push_unescaped(L, u, pl, 0);
    loom_http_setk(L, K_PATH);
    if (p->upgrade) {
      lua_pushboolean(L, 1);
      loom_http_setk(L, K_UPGRADE);
    }
  } else {
    lua_pushinteger(L, p->status_code);
    loom_http_setk(L, K_STATUS);
    push_info(L, hc); /* table, version, keep */
    lua_rawgeti(L, lua_upvalueindex(4), K_KEEP);
    lua_insert(L, -2);
    lua_rawset(L, -4);
    loom_http_setk(L, K_VERSION);
  }
  push_headers(L, hc, lua_upvalueindex(3));
  loom_http_setk(L, K_HEADERS);
  lua_getiuservalue(L, 1, HC_MESSAGE_MT);
  lua_setmetatable(L, -2);
  hc->handed = 1;
  lua_pushboolean(L, req && !hc->expect && !p->upgrade && p->method != HTTP_HEAD && p->http_major == 1 &&
                         p->http_minor == 1 && http_should_keep_alive(p));
  return 2;
}

static int next_k(lua_State *L, int status, lua_KContext ctx);

/* Parses until the next message's head is complete (first skipping the
   body the previous message left unread), waiting for bytes as needed (k
   continues after a wait). */
int loom_http_next_step(lua_State *L, hconn *hc, loom_task *t, lua_KFunction k) {
  lstream *st = hc->st;
  for (;;) {
    int end;
    if (hc->discard && hc->msg_done) { /* the leftover body is gone: on to the next message */
      hc->discard = 0;
      hc->begun = hc->msg_done = hc->head_done = 0;
      hc->blen = 0;
      continue;
    }
    if (hc->head_done && !hc->discard) return push_message(L, hc);
    if (st->closed) return loom_fail_closed(L);
    if (buffered(st)) { /* bytes first: a request that came before a reset is served */
      if (feed(hc) < 0) return parse_fail(L, hc);
      continue;
    }
    if ((end = loom_stream_end(st)) != 0 && end != UV_EOF) return loom_fail(L, end, NULL);
    if (!end) {
      uint64_t deadline = !hc->begun ? deadline_in(hc, hc->idle_timeout)
                          : hc->discard ? deadline_in(hc, hc->body_timeout) : hc->head_deadline;
      return loom_stream_wait(L, t, st, deadline, k);
    }
    if (!hc->begun) {
      lua_pushnil(L);
      lua_pushliteral(L, "eof");
      lua_pushliteral(L, "EOF");
      return 3;
    }
    if (feed(hc) < 0 || !hc->msg_done) {
      if (hc->err_status == 0) hc->err_status = 400;
      return parse_fail(L, hc);
    }
  }
}

void loom_http_begin_next(hconn *hc) {
  hc->handed = hc->expect = hc->broken = hc->continued = 0;
  hc->rstate = RS_NONE;
  hc->rkeep = 0;
  hc->rstatus = 200;
  hc->rtouched = 0; /* (conn:status and conn:header clear what was set before) */
  if (hc->msg_done) hc->begun = hc->msg_done = hc->head_done = 0;
  else if (hc->begun) hc->discard = 1;
  hc->blen = 0;
  hc->err_status = 0;
}

int loom_http_head_timeout(lua_State *L, hconn *hc) {
  loom_fail_timeout(L);
  if (hc->begun && !hc->discard) {
    lua_pushinteger(L, 408);
    return 4;
  }
  return 3;
}

static int next_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, next_k);
  hconn *hc = lua_touserdata(L, 1);
  (void)status;
  if (t->timed_out) return loom_http_head_timeout(L, hc);
  return loom_http_next_step(L, hc, t, next_k);
}

/* conn:next(): the next message's head as a table (conn at [1]; requests:
   method, target, path, upgrade when set; responses: status, version,
   keep_alive; both: headers) and whether it is a plain kept-alive
   HTTP/1.1 request (not HEAD, no Expect or Upgrade), with any body left
   unread by the previous message skipped first. nil, msg, code [, status]
   on failure: status is the response a server owes (400, 408, 413, 431),
   absent when the connection just ended (eof, idle timeout, or "closed"
   once a response was not to be followed by another). May block. */
static int c_next(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "next");
  lua_settop(L, 1);
  if (hc->rstate != RS_NONE && !hc->rkeep) return loom_fail_closed(L);
  loom_http_begin_next(hc);
  return loom_http_next_step(L, hc, t, next_k);
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

/* Parses body bytes until some are buffered (all: until the message ends). */
static int read_step(lua_State *L, hconn *hc, loom_task *t, int all) {
  lstream *st = hc->st;
  for (;;) {
    int end;
    if (hc->blen > 0 && (!all || hc->msg_done)) {
      lua_pushlstring(L, hc->bbuf, hc->blen);
      hc->blen = 0;
      return 1;
    }
    if (hc->msg_done || !hc->begun) {
      if (all) lua_pushliteral(L, "");
      else lua_pushnil(L);
      return 1;
    }
    if (st->closed) return loom_fail_closed(L);
    if (buffered(st)) {
      if (feed(hc) < 0) return parse_fail(L, hc);
      continue;
    }
    if ((end = loom_stream_end(st)) != 0 && end != UV_EOF) return loom_fail(L, end, NULL);
    if (!end) return loom_stream_wait(L, t, st, deadline_in(hc, hc->body_timeout), read_k);
    if (feed(hc) < 0 || !hc->msg_done) { /* the end before the body's: truncated */
      if (hc->err_status == 0) hc->err_status = 400;
      return parse_fail(L, hc);
    }
    if (st->tp->truncated(st)) /* a body framed by the end, and the end is not proven */
      return loom_stream_fail_truncated(L);
  }
}

/* A body that could not be read leaves the connection unusable: a server
   answers and closes it. */
static int read_done(hconn *hc, int n) {
  if (n > 1) hc->broken = 1;
  return n;
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, read_k);
  hconn *hc = lua_touserdata(L, 1);
  (void)status;
  if (t->timed_out) { /* a request body that stalls is the client's fault: 408 */
    hc->broken = 1;
    loom_fail_timeout(L);
    if (hc->kind != HTTP_REQUEST) return 3;
    lua_pushinteger(L, 408);
    return 4;
  }
  return read_done(hc, read_step(L, hc, t, lua_toboolean(L, 2)));
}

/* conn:read([all]): the next piece of the current message's body, nil at
   its end; with all, the whole rest of it ("" when there is none). nil,
   msg, code [, status] on failure. May block. */
static int c_read(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = loom_http_check(L);
  loom_task *t = loom_checkrunning(L, S, "read");
  lua_settop(L, 2);
  return read_done(hc, read_step(L, hc, t, lua_toboolean(L, 2)));
}

/* conn:info(): the current message's HTTP version and whether the
   connection may be kept after it. */
static int c_info(lua_State *L) {
  push_info(L, loom_http_check(L));
  return 2;
}

/* conn:done(): whether the current message has been read to its end. */
static int c_done(lua_State *L) {
  hconn *hc = loom_http_check(L);
  lua_pushboolean(L, !hc->begun || hc->msg_done);
  return 1;
}

/* conn:expect_head(flag [, max_body]): the next response answers a HEAD
   request (it has no body whatever its headers say) when flag is true; its
   body may be at most max_body bytes (none: no limit). */
static int c_expect_head(lua_State *L) {
  hconn *hc = loom_http_check(L);
  hc->skip_body = lua_toboolean(L, 2);
  hc->max_body = lua_isnoneornil(L, 3) ? SIZE_MAX : (size_t)luaL_checkinteger(L, 3);
  return 0;
}

/* conn:idle(): between messages with nothing of a next one received (and
   the number of messages begun so far).
   conn:alive(): idle, and the stream still open with no end or error seen
   (a pooled connection that may be reused). */
static int c_idle(lua_State *L) {
  hconn *hc = loom_http_check(L);
  lua_pushboolean(L, !hc->handed && (!hc->begun || hc->msg_done) && !buffered(hc->st));
  lua_pushinteger(L, hc->nmsg);
  return 2;
}

static int c_alive(lua_State *L) {
  hconn *hc = loom_http_check(L);
  lstream *st = hc->st;
  lua_pushboolean(L, (!hc->begun || hc->msg_done) && !buffered(st) && !st->closed && !loom_stream_end(st) &&
                         !st->werr);
  return 1;
}

/* _http_parse_url(url): scheme, host, port (nil when absent), target (path
   and query, "/" at least), userinfo; or nil, msg, "EINVAL". */
static int c_parse_url(lua_State *L) {
  size_t n;
  const char *u = luaL_checklstring(L, 1, &n);
  struct http_parser_url pu;
  http_parser_url_init(&pu);
  if (http_parser_parse_url(u, n, 0, &pu) != 0 || !(pu.field_set & (1 << UF_SCHEMA)) ||
      !(pu.field_set & (1 << UF_HOST))) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid URL '%s'", u);
    lua_pushliteral(L, "EINVAL");
    return 3;
  }
  lua_pushlstring(L, u + pu.field_data[UF_SCHEMA].off, pu.field_data[UF_SCHEMA].len);
  lua_pushlstring(L, u + pu.field_data[UF_HOST].off, pu.field_data[UF_HOST].len);
  if (pu.field_set & (1 << UF_PORT)) lua_pushinteger(L, pu.port);
  else lua_pushnil(L);
  if (pu.field_set & (1 << UF_PATH)) {
    size_t off = pu.field_data[UF_PATH].off, end = off + pu.field_data[UF_PATH].len;
    if (pu.field_set & (1 << UF_QUERY)) end = pu.field_data[UF_QUERY].off + pu.field_data[UF_QUERY].len;
    lua_pushlstring(L, u + off, end - off);
  } else if (pu.field_set & (1 << UF_QUERY)) {
    lua_pushliteral(L, "/?");
    lua_pushlstring(L, u + pu.field_data[UF_QUERY].off, pu.field_data[UF_QUERY].len);
    lua_concat(L, 2);
  } else {
    lua_pushliteral(L, "/");
  }
  if (pu.field_set & (1 << UF_USERINFO))
    lua_pushlstring(L, u + pu.field_data[UF_USERINFO].off, pu.field_data[UF_USERINFO].len);
  else
    lua_pushnil(L);
  return 5;
}

/* _http_unescape(s [, plus]): s with %XX decoded (and '+' as a space). */
static int c_unescape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  loom_http_push_unescaped(L, s, n, lua_toboolean(L, 2));
  return 1;
}

const luaL_Reg loom_http_parse_methods[] = {{"next", c_next}, {"read", c_read},   {"done", c_done},   {"info", c_info},
                                            {"expect_head", c_expect_head},      {"idle", c_idle},   {"alive", c_alive},
                                            {NULL, NULL}};

const luaL_Reg loom_http_parse_functions[] = {{"_http_parse_url", c_parse_url}, {"_http_unescape", c_unescape}, {NULL, NULL}};
