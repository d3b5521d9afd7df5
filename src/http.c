/*
 * http.c: loom.HttpConn, HTTP/1.1 framing over a loom.Stream with
 * http_parser. Parses requests (a server's connection) or responses (a
 * client's) in place from the stream's read buffer into Lua tables, checks
 * request heads against RFC 9112 (Host, version, field names, limits), reads
 * bodies (Content-Length, chunked, or until the end for responses), and
 * writes heads and bodies with one vectored write each. Also the server's
 * common case (conn:serve): plain kept-alive requests to handlers that
 * answer status, headers, body are served in a C loop; anything else is
 * handed back to lua/loom/http.lua, which owns handlers' other answers, the
 * server's connection loop and the client's pool. Owns the parser state, the
 * head and body buffers of the message being read and the buffer responses
 * are formatted in.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <http_parser.h>
#include "loom.h"
#include "stream.h"

#define MAX_HEADERS 100

enum { HC_STREAM = 1, HC_HEADERS_MT, HC_MESSAGE_MT, HC_NUV = HC_MESSAGE_MT };

enum { T_URL, T_FIELD, T_VALUE };

typedef struct token {
  size_t off, len;
} token;

typedef struct hconn {
  http_parser p;
  lstream *st;
  int kind;          /* HTTP_REQUEST (a server's) or HTTP_RESPONSE (a client's) */
  int begun;         /* the current message's first byte has been parsed */
  int head_done, msg_done, skip_body, discard;
  int handed;        /* the message's head was returned and next() not called again */
  int closing;       /* the server is closing: plain requests go the general way */
  int close_asked;   /* a response said Connection: close: no next message */
  int expect;        /* the head had an Expect header */
  int cancel_gone;   /* a handler is cancelled if its client goes (server option cancel_on_disconnect) */
  int err_status;    /* the status a failure maps to: 400, 408, 413, 431, 505 */
  unsigned nmsg;     /* messages begun on this connection */
  int last;          /* kind of the last token appended */
  int ntok;
  token tok[2 * MAX_HEADERS + 1]; /* the URL, then field, value pairs */
  char *hbuf;        /* the head's tokens, copied: they may span reads */
  size_t hlen, hcap, max_head;
  char *bbuf;        /* body bytes parsed and not yet handed out */
  size_t blen, bcap, btotal, max_body;
  char *wbuf;        /* where heads are formatted, reused */
  size_t wcap;
  double idle_timeout, head_timeout, body_timeout;
  uint64_t head_deadline;
} hconn;

/* ---------------------------------------------------------------- buffers */

static int grow(char **buf, size_t *cap, size_t need) {
  size_t n = *cap ? *cap : 1024;
  char *nb;
  if (need <= *cap) return 0;
  while (n < need) n *= 2;
  if ((nb = realloc(*buf, n)) == NULL) return -1;
  *buf = nb;
  *cap = n;
  return 0;
}

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
  if (grow(&hc->hbuf, &hc->hcap, hc->hlen + n) < 0) return -1;
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
  if (grow(&hc->bbuf, &hc->bcap, hc->blen + n) < 0) return -1;
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
static void push_unescaped(lua_State *L, const char *s, size_t n, int plus) {
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

/* The message tables' field names, interned once (upvalue 4 of the
   methods): setting a field through them skips lua_setfield's lookup of a
   C string, a measurable part of the cost of a request. */
enum {
  K_METHOD = 1, K_TARGET, K_PATH, K_UPGRADE, K_STATUS, K_VERSION, K_HEADERS, K_KEEP,
  K_RCONN, K_RREQ, K_RCODE, K_RSERVER, K_RSTATE, K_RHEADERS, K_LAST = K_RHEADERS /* a response's */
};
static const char *const keys[] = {NULL,      "method",  "target",  "path",    "upgrade",
                                   "status",  "version", "headers", "keep_alive", "_conn",
                                   "_req",    "_code",   "_server", "_state",  "_headers"};

/* Sets field k of the table under the value on top to that value. */
static void setk(lua_State *L, int k) {
  lua_rawgeti(L, lua_upvalueindex(4), k);
  lua_insert(L, -2);
  lua_rawset(L, -3);
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
    setk(L, K_METHOD);
    lua_pushlstring(L, u, ul);
    setk(L, K_TARGET);
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
    push_unescaped(L, u, pl, 0);
    setk(L, K_PATH);
    if (p->upgrade) {
      lua_pushboolean(L, 1);
      setk(L, K_UPGRADE);
    }
  } else {
    lua_pushinteger(L, p->status_code);
    setk(L, K_STATUS);
    push_info(L, hc); /* table, version, keep */
    lua_rawgeti(L, lua_upvalueindex(4), K_KEEP);
    lua_insert(L, -2);
    lua_rawset(L, -4);
    setk(L, K_VERSION);
  }
  push_headers(L, hc, lua_upvalueindex(3));
  setk(L, K_HEADERS);
  lua_getiuservalue(L, 1, HC_MESSAGE_MT);
  lua_setmetatable(L, -2);
  hc->handed = 1;
  lua_pushboolean(L, req && !hc->expect && !p->upgrade && p->method != HTTP_HEAD && p->http_major == 1 &&
                         p->http_minor == 1 && http_should_keep_alive(p));
  return 2;
}

