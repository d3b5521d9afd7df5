/*
 * http.h: loom.HttpConn, one HTTP/1.1 connection over a loom.Stream (a
 * server's, reading requests, or a client's, reading responses), shared by
 * the files that make it up:
 *   http.c         the object: creation, life, the method table
 *   http_parse.c   reading: messages parsed in place from the stream's
 *                  buffer (http_parser), heads checked against RFC 9112,
 *                  bodies by Content-Length, chunks or the end; URLs
 *   http_format.c  writing: request heads, and the server's response under
 *                  construction, whose framing (Content-Length, chunked,
 *                  raw) and keep-alive are decided here and nowhere else
 *   http_serve.c   conn:serve, the server's common case in C
 * The Lua layer (lua/loom/http/) asks the connection what it decided
 * (conn:keep(), conn:state()) and tells it the facts only it knows (the
 * server is closing).
 */
#ifndef LOOM_HTTP_H
#define LOOM_HTTP_H

#include <stdlib.h>
#include <http_parser.h>
#include "loom.h"
#include "stream.h"

#define MAX_HEADERS 100

/* User values of the object. */
enum { HC_STREAM = 1, HC_HEADERS_MT, HC_MESSAGE_MT, HC_PENDING, HC_NUV = HC_PENDING };

/* The state of a server's response to the current request. */
enum { RS_NONE, RS_STREAMING, RS_DONE };
/* How a streamed body is framed. */
enum { FR_LENGTH, FR_CHUNKED, FR_RAW };

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
  int closing;       /* the server is closing: no connection is kept after its response */
  int expect;        /* the head had an Expect header */
  int cancel_gone;   /* a handler is cancelled if its client goes (server option cancel_on_disconnect) */
  int err_status;    /* the status a failure maps to: 400, 408, 413, 431, 505 */
  int broken;        /* reading the request's body failed: no connection is kept after it */
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
  /* the response to the current request (a server's): */
  int rstate;        /* RS_NONE, RS_STREAMING, RS_DONE */
  int rframing;      /* of a streamed body: FR_CHUNKED or FR_RAW */
  int rnobody;       /* HEAD, 1xx, 204, 304: the head describes a body not sent */
  int rkeep;         /* the connection goes on after it (decided with its head) */
  int rtouched;      /* a status or headers were set (conn:status, conn:header) */
  int continued;     /* 100 Continue was sent */
  lua_Integer rstatus; /* set by conn:status, 200 by default */
} hconn;

/* Upvalues of the methods: 1 = module state, 2 = the HttpConn metatable,
   3 = the headers metatable, 4 = the field names (keys). */
#define HC_MT lua_upvalueindex(2)

/* The field names the C side sets, interned once (upvalue 4 of the
   methods): setting a field through them skips lua_setfield's lookup of a
   C string, a measurable part of the cost of a request. */
enum {
  K_METHOD = 1, K_TARGET, K_PATH, K_UPGRADE, K_STATUS, K_VERSION, K_HEADERS, K_KEEP,
  K_RCONN, K_RREQ, K_RSERVER, /* a Response's */
  K_REQ, K_RAN, K_OK, K_N, K_RES, K_ERR, K_CODE, K_UNSENT, /* conn:serve's result */
  K_LAST = K_UNSENT
};

extern const char *const loom_http_keys[]; /* their names (http.c) */

/* Sets field k of the table under the value on top to that value. */
static inline void loom_http_setk(lua_State *L, int k) {
  lua_rawgeti(L, lua_upvalueindex(4), k);
  lua_insert(L, -2);
  lua_rawset(L, -3);
}

static inline hconn *loom_http_check(lua_State *L) {
  return loom_checkudata(L, 1, HC_MT);
}

static inline int loom_http_grow(char **buf, size_t *cap, size_t need) {
  size_t n = *cap ? *cap : 1024;
  char *nb;
  if (need <= *cap) return 0;
  while (n < need) n *= 2;
  if ((nb = realloc(*buf, n)) == NULL) return -1;
  *buf = nb;
  *cap = n;
  return 0;
}

/* http_parse.c */
/* Starts on the next message (the previous one done with, or the rest of
   its body to be skipped); a server's response state starts afresh. */
void loom_http_begin_next(hconn *hc);
/* Parses until the next message's head is complete, waiting as needed (k
   continues after a wait): pushes the message and whether it is plain
   (c_next's results), or the failure. */
int loom_http_next_step(lua_State *L, hconn *hc, loom_task *t, lua_KFunction k);
/* After a wait for a head timed out: nil, "timeout", "ETIMEDOUT" [, 408]. */
int loom_http_head_timeout(lua_State *L, hconn *hc);
void loom_http_push_unescaped(lua_State *L, const char *s, size_t n, int plus);
extern const luaL_Reg loom_http_parse_methods[];
extern const luaL_Reg loom_http_parse_functions[];

/* http_format.c */
/* Formats the response to the current request (status, the headers set
   with conn:header merged with those at hidx, a body of bl bytes, or a
   streamed one) into hc->wbuf, deciding its framing and keep-alive; its
   length, or -1 with an error message pushed for headers that cannot be
   sent (nothing decided then). */
int loom_http_format_response(lua_State *L, hconn *hc, lua_Integer status, int hidx, size_t bl, int streaming);
extern const luaL_Reg loom_http_format_methods[];

/* http_serve.c */
extern const luaL_Reg loom_http_serve_methods[];

#endif
