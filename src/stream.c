/*
 * stream.c: loom.Stream, a connected byte stream over a libuv stream (a TCP
 * socket or a Unix pipe). Owns the stream's read buffer (fed from the loop's
 * one read buffer; reading stays on until the buffer passes a high-water
 * mark; every waiting reader looks at new bytes), the write path (try the
 * write now, queue only the unsent tail, wait above a high-water mark), and
 * the handle's life: a graceful close keeps the handle until the queue is
 * flushed (bounded by the linger timer), an abort drops it; the handle is
 * malloc'd and freed in its close callback. Files are sent from the page
 * cache with sendfile(2), ordered after what was written.
 */

/***
@module loom.net
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include "loom.h"
#include "stream.h"
#include "tls.h"

#define READ_HIGH (256 * 1024) /* stop reading above this many buffered bytes */
#define WRITE_HIGH (1024 * 1024) /* write waits while more than this is queued */
#define WRITE_LOW (256 * 1024)   /* ... until it drops below this */
#define LINE_MAX_DEFAULT (64 * 1024)
#define LINGER_DEFAULT 30.0 /* seconds a closed stream may take to flush */

enum { WANT_ANY, WANT_BYTES, WANT_SEP, WANT_ALL, WANT_LINE, WANT_MORE };

typedef struct wreq {
  uv_write_t req;
  lstream *st;
  size_t len;
  char data[];
} wreq;

/* ---------------------------------------------------------------- life */

static void wake_all(loom_loop *lp, loom_link *list) {
  while (!loom_list_empty(list)) loom_wake(lp, loom_container(list->next, loom_task, wait), 0);
}

static void stop_reading(lstream *st);

/* The flush a graceful close started is over (done or given up). */
static void end_flush(lstream *st) {
  if (st->linger.idx >= 0) loom_timer_stop(st->lp, &st->linger);
  if (st->flushing) {
    st->flushing = 0;
    st->lp->lingering--;
  }
}

/* Closes the handle (once). The userdata stays anchored until the close
   callback: write callbacks (ECANCELED) run before it. */
static void close_handle(lstream *st) {
  end_flush(st);
  loom_handle_close(&st->h);
}

/* The user's side of a close: every later call finds the stream closed and
   the tasks blocked on it wake to "closed". */
static void mark_closed(lstream *st) {
  st->closed = 1;
  st->gone_task = NULL;
  stop_reading(st);
  wake_all(st->lp, &st->readers);
  wake_all(st->lp, &st->writers);
}

void loom_stream_shut(lstream *st) {
  if (st->closed) return;
  mark_closed(st);
  if (st->h.uv) st->tp->shutdown(st); /* queued like any write */
  if (st->h.uv && st->queued > 0 && !st->werr) {
    st->flushing = 1;
    st->lp->lingering++;
    loom_timer_start(st->lp, &st->linger, loom_time(st->lp) + (uint64_t)(st->linger_s * 1e9));
  } else {
    close_handle(st);
  }
}

void loom_stream_abort(lstream *st) {
  if (!st->closed) mark_closed(st);
  if (st->h.uv && st->h.uv->type == UV_TCP &&
      uv_tcp_close_reset((uv_tcp_t *)st->h.uv, loom_handle_closed) == 0) {
    st->h.uv = NULL;
    end_flush(st);
    return;
  }
  close_handle(st);
}

static void linger_fire(loom_loop *lp, loom_timer *tm) {
  (void)lp;
  loom_stream_abort(loom_container(tm, lstream, linger));
}

/* loom.run's teardown: a stream nobody closed is cut, not flushed (the
   loop is going away; its tasks were cancelled). */
static void teardown(loom_handle *h) {
  loom_stream_abort((lstream *)h);
}

/* Makes a stream object for the handle hs (malloc'd, initialised on the loop)
   and pushes it; mtidx is the Stream metatable. */
lstream *loom_stream_new(lua_State *L, loom_loop *lp, uv_stream_t *hs, int mtidx) {
  lstream *st = lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  st->lp = lp;
  st->tp = &loom_plain_transport;
  st->line_max = LINE_MAX_DEFAULT;
  st->linger_s = LINGER_DEFAULT;
  st->linger.idx = -1;
  st->linger.fire = linger_fire;
  loom_list_init(&st->readers);
  loom_list_init(&st->writers);
  lua_pushvalue(L, mtidx);
  lua_setmetatable(L, -2);
  loom_handle_open(L, &st->h, lp, (uv_handle_t *)hs, -1, teardown);
  return st;
}

/* ---------------------------------------------------------------- reading */