/* Upvalues of the methods: 1 = module state, 2 = the HttpConn metatable,
   3 = the headers metatable, 4 = the field names (keys). */
#define MT lua_upvalueindex(2)

static hconn *checkconn(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static int next_k(lua_State *L, int status, lua_KContext ctx);

/* Parses until the next message's head is complete (first skipping the
   body the previous message left unread), waiting for bytes as needed (k
   continues after a wait). */
static int next_step(lua_State *L, hconn *hc, loom_task *t, lua_KFunction k) {
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

/* Starts on the next message: the previous one is done with, or the rest
   of its body is to be skipped. */
static void begin_next(hconn *hc) {
  hc->handed = hc->expect = 0;
  if (hc->msg_done) hc->begun = hc->msg_done = hc->head_done = 0;
  else if (hc->begun) hc->discard = 1;
  hc->blen = 0;
  hc->err_status = 0;
}

/* A wait for the head timed out: nil, "timeout", "ETIMEDOUT" [, 408]. */
static int head_timeout(lua_State *L, hconn *hc) {
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
  if (t->timed_out) return head_timeout(L, hc);
  return next_step(L, hc, t, next_k);
}

/* conn:next(): the next message's head as a table (conn at [1]; requests:
   method, target, path, upgrade when set; responses: status, version,
   keep_alive; both: headers) and whether it is a plain kept-alive
   HTTP/1.1 request (not HEAD, no Expect or Upgrade), with any body left
   unread by the previous message skipped first. nil, msg, code [, status]
   on failure: status is the response a server owes (400, 408, 413, 431),
   absent when the connection just ended (eof, idle timeout, or "closed"
   once a response said Connection: close). May block. */
static int c_next(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "next");
  lua_settop(L, 1);
  if (hc->close_asked) return loom_fail_closed(L);
  begin_next(hc);
  return next_step(L, hc, t, next_k);
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

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, read_k);
  hconn *hc = lua_touserdata(L, 1);
  (void)status;
  if (t->timed_out) { /* a request body that stalls is the client's fault: 408 */
    loom_fail_timeout(L);
    if (hc->kind != HTTP_REQUEST) return 3;
    lua_pushinteger(L, 408);
    return 4;
  }
  return read_step(L, hc, t, lua_toboolean(L, 2));
}

/* conn:read([all]): the next piece of the current message's body, nil at
   its end; with all, the whole rest of it ("" when there is none). nil,
   msg, code [, status] on failure. May block. */
static int c_read(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "read");
  lua_settop(L, 2);
  return read_step(L, hc, t, lua_toboolean(L, 2));
}

/* conn:info(): the current message's HTTP version and whether the
   connection may be kept after it. */
static int c_info(lua_State *L) {
  push_info(L, checkconn(L));
  return 2;
}

/* conn:done(): whether the current message has been read to its end. */
static int c_done(lua_State *L) {
  hconn *hc = checkconn(L);
  lua_pushboolean(L, !hc->begun || hc->msg_done);
  return 1;
}

/* conn:expect_head(flag [, max_body]): the next response answers a HEAD
   request (it has no body whatever its headers say) when flag is true; its
   body may be at most max_body bytes (none: no limit). */
static int c_expect_head(lua_State *L) {
  hconn *hc = checkconn(L);
  hc->skip_body = lua_toboolean(L, 2);
  hc->max_body = lua_isnoneornil(L, 3) ? SIZE_MAX : (size_t)luaL_checkinteger(L, 3);
  return 0;
}

/* conn:idle(): between messages with nothing of a next one received (and
   the number of messages begun so far).
   conn:alive(): idle, and the stream still open with no end or error seen
   (a pooled connection that may be reused). */
static int c_idle(lua_State *L) {
  hconn *hc = checkconn(L);
  lua_pushboolean(L, !hc->handed && (!hc->begun || hc->msg_done) && !buffered(hc->st));
  lua_pushinteger(L, hc->nmsg);
  return 2;
}

static int c_alive(lua_State *L) {
  hconn *hc = checkconn(L);
  lstream *st = hc->st;
  lua_pushboolean(L, (!hc->begun || hc->msg_done) && !buffered(st) && !st->closed && !loom_stream_end(st) &&
                         !st->werr);
  return 1;
}

/* ---------------------------------------------------------------- writing */

typedef struct wbuf {
  hconn *hc;
  size_t len;
  int bad;
} wbuf;