/* The loop's one read buffer: libuv calls alloc and read back to back, and
   the read callback copies out what arrived. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  loom_loop *lp = (loom_loop *)h->loop;
  (void)hint;
  if (lp->readbuf == NULL) lp->readbuf = malloc(LOOM_READ_BUF);
  *buf = uv_buf_init(lp->readbuf, lp->readbuf ? LOOM_STREAM_READ : 0);
}

int loom_stream_append(lstream *st, const char *p, size_t n) {
  if (st->rpos > 0 && st->rlen + n > st->rcap) { /* compact first */
    memmove(st->rbuf, st->rbuf + st->rpos, st->rlen - st->rpos);
    st->rlen -= st->rpos;
    st->rpos = 0;
  }
  if (st->rlen + n > st->rcap) {
    size_t cap = st->rcap ? st->rcap : 16384;
    char *nb;
    while (cap < st->rlen + n) cap *= 2;
    if ((nb = realloc(st->rbuf, cap)) == NULL) return UV_ENOMEM;
    st->rbuf = nb;
    st->rcap = cap;
  }
  memcpy(st->rbuf + st->rlen, p, n);
  st->rlen += n;
  st->received += n;
  return 0;
}

static void stop_reading(lstream *st) {
  if (st->reading && loom_stream_sock(st)) uv_read_stop(loom_stream_sock(st));
  st->reading = 0;
}

/* libuv reports a reset that arrives after data as a plain end (on POLLHUP
   after a short read it does not read again): the socket's pending error
   tells a reset from a FIN, so a cut connection is never taken for a whole
   one. */
static int pending_error(uv_stream_t *s) {
  uv_os_fd_t fd;
  int err = 0;
  socklen_t len = sizeof err;
  if (s->type != UV_TCP || uv_fileno((uv_handle_t *)s, &fd) != 0) return 0;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return 0;
  return err ? uv_translate_sys_error(err) : 0;
}

/* The peer closed or reset the connection: the task that asked to know
   (an HTTP handler's, whose answer nobody will read) is cancelled. */
static void cancel_gone(lstream *st) {
  loom_task *t = st->gone_task;
  lua_State *L = st->lp->L;
  st->gone_task = NULL;
  lua_pushliteral(L, "client gone");
  loom_cancel(L, st->lp, t, -1);
  lua_pop(L, 1);
}

int loom_stream_fail_truncated(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "connection closed without TLS close_notify (the data may be truncated)");
  lua_pushliteral(L, "EPROTO");
  return 3;
}

/* ---------------------------------------------------------------- plain */

/* The plain transport: socket bytes are the stream's. A reader waiting for
   anything, with nothing buffered, gets them straight into its result: one
   copy. */
static int plain_input(lstream *st, const char *p, size_t n) {
  loom_task *t;
  if (st->rlen == st->rpos && !loom_list_empty(&st->readers) &&
      (t = loom_container(st->readers.next, loom_task, wait))->state == LOOM_WAITING &&
      st->want == WANT_ANY && st->want_task == t) {
    size_t k = n < st->want_n ? n : st->want_n;
    lua_pushlstring(t->co, p, k);
    st->received += k;
    st->want_task = NULL;
    loom_wake(st->lp, t, 1);
    p += k;
    n -= k;
  }
  return n > 0 ? loom_stream_append(st, p, n) : 0;
}

static void plain_none(lstream *st) {
  (void)st;
}

static int plain_truncated(lstream *st) {
  (void)st;
  return 0;
}

const loom_transport loom_plain_transport = {
    "plain", plain_input, plain_none, plain_truncated, loom_stream_raw_send, plain_none, plain_none, 1,
};

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  lstream *st = s->data;
  int rc;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF && (st->rerr = pending_error(s)) == 0) {
      st->eof = 1;
      st->tp->eof(st);
    } else if (nread != UV_EOF) {
      st->rerr = (int)nread;
    }
    stop_reading(st);
    wake_all(st->lp, &st->readers);
    if (st->gone_task) cancel_gone(st);
    return;
  }
  if ((rc = st->tp->input(st, buf->base, (size_t)nread)) < 0) {
    st->rerr = rc;
    stop_reading(st);
  }
  if (st->rlen - st->rpos > READ_HIGH) stop_reading(st);
  /* every reader looks: one that takes less than arrived must not leave the
     others asleep beside buffered bytes; one still short waits again */
  wake_all(st->lp, &st->readers);
  loom_run_inline(st->lp);
}

static int start_reading(lstream *st) {
  int rc;
  if (st->reading || st->eof || st->rerr || loom_stream_sock(st) == NULL) return 0;
  rc = uv_read_start(loom_stream_sock(st), on_alloc, on_read);
  if (rc == 0) st->reading = 1;
  return rc;
}

/* ---------------------------------------------------------------- methods */

/* Upvalues of the functions here: 1 = module state, 2 = the Stream metatable. */
#define MT lua_upvalueindex(2)

static lstream *checkstream(lua_State *L) {
  lstream *st = loom_checkudata(L, 1, MT);
  return st;
}

static int eof_fail(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "eof");
  lua_pushliteral(L, "EOF");
  return 3;
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

static void read_undo(lua_State *L, loom_loop *lp, loom_task *t);