static void put_slow(wbuf *w, const char *s, size_t n) {
  if (w->bad || grow(&w->hc->wbuf, &w->hc->wcap, w->len + n) < 0) {
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

enum {
  R_CLOSE = 1,      /* Connection: close */
  R_KEEP = 2,       /* Connection: keep-alive (an HTTP/1.0 peer) */
  R_CHUNKED = 4,    /* Transfer-Encoding: chunked, body follows in chunks */
  R_NOBODY = 8,     /* HEAD, 204, 304: the head describes a body not sent */
  R_RAW = 16        /* streamed body framed by the user's headers or the close */
};

/* Writes the headers of the table at idx, skipping those the framing sets.
   Returns which of host/date/"Connection: close" the user gave (bits 1, 2,
   4), or -1 with an error message pushed for a name or value that would
   break the message. */
static int put_headers(lua_State *L, wbuf *w, int idx, int flags) {
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
    if (same(k, kl, "host")) given |= 1;
    if (same(k, kl, "date")) given |= 2;
    if (same(k, kl, "connection") && lua_type(L, -1) == LUA_TSTRING) {
      size_t vl0;
      const char *v0 = lua_tolstring(L, -1, &vl0);
      if (same(v0, vl0, "close")) given |= 4; /* the handler wants the connection closed */
    }
    if (same(k, kl, "connection") || same(k, kl, "transfer-encoding") ||
        (same(k, kl, "content-length") && !(flags & R_RAW))) {
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

/* Sends the formatted head and the body string at bidx (0: none). */
static int send_head(lua_State *L, loom_task *t, hconn *hc, wbuf *w, int bidx) {
  uv_buf_t b[2];
  int n = 1, r;
  size_t bl = 0;
  const char *body = bidx ? lua_tolstring(L, bidx, &bl) : NULL;
  if (w->bad) return luaL_error(L, "out of memory");
  b[0] = uv_buf_init(hc->wbuf, (unsigned)w->len);
  if (body && bl > 0) b[n++] = uv_buf_init((char *)body, (unsigned)bl);
  r = loom_stream_send(L, hc->st, b, n);
  return r ? r : loom_stream_drain(L, t, hc->st, NULL);
}

/* Formats a response head: status line, the headers at hidx, Date, the
   framing for a body of bl bytes, Connection. 0, or -1 with an error message
   pushed for headers that cannot be sent. */
static int format_head(lua_State *L, wbuf *w, lua_Integer status, int hidx, size_t bl, int flags) {
  const char *r = reason((int)status);
  int given;
  PUTLIT(w, "HTTP/1.1 ");
  put_int(w, (size_t)status, 0);
  put(w, " ", 1);
  put(w, r, strlen(r));
  PUTLIT(w, "\r\n");
  if ((given = put_headers(L, w, hidx, flags)) < 0) return -1;
  if (given & 4) flags |= R_CLOSE;
  if (!(given & 2)) {
    PUTLIT(w, "Date: ");
    put(w, http_date(), 29);
    PUTLIT(w, "\r\n");
  }
  if (flags & R_CHUNKED) {
    PUTLIT(w, "Transfer-Encoding: chunked\r\n");
  } else if (!(flags & R_RAW) && status != 204 && status != 304 && status >= 200) {
    PUTLIT(w, "Content-Length: ");
    put_int(w, bl, 0);
    PUTLIT(w, "\r\n");
  }
  if (flags & R_CLOSE) PUTLIT(w, "Connection: close\r\n");
  else if (flags & R_KEEP) PUTLIT(w, "Connection: keep-alive\r\n");
  PUTLIT(w, "\r\n");
  return given;
}

/* conn:respond(status, headers, body, flags): writes a response head (with
   Date, Content-Length for a string body, or Transfer-Encoding: chunked)
   and the body, in one write. true, or nil, msg, code ("EINVAL": headers
   that cannot be sent, nothing was). May block (backpressure). */
static int c_respond(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "respond");
  lua_Integer status = luaL_checkinteger(L, 2);
  int flags = (int)luaL_optinteger(L, 5, 0), given;
  size_t bl = 0;
  int has_body = !lua_isnoneornil(L, 4);
  wbuf w = {hc, 0, 0};
  if (has_body) luaL_checklstring(L, 4, &bl);
  luaL_argcheck(L, status >= 100 && status <= 999, 2, "status must be 100-999");
  lua_settop(L, 5);
  if ((given = format_head(L, &w, status, 3, bl, flags)) < 0) return bad_head(L);
  if (given & 4) hc->close_asked = 1;
  return send_head(L, t, hc, &w, has_body && !(flags & R_NOBODY) ? 4 : 0);
}

/* ---------------------------------------------------------------- serving */

/* conn:serve(handler, msgh [, server, Response]) runs a server
   connection's common case in C: each plain request (see c_next) goes to
   handler(req) (or handler(req, res), with a res made here, when server
   and the Response metatable are given) and, when it returns status,
   headers, body and leaves res untouched, is answered here; then the next
   one is read. It returns to the Lua layer for anything else, which takes
   the general path:
     nil, msg, code [, status]       the connection ended or failed (next's)
     req, false                      a request that is not plain: not run
     req, true, ok, a, b, c, res     a plain request whose handler ran (ok,
                                     a, b, c as xpcall's, res or nil) but
                                     whose answer needs the general path
     false, msg, code                a response could not be sent
   The Lua loop it replaces measured about 3,700 instructions of the 13,500
   a hello-world request took. Stack while serving: [conn, handler, msgh,
   server, Response], then per request [req, true, res, results...]. */
enum { SV_SERVER = 4, SV_RESMT, SV_REQ, SV_FAST, SV_RES, SV_A, SV_B, SV_C };

static int serve_next_k(lua_State *L, int status, lua_KContext ctx);
static int serve_handler_k(lua_State *L, int status, lua_KContext ctx);
static int serve_drain_k(lua_State *L, int status, lua_KContext ctx);

/* Hands the request to the Lua layer: [req, true, res, ok-or-nothing,
   values...] becomes req, true, ok, a, b, c, res. */
static int hand_over(lua_State *L, int ok) {
  if (ok) lua_settop(L, SV_C);
  else lua_settop(L, SV_A); /* the error */
  lua_pushboolean(L, ok);
  lua_insert(L, SV_A);
  lua_settop(L, SV_C + 1);
  lua_pushvalue(L, SV_RES);
  lua_remove(L, SV_RES);
  return 7;
}

static int rawfield_nil(lua_State *L, int idx, int k) {
  int nil;
  lua_rawgeti(L, lua_upvalueindex(4), k);
  nil = lua_rawget(L, idx) == LUA_TNIL;
  lua_pop(L, 1);
  return nil;
}

/* The handler's outcome is on the stack above [.., req, true, res]: a, b, c
   (status LUA_OK) or the error. Answers it and returns -1 to go on, or
   returns the values to hand to Lua; may yield for backpressure. */
static int serve_answer(lua_State *L, hconn *hc, loom_task *t, int status) {
  wbuf w = {hc, 0, 0};
  lua_Integer code;
  size_t bl;
  const char *body;
  uv_buf_t b[2];
  int r, n = 1;
  loom_stream_watch_gone(hc->st, NULL); /* the handler has ended */
  if (status != LUA_OK) return hand_over(L, 0);
  code = lua_isinteger(L, SV_A) ? lua_tointeger(L, SV_A) : 0;
  if (code < 100 || code > 999 || code == 204 || code == 304 || !lua_istable(L, SV_B) ||
      lua_type(L, SV_C) != LUA_TSTRING || hc->closing ||
      (lua_istable(L, SV_RES) && (!rawfield_nil(L, SV_RES, K_RSTATE) || !rawfield_nil(L, SV_RES, K_RHEADERS))))
    return hand_over(L, 1);
  body = lua_tolstring(L, SV_C, &bl);
  r = format_head(L, &w, code, SV_B, bl, 0);
  if (r >= 0 && (r & 4)) return hand_over(L, 1); /* the handler closes the connection */
  if (r < 0) { /* its headers cannot be sent: as an error, the message on top */
    lua_replace(L, SV_A);
    return hand_over(L, 0);
  }
  if (w.bad) return luaL_error(L, "out of memory");
  b[0] = uv_buf_init(hc->wbuf, (unsigned)w.len);
  if (bl > 0) b[n++] = uv_buf_init((char *)body, (unsigned)bl);
  r = loom_stream_send(L, hc->st, b, n);
  if (r == 1) return -1;
  if (r == 0) return loom_stream_drain(L, t, hc->st, serve_drain_k);
  lua_pushboolean(L, 0); /* false, msg, code */
  lua_replace(L, -4);
  return 3;
}

/* Runs from a parsed request (next_step's n results on top) for as long as
   requests are plain and answers are status, headers, body. */
static int serve_run(lua_State *L, hconn *hc, loom_task *t, int n) {
  for (;;) {
    int r, nargs = 1;
    if (n != 2 || !lua_toboolean(L, -1)) return n;
    if (lua_istable(L, SV_RESMT)) { /* res = {_conn, _req, _code = 200, _server} */
      lua_createtable(L, 0, 4);
      lua_pushvalue(L, 1);
      setk(L, K_RCONN);
      lua_pushvalue(L, SV_REQ);
      setk(L, K_RREQ);
      lua_pushinteger(L, 200);
      setk(L, K_RCODE);
      lua_pushvalue(L, SV_SERVER);
      setk(L, K_RSERVER);
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
    begin_next(hc);
    n = next_step(L, hc, t, serve_next_k);
  }
}

static int serve_next_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, serve_next_k);
  hconn *hc = lua_touserdata(L, 1);
  (void)status;
  if (t->timed_out) return head_timeout(L, hc);
  return serve_run(L, hc, t, next_step(L, hc, t, serve_next_k));
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
  begin_next(hc);
  return serve_run(L, hc, t, next_step(L, hc, t, serve_next_k));
}

static int serve_drain_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, serve_drain_k);
  hconn *hc = lua_touserdata(L, 1);
  int n = loom_stream_drained(L, t, hc->st);
  (void)status;
  if (n) {
    lua_pushboolean(L, 0);
    lua_replace(L, -4);
    return 3;
  }
  lua_settop(L, SV_RESMT);
  begin_next(hc);
  return serve_run(L, hc, t, next_step(L, hc, t, serve_next_k));
}