/* Suspends the reader until more bytes (or the end) arrive. */
static int wait_data(lua_State *L, loom_state *S, loom_task *t, lstream *st) {
  int rc = start_reading(st);
  if (rc < 0) return loom_fail(L, rc, NULL);
  loom_suspend(L, t);
  t->undo = read_undo;
  t->waitobj = st;
  loom_list_append(&st->readers, &t->wait);
  if (st->timeout > 0) loom_timer_start(S->loop, &t->timer, loom_time(S->loop) + (uint64_t)(st->timeout * 1e9));
  return loom_yield(L, t, read_k);
}

/* For parsers reading a stream's buffer in place (http_parse.c, ws.c): suspends the
   running task until more bytes, the end or an error arrive, or until
   deadline (loom_time ns, 0: none); then k runs (t->timed_out says which).
   Returns loom_fail's values if reading cannot start. */
int loom_stream_wait(lua_State *L, loom_task *t, lstream *st, uint64_t deadline, lua_KFunction k) {
  int rc = start_reading(st);
  if (rc < 0) return loom_fail(L, rc, NULL);
  loom_suspend(L, t); /* no undo: nothing is handed over, the buffer stays as it is */
  t->waitobj = st;
  st->want = WANT_MORE;
  st->want_task = NULL;
  loom_list_append(&st->readers, &t->wait);
  if (deadline) loom_timer_start(st->lp, &t->timer, deadline);
  return loom_yield(L, t, k);
}

/* Serves the read method described by the arguments from the buffer, or
   waits. Stack: [stream, args...]; the method's kind at upvalue 3. */
static int serve_read(lua_State *L, loom_state *S, loom_task *t, lstream *st) {
  int kind = (int)lua_tointeger(L, lua_upvalueindex(3));
  const char *p = st->rbuf + st->rpos;
  size_t have = st->rlen - st->rpos;
  if (st->closed) return loom_fail_closed(L);
  switch (kind) {
    case WANT_ANY: {
      size_t max = (size_t)luaL_optinteger(L, 2, LOOM_READ_BUF);
      if (have > 0) {
        size_t n = have < max ? have : max;
        lua_pushlstring(L, p, n);
        st->rpos += n;
        return 1;
      }
      if (st->rerr) return loom_fail(L, st->rerr, NULL);
      if (st->eof) return eof_fail(L);
      st->want = WANT_ANY;
      st->want_n = max;
      st->want_task = t;
      return wait_data(L, S, t, st);
    }
    case WANT_BYTES: {
      size_t n = (size_t)luaL_checkinteger(L, 2);
      if (have >= n) {
        lua_pushlstring(L, p, n);
        st->rpos += n;
        return 1;
      }
      if (st->rerr || st->eof) { /* what came, and why it is short */
        lua_pushnil(L);
        lua_pushstring(L, st->rerr ? uv_strerror(st->rerr) : "eof");
        lua_pushstring(L, st->rerr ? uv_err_name(st->rerr) : "EOF");
        lua_pushlstring(L, p, have);
        st->rpos += have;
        return 4;
      }
      break;
    }
    case WANT_SEP:
    case WANT_LINE: {
      size_t seplen = 1, max = st->line_max, at;
      const char *sep = kind == WANT_LINE ? "\n" : luaL_checklstring(L, 2, &seplen);
      const char *hit = NULL;
      if (seplen == 0) return luaL_argerror(L, 2, "empty separator");
      for (at = 0; at + seplen <= have && at <= max; at++) {
        if (p[at] == sep[0] && memcmp(p + at, sep, seplen) == 0) {
          hit = p + at;
          break;
        }
      }
      if (hit == NULL && have > max) {
        lua_pushnil(L);
        lua_pushfstring(L, "line longer than %d bytes", (int)max);
        lua_pushliteral(L, "ETOOLONG");
        return 3;
      }
      if (hit) {
        size_t n = (size_t)(hit - p);
        if (kind == WANT_LINE && n > 0 && p[n - 1] == '\r') n--; /* \r\n ends a line too */
        lua_pushlstring(L, p, n);
        st->rpos += (size_t)(hit - p) + seplen;
        return 1;
      }
      if (st->rerr) return loom_fail(L, st->rerr, NULL);
      if (st->eof) {
        if (have == 0) return eof_fail(L);
        if (kind == WANT_LINE && lua_type(L, 2) == LUA_TBOOLEAN && lua_toboolean(L, 2)) {
          /* whole lines only: the rest is partial (lines() passes the last line here, not a boolean) */
          lua_pushnil(L);
          lua_pushliteral(L, "eof");
          lua_pushliteral(L, "EOF");
          lua_pushlstring(L, p, have);
          st->rpos += have;
          return 4;
        }
        lua_pushlstring(L, p, have); /* the last line, without its end */
        st->rpos += have;
        return 1;
      }
      break;
    }
    default: /* WANT_ALL */
      if (st->rerr) return loom_fail(L, st->rerr, NULL);
      if (st->eof && st->tp->truncated(st)) return loom_stream_fail_truncated(L); /* the end is not proven */
      if (st->eof) {
        lua_pushlstring(L, p, have);
        st->rpos += have;
        return 1;
      }
      break;
  }
  st->want = kind;
  st->want_task = NULL;
  return wait_data(L, S, t, st);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, read_k);
  lstream *st = lua_touserdata(L, 1);
  (void)status;
  if (lua_gettop(L) > t->kept) return 1; /* handed its bytes by on_read */
  if (st->want_task == t) st->want_task = NULL;
  if (t->timed_out) return loom_fail_timeout(L);
  return serve_read(L, S, t, st);
}

static void read_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  lstream *st = t->waitobj;
  (void)L;
  (void)lp;
  if (st->want_task == t) st->want_task = NULL;
  if (t->state == LOOM_READY && t->nargs == 1) { /* handed bytes: they go back in front */
    size_t n;
    const char *p = lua_tolstring(t->co, t->kept + 1, &n);
    char *nb;
    if (n == 0) return;
    if ((nb = malloc(st->rlen - st->rpos + n)) == NULL) return;
    memcpy(nb, p, n);
    memcpy(nb + n, st->rbuf + st->rpos, st->rlen - st->rpos);
    free(st->rbuf);
    st->rlen = st->rlen - st->rpos + n;
    st->rcap = st->rlen;
    st->rpos = 0;
    st->rbuf = nb;
  }
}

/***
A connected byte stream (TCP or Unix socket), from `tcp.connect`,
`server:accept`, `tcp.serve`'s handler or a process's pipes. Reading stays
on between calls (up to 256 KiB buffered); the end of the stream is
`nil, "eof", "EOF"` on every later read; a reader cancelled after bytes
were handed to it puts them back in front.
@type Stream
*/

/***
Whatever bytes are available, waiting for some. Blocks.
@function Stream:read
@tparam[opt=65536] integer max the most to return
@return a string, or nil, msg, code ("eof"/"EOF", "closed"/"ECLOSED",
"timeout"/"ETIMEDOUT", "ECONNRESET" ...)
@usage while true do local data = s:read(); if not data then break end; s:write(data) end
*/

/***
Exactly `n` bytes. Blocks.
@function Stream:read_exactly
@tparam integer n
@return a string; at an early end nil, "eof", "EOF" and what came; or nil, msg, code
@usage local len = string.unpack(">I4", s:read_exactly(4))
*/

/***
A line, without its `\n` or `\r\n`; the last line may lack its end.
Blocks.
@function Stream:read_line
@tparam[opt] boolean whole when true, bytes at the end without a `\n` are
not a line: nil, "eof", "EOF" and those bytes
@return a string, or nil, msg, code; a line over the limit (see
`set_line_max`, default 64 KiB) gives nil, msg, "ETOOLONG"
@usage local request_line = s:read_line()
*/

/***
The bytes before `sep` (`sep` is consumed, not returned). Blocks.
@function Stream:read_until
@tparam string sep a non-empty separator
@return a string, or nil, msg, code (ETOOLONG past the line limit)
@usage local head = s:read_until("\r\n\r\n")
*/

/***
Everything until the peer closes its side. Blocks.
@function Stream:read_all
@return a string, or nil, msg, code
@usage local reply = s:read_all()
*/
static int s_read(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = checkstream(L);
  loom_task *t = loom_checkrunning(L, S, "read");
  if (lua_gettop(L) >= 2 && lua_type(L, 2) == LUA_TNUMBER)
    luaL_argcheck(L, lua_tointeger(L, 2) >= 0, 2, "size must not be negative");
  return serve_read(L, S, t, st);
}

/* ---------------------------------------------------------------- writing */

static void on_write(uv_write_t *req, int status) {
  wreq *w = loom_container(req, wreq, req);
  lstream *st = w->st;
  st->queued -= w->len;
  if (status < 0 && status != UV_ECANCELED && st->werr == 0) st->werr = status;
  free(w);
  if (st->flushing && (st->queued == 0 || st->werr)) close_handle(st);
  if (st->queued < WRITE_LOW || st->werr) wake_all(st->lp, &st->writers);
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, write_k);
  lstream *st = t->waitobj;
  (void)status;
  int n = loom_stream_drained(L, t, st);
  if (n) return n;
  lua_pushboolean(L, 1);
  return 1;
}

/* Sends n buffers as they are (the transport's bytes): tried at once, only
   the unsent tail copied and queued. 0, or the libuv error (kept in werr). */