static int c_serve(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "serve");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, SV_RESMT);
  if (hc->close_asked) return loom_fail_closed(L);
  begin_next(hc);
  return serve_run(L, hc, t, next_step(L, hc, t, serve_next_k));
}

/* conn:set_closing(): the server is closing; plain requests are handed to
   the Lua layer, which answers with Connection: close. */
static int c_set_closing(lua_State *L) {
  checkconn(L)->closing = 1;
  return 0;
}

/* conn:request(method, target, host, headers, body): writes a request head
   (Host unless the headers have one; Content-Length for a body, or for
   methods that carry one) and the body. true, or nil, msg, code. May block. */
static int c_request(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
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
  if ((given = put_headers(L, &w, 5, 0)) < 0) return bad_head(L);
  if (!(given & 1)) {
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
  return send_head(L, t, hc, &w, has_body ? 6 : 0);
}

/* conn:chunk([data]): writes data as one chunk of a chunked body; without
   data (or with ""), the last chunk. true, or nil, msg, code. May block. */
static int c_chunk(lua_State *L) {
  loom_state *S = loom_getstate(L);
  hconn *hc = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "chunk");
  size_t n = 0;
  wbuf w = {hc, 0, 0};
  uv_buf_t b[3];
  int r;
  const char *d = luaL_optlstring(L, 2, "", &n);
  lua_settop(L, 2);
  if (n == 0) {
    PUTLIT(&w, "0\r\n\r\n");
    return send_head(L, t, hc, &w, 0);
  }
  put_int(&w, n, 1);
  PUTLIT(&w, "\r\n");
  if (w.bad) return luaL_error(L, "out of memory");
  b[0] = uv_buf_init(hc->wbuf, (unsigned)w.len);
  b[1] = uv_buf_init((char *)d, (unsigned)n);
  b[2] = uv_buf_init("\r\n", 2);
  r = loom_stream_send(L, hc->st, b, 3);
  return r ? r : loom_stream_drain(L, t, hc->st, NULL);
}

/* conn:stream(): the underlying loom.Stream. */
static int c_stream(lua_State *L) {
  checkconn(L);
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
  push_unescaped(L, s, n, lua_toboolean(L, 2));
  return 1;
}

/* Expects [state, module]: adds _http_conn, _http_parse_url,
   _http_unescape. The methods get the headers metatable as upvalue 3, so
   it is made here and exposed as _http_headers_mt for the Lua layer. */
void loom_open_http(lua_State *L) {
  static const luaL_Reg methods[] = {{"next", c_next},       {"read", c_read},       {"done", c_done}, {"info", c_info},
                                     {"respond", c_respond}, {"request", c_request}, {"chunk", c_chunk},
                                     {"expect_head", c_expect_head}, {"idle", c_idle}, {"alive", c_alive},
                                     {"stream", c_stream}, {"serve", c_serve}, {"set_closing", c_set_closing},   {NULL, NULL}};
  int S = lua_absindex(L, -2), mod = S + 1, mt, i;
  lua_newtable(L); /* the headers metatable; http.lua fills in __index */
  lua_setfield(L, mod, "_http_headers_mt");
  luaL_newmetatable(L, "loom.HttpConn");
  mt = lua_gettop(L);
  lua_createtable(L, K_LAST, 0);
  for (i = K_METHOD; i <= K_LAST; i++) {
    lua_pushstring(L, keys[i]);
    lua_rawseti(L, -2, i);
  }
  lua_newtable(L);
  for (i = 0; methods[i].name; i++) {
    lua_pushvalue(L, S);
    lua_pushvalue(L, mt);
    lua_getfield(L, mod, "_http_headers_mt");
    lua_pushvalue(L, mt + 1);
    lua_pushcclosure(L, methods[i].func, 4);
    lua_setfield(L, -2, methods[i].name);
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
  lua_pushcfunction(L, c_parse_url);
  lua_setfield(L, mod, "_http_parse_url");
  lua_pushcfunction(L, c_unescape);
  lua_setfield(L, mod, "_http_unescape");
  lua_pop(L, 1);
}