int loom_stream_raw_send(lstream *st, const uv_buf_t *bufs, int n) {
  size_t total = 0, sent = 0, at;
  int i, rc;
  wreq *w;
  uv_buf_t b;
  for (i = 0; i < n; i++) total += bufs[i].len;
  if (st->werr) return st->werr;
  if (st->queued == 0 && total > 0) {
    rc = uv_try_write(loom_stream_sock(st), bufs, (unsigned)n);
    if (rc >= 0)
      sent = (size_t)rc;
    else if (rc != UV_EAGAIN)
      return st->werr = rc;
  }
  if (sent == total) return 0;
  /* queue the tail, copied: the request owns it */
  if ((w = malloc(sizeof *w + (total - sent))) == NULL) return st->werr = UV_ENOMEM;
  at = 0;
  for (i = 0; i < n; i++) {
    size_t len = bufs[i].len, skip = sent > len ? len : sent;
    memcpy(w->data + at, bufs[i].base + skip, len - skip);
    at += len - skip;
    sent -= skip;
  }
  w->st = st;
  w->len = at;
  b = uv_buf_init(w->data, (unsigned)at);
  rc = uv_write(&w->req, loom_stream_sock(st), &b, 1, on_write);
  if (rc < 0) {
    free(w);
    return st->werr = rc;
  }
  st->queued += at;
  return 0;
}

/* Sends n buffers through the transport, counted as the user's bytes:
   0 or a libuv error. */
int loom_stream_out(lstream *st, const uv_buf_t *bufs, int n) {
  int i, rc;
  if (st->closed || loom_stream_sock(st) == NULL) return UV_EPIPE;
  if ((rc = st->tp->send(st, bufs, n)) < 0) return rc;
  for (i = 0; i < n; i++) st->sent += bufs[i].len;
  return 0;
}

/* Sends n buffers with one vectored write (through the stream's TLS layer
   when it has one): tried at once, only the unsent tail copied and queued
   (the buffers may be freed once it returns). Pushes true (1) or nil, msg,
   code (3), or returns 0 when more than WRITE_HIGH bytes are queued: the
   caller then returns loom_stream_drain's value. */
int loom_stream_send(lua_State *L, lstream *st, const uv_buf_t *bufs, int n) {
  int rc;
  if (st->closed || loom_stream_sock(st) == NULL) return loom_fail_closed(L);
  rc = loom_stream_out(st, bufs, n);
  if (rc < 0) return loom_fail(L, rc, NULL);
  if (st->queued > WRITE_HIGH) return 0;
  lua_pushboolean(L, 1);
  return 1;
}

int loom_stream_full(lstream *st) {
  return st->queued > WRITE_HIGH;
}

/* Waits until the queued bytes drop below WRITE_LOW (backpressure); then
   k runs (NULL: the write returns true, or nil, msg, code; another k checks
   loom_stream_drained). The caller's stack is kept. */
int loom_stream_drain(lua_State *L, loom_task *t, lstream *st, lua_KFunction k) {
  loom_suspend(L, t);
  t->waitobj = st;
  loom_list_append(&st->writers, &t->wait);
  if (st->timeout > 0) loom_timer_start(st->lp, &t->timer, loom_time(st->lp) + (uint64_t)(st->timeout * 1e9));
  return loom_yield(L, t, k ? k : write_k);
}

/* After a drain wait: 0, or pushes nil, msg, code and returns 3. */
int loom_stream_drained(lua_State *L, loom_task *t, lstream *st) {
  if (st->closed) return loom_fail_closed(L);
  if (st->werr) return loom_fail(L, st->werr, NULL);
  if (t->timed_out) return loom_fail_timeout(L);
  return 0;
}

/***
Sends the strings with one vectored write, tried at once; only the unsent
rest is queued. Returns at once unless more than 1 MiB is queued, then
waits until the peer takes it (backpressure). Blocks only then.
@function Stream:write
@param ... strings, or one list of strings
@return true, or nil, msg, code ("closed", "EPIPE", "ECONNRESET" ...)
@usage s:write("HTTP/1.0 200 OK\r\n\r\n", body)
*/
static int s_write(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = checkstream(L);
  loom_task *t = loom_checkrunning(L, S, "write");
  int list = lua_type(L, 2) == LUA_TTABLE, n, i, r;
  uv_buf_t stackbufs[16], *bufs = stackbufs;
  n = list ? (int)lua_rawlen(L, 2) : lua_gettop(L) - 1;
  if (n > 16 && (bufs = malloc((size_t)n * sizeof *bufs)) == NULL) return luaL_error(L, "write: out of memory");
  for (i = 0; i < n; i++) {
    size_t len;
    const char *s;
    if (list) {
      lua_rawgeti(L, 2, i + 1);
      s = lua_tolstring(L, -1, &len);
      lua_pop(L, 1); /* the list keeps the string alive */
      if (s == NULL) {
        if (bufs != stackbufs) free(bufs);
        return luaL_error(L, "bad argument #1 to 'write' (item %d is not a string)", i + 1);
      }
    } else {
      s = luaL_checklstring(L, i + 2, &len);
    }
    bufs[i] = uv_buf_init((char *)s, (unsigned)len);
  }
  r = loom_stream_send(L, st, bufs, n);
  if (bufs != stackbufs) free(bufs);
  return r ? r : loom_stream_drain(L, t, st, NULL);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  loom_task *t = req->data;
  (void)status;
  if (t) loom_wake((loom_loop *)req->handle->loop, t, 0);
  free(req);
}

static int shutdown_k(lua_State *L, int status, lua_KContext ctx) {
  loom_resumed(L, loom_getstate(L), ctx, shutdown_k);
  (void)status;
  lua_pushboolean(L, 1);
  return 1;
}

static void shutdown_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  uv_shutdown_t *req = t->waitobj;
  (void)L;
  (void)lp;
  if (t->state == LOOM_WAITING) req->data = NULL;
}

/***
Half-closes: the peer sees the end of the stream; reading goes on. Waits
for queued writes to be flushed. Blocks.
@function Stream:shutdown
@return true, or nil, msg, code
@usage s:write(request); s:shutdown(); local reply = s:read_all()
*/
static int s_shutdown(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = checkstream(L);
  loom_task *t = loom_checkrunning(L, S, "shutdown");
  uv_shutdown_t *req;
  int rc;
  if (st->closed || loom_stream_sock(st) == NULL) return loom_fail_closed(L);
  if (st->shut) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if ((req = malloc(sizeof *req)) == NULL) return luaL_error(L, "shutdown: out of memory");
  st->tp->shutdown(st); /* (TLS: close_notify, ahead of the end) */
  rc = uv_shutdown(req, loom_stream_sock(st), on_shutdown);
  if (rc < 0) {
    free(req);
    return loom_fail(L, rc, NULL);
  }
  st->shut = 1;
  req->data = t;
  lua_settop(L, 1);
  loom_suspend(L, t);
  t->undo = shutdown_undo;
  t->waitobj = req;
  return loom_yield(L, t, shutdown_k);
}

/***
Closes the stream gracefully; again is harmless; also `<close>`. What
`write` accepted is still delivered: the connection ends once the queued
bytes are flushed, in the background, or is reset if they are not within
the linger time (`set_linger`, default 30 s). A task blocked reading or
writing it gets nil, "closed", "ECLOSED". Never blocks.
@function Stream:close
@usage local s <close> = assert(loom.tcp.connect(host, port))
*/
static int s_close(lua_State *L) {
  lstream *st = loom_checkudata(L, 1, MT);
  loom_stream_shut(st);
  return 0;
}

/***
Closes the stream abortively: queued bytes are dropped and a TCP peer
sees a reset (ECONNRESET), not a clean end. Also ends a graceful close
still flushing. Never blocks.
@function Stream:abort
@usage if not authorised then s:abort() return end
*/
static int s_abort(lua_State *L) {
  loom_stream_abort(checkstream(L));
  return 0;
}

/***
How long a graceful `close` may take to flush the queued bytes before the
stream is aborted. Never blocks.
@function Stream:set_linger
@tparam number seconds more than 0 (default 30)
@usage s:set_linger(5)
*/
static int s_set_linger(lua_State *L) {
  lstream *st = checkstream(L);
  lua_Number sec = luaL_checknumber(L, 2);
  luaL_argcheck(L, sec > 0 && sec <= 1e9, 2, "linger must be a positive number of seconds");
  st->linger_s = sec;
  return 0;
}

static int s_gc(lua_State *L) {
  lstream *st = lua_touserdata(L, 1);
  free(st->rbuf);
  st->rbuf = NULL;
  st->tp->free(st);
  return 0;
}

/***
A limit for each read or write wait: an expired wait returns nil,
"timeout", "ETIMEDOUT". Never blocks.
@function Stream:set_timeout
@tparam[opt] number seconds nil or 0: none
@usage s:set_timeout(30)
*/
static int s_set_timeout(lua_State *L) {
  lstream *st = checkstream(L);
  lua_Number s = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, s >= 0, 2, "timeout must be a non-negative number");
  st->timeout = s;
  return 0;
}

/***
The longest line `read_line` and `read_until` accept (default 64 KiB).
Never blocks.
@function Stream:set_line_max
@tparam integer n bytes
@usage s:set_line_max(1024)
*/
static int s_set_line_max(lua_State *L) {
  lstream *st = checkstream(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  st->line_max = (size_t)n;
  return 0;
}

static int s_tostring(lua_State *L) {
  lstream *st = loom_checkudata(L, 1, MT);
  lua_pushfstring(L, "loom.Stream (%s)", st->closed ? "closed" : "open");
  return 1;
}

/* Pushes a libuv socket address as host, port (2 values). */
int loom_push_addr(lua_State *L, const struct sockaddr *sa) {
  char host[INET6_ADDRSTRLEN];
  int port = 0;
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a, host, sizeof host);
    port = ntohs(a->sin6_port);
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    uv_ip4_name(a, host, sizeof host);
    port = ntohs(a->sin_port);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    return 2;
  }
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

static int name_of(lua_State *L, int peer) {
  lstream *st = checkstream(L);
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (st->closed || loom_stream_sock(st) == NULL) return loom_fail_closed(L);
  if (loom_stream_sock(st)->type == UV_NAMED_PIPE) {
    char path[1024];
    size_t plen = sizeof path;
    rc = peer ? uv_pipe_getpeername((uv_pipe_t *)loom_stream_sock(st), path, &plen)
              : uv_pipe_getsockname((uv_pipe_t *)loom_stream_sock(st), path, &plen);
    if (rc < 0) return loom_fail(L, rc, NULL);
    lua_pushlstring(L, path, plen);
    return 1;
  }
  rc = peer ? uv_tcp_getpeername((uv_tcp_t *)loom_stream_sock(st), (struct sockaddr *)&ss, &len)
            : uv_tcp_getsockname((uv_tcp_t *)loom_stream_sock(st), (struct sockaddr *)&ss, &len);
  if (rc < 0) return loom_fail(L, rc, NULL);
  return loom_push_addr(L, (struct sockaddr *)&ss);
}

/***
The address of the other end. Never blocks.
@function Stream:peername
@return host and port (a path for Unix sockets), or nil, msg, code
@usage print("client", s:peername())
*/
static int s_peername(lua_State *L) {
  return name_of(L, 1);
}

/***
The address of this end. Never blocks.
@function Stream:sockname
@return host and port (a path for Unix sockets), or nil, msg, code
@usage local _, port = s:sockname()
*/
static int s_sockname(lua_State *L) {
  return name_of(L, 0);
}

/* stream:_sendfile(fd, offset, length): sends length bytes of the open
   file fd from offset, after what write queued, straight from the page
   cache to the socket (sendfile(2) on the loop's thread, as nginx does
   without aio: a file not in the cache is read while the loop waits).
   When the socket is full, one piece goes through the write queue instead,
   whose drain waits for room. true, or nil, msg, code (ENOTSUP under TLS:
   the bytes must be encrypted, the caller copies them). Blocks. Stack
   while sending: [stream, fd, offset, left]. */
#define SENDFILE_PIECE (64 * 1024)

static int sendfile_k(lua_State *L, int status, lua_KContext ctx);

static int sendfile_run(lua_State *L, loom_task *t, lstream *st) {
  int in = (int)lua_tointeger(L, 2);
  off_t off = (off_t)lua_tointeger(L, 3);
  lua_Integer left = lua_tointeger(L, 4);
  uv_os_fd_t out;
  while (left > 0) {
    size_t want = left > SENDFILE_PIECE * 4 ? SENDFILE_PIECE * 4 : (size_t)left;
    ssize_t n;
    if (st->closed) return loom_fail_closed(L);
    if (st->werr) return loom_fail(L, st->werr, NULL);
    if (st->queued > 0) { /* what was written goes first */
      lua_pushinteger(L, (lua_Integer)off);
      lua_replace(L, 3);
      lua_pushinteger(L, left);
      lua_replace(L, 4);
      return loom_stream_drain(L, t, st, sendfile_k);
    }
    if (uv_fileno(st->h.uv, &out) < 0) return loom_fail_closed(L);
    n = sendfile(out, in, &off, want);
    if (n > 0) {
      left -= n;
    } else if (n == 0) {
      return loom_fail(L, UV_EOF, "the file ended early");
    } else if (errno == EAGAIN) { /* full: this piece waits in the queue */
      char *buf = malloc(SENDFILE_PIECE);
      ssize_t got;
      uv_buf_t b;
      int rc;
      if (buf == NULL) return luaL_error(L, "sendfile: out of memory");
      got = pread(in, buf, left > SENDFILE_PIECE ? SENDFILE_PIECE : (size_t)left, off);
      if (got <= 0) {
        free(buf);
        return got == 0 ? loom_fail(L, UV_EOF, "the file ended early") : loom_fail(L, uv_translate_sys_error(errno), NULL);
      }
      b = uv_buf_init(buf, (unsigned)got);
      rc = loom_stream_raw_send(st, &b, 1);
      free(buf);
      if (rc < 0) return loom_fail(L, rc, NULL);
      off += got;
      left -= got;
    } else if (errno != EINTR) {
      return loom_fail(L, uv_translate_sys_error(errno), NULL);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int sendfile_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, sendfile_k);
  lstream *st = lua_touserdata(L, 1);
  int n = loom_stream_drained(L, t, st);
  (void)status;
  if (n) return n;
  return sendfile_run(L, t, st);
}

static int s_sendfile(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = checkstream(L);
  loom_task *t = loom_checkrunning(L, S, "sendfile");
  luaL_checkinteger(L, 2);
  luaL_argcheck(L, luaL_checkinteger(L, 3) >= 0, 3, "offset must not be negative");
  luaL_argcheck(L, luaL_checkinteger(L, 4) >= 0, 4, "length must not be negative");
  lua_settop(L, 4);
  if (!st->tp->raw) return loom_fail(L, UV_ENOTSUP, "sendfile needs a plain socket");
  return sendfile_run(L, t, st);
}

/* stream:_cancel_on_close(on): with on, the running task is cancelled if
   the peer closes or resets the connection from now on (an end seen
   already does not count: a client that half-closed after its request
   still gets its answer); without, no more. */
void loom_stream_watch_gone(lstream *st, loom_task *t) {
  st->gone_task = (t && !st->eof && !st->rerr && !st->closed) ? t : NULL;
}

static int s_cancel_on_close(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = checkstream(L);
  loom_stream_watch_gone(st, lua_toboolean(L, 2) ? loom_checkrunning(L, S, "_cancel_on_close") : NULL);
  return 0;
}

/* stream:_buffered(): bytes received and not yet read (LuaSocket's dirty),
   and all bytes ever received and sent (its getstats). */
static int s_buffered(lua_State *L) {
  lstream *st = checkstream(L);
  lua_pushinteger(L, st->closed ? 0 : (lua_Integer)(st->rlen - st->rpos));
  lua_pushinteger(L, (lua_Integer)st->received);
  lua_pushinteger(L, (lua_Integer)st->sent);
  return 3;
}

/* stream:_fileno(): the descriptor (LuaSocket's getfd), or -1 once closed. */
static int s_fileno(lua_State *L) {
  lstream *st = checkstream(L);
  uv_os_fd_t fd = -1;
  if (st->h.uv == NULL || st->closed || uv_fileno(st->h.uv, &fd) < 0) fd = -1;
  lua_pushinteger(L, fd);
  return 1;
}

/* stream:_setopt(name, on): "nodelay" or "keepalive" on a TCP stream, as
   LuaSocket's setoption sets them; true, or nil, msg, code. */
static int s_setopt(lua_State *L) {
  lstream *st = checkstream(L);
  const char *name = luaL_checkstring(L, 2);
  int on = lua_toboolean(L, 3), rc;
  if (st->h.uv == NULL || st->closed) return loom_fail_closed(L);
  if (st->h.uv->type != UV_TCP) return loom_fail(L, UV_ENOTSUP, NULL);
  if (strcmp(name, "nodelay") == 0)
    rc = uv_tcp_nodelay((uv_tcp_t *)st->h.uv, on);
  else
    rc = uv_tcp_keepalive((uv_tcp_t *)st->h.uv, on, 60);
  if (rc < 0) return loom_fail(L, rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/***
Iterates over lines until the end of the stream (an error ends the loop
too). Each step blocks.
@function Stream:lines
@return an iterator
@usage for line in s:lines() do s:write(line:upper(), "\n") end
*/
static int s_lines(lua_State *L) {
  checkstream(L);
  lua_getfield(L, MT, "__index");
  lua_getfield(L, -1, "read_line");
  lua_pushvalue(L, 1);
  return 2;
}

/* Expects [state, module]: adds module._Stream (the metatable) for the
   network files, which create streams. */
void loom_open_stream(lua_State *L) {
  static const luaL_Reg methods[] = {{"write", s_write},
                                     {"shutdown", s_shutdown},
                                     {"close", s_close},
                                     {"abort", s_abort},
                                     {"set_linger", s_set_linger},
                                     {"set_timeout", s_set_timeout},
                                     {"set_line_max", s_set_line_max},
                                     {"peername", s_peername},
                                     {"sockname", s_sockname},
                                     {"lines", s_lines},
                                     {"_fileno", s_fileno},
                                     {"_buffered", s_buffered},
                                     {"_sendfile", s_sendfile},
                                     {"_cancel_on_close", s_cancel_on_close},
                                     {"_setopt", s_setopt},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", s_close}, {"__gc", s_gc}, {"__tostring", s_tostring},
                                  {NULL, NULL}};
  static const char *const reads[] = {"read", "read_exactly", "read_until", "read_all", "read_line"};
  static const int kinds[] = {WANT_ANY, WANT_BYTES, WANT_SEP, WANT_ALL, WANT_LINE};
  int S = lua_absindex(L, -2), mt, i;
  loom_newclass(L, S, LOOM_STREAM, methods, meta);
  mt = lua_gettop(L);
  lua_getfield(L, mt, "__index");
  for (i = 0; i < 5; i++) { /* the read methods share s_read; upvalue 3 says which */
    lua_pushvalue(L, S);
    lua_pushvalue(L, mt);
    lua_pushinteger(L, kinds[i]);
    lua_pushcclosure(L, s_read, 3);
    lua_setfield(L, -2, reads[i]);
  }
  lua_pop(L, 1);
  lua_setfield(L, S + 1, "_Stream");
}
