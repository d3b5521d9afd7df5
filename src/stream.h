/*
 * stream.h: the stream object shared by stream.c (reading, writing,
 * closing) and the files that open streams (tcp.c: TCP and Unix sockets).
 */
#ifndef LOOM_STREAM_H
#define LOOM_STREAM_H

#include "loom.h"
#include "handle.h"

#define LOOM_STREAM "loom.Stream"

typedef struct loom_tls loom_tls;

typedef struct lstream {
  loom_handle h;  /* first: a uv_tcp_t or uv_pipe_t (loom_stream_sock) */
  loom_loop *lp;
  int closed, shut, reading, eof;
  int rerr, werr; /* read / write failure (libuv code), reported to the next caller */
  char *rbuf;     /* buffered bytes are rbuf[rpos, rlen) */
  size_t rcap, rlen, rpos;
  uint64_t received; /* bytes that ever entered the buffer (or were handed to a reader) */
  size_t queued;  /* bytes handed to uv_write and not yet written */
  int flushing;   /* closed by its user, the handle stays open until queued is 0 */
  loom_timer linger; /* bounds that flush: then the stream is aborted */
  double linger_s;
  size_t line_max;
  double timeout; /* seconds for each read or write wait, 0: none */
  int want;       /* what the first reader waits for */
  size_t want_n;
  loom_task *want_task; /* a reader of "anything" the read callback may hand bytes to */
  loom_link readers, writers;
  loom_tls *tls;  /* the TLS layer beneath the buffer, or NULL (tls.h) */
  loom_task *gone_task; /* cancelled if the peer closes or resets meanwhile (an HTTP handler's task) */
} lstream;

#define loom_stream_sock(st) ((uv_stream_t *)(st)->h.uv)

lstream *loom_stream_new(lua_State *L, loom_loop *lp, uv_stream_t *hs, int mtidx);
/* A graceful close: what write accepted is still delivered (the handle
   closes once the queue is flushed, or is aborted after the linger time);
   waiters wake and find the stream closed. */
void loom_stream_shut(lstream *st);
/* An abortive close: queued bytes are dropped, a TCP peer gets a reset. */
void loom_stream_abort(lstream *st);
int loom_push_addr(lua_State *L, const struct sockaddr *sa);
void loom_parse_addr(lua_State *L, int hidx, int pidx, struct sockaddr_storage *ss);
void loom_open_stream(lua_State *L);
int loom_stream_wait(lua_State *L, loom_task *t, lstream *st, uint64_t deadline, lua_KFunction k);
int loom_stream_send(lua_State *L, lstream *st, const uv_buf_t *bufs, int n);
/* The same from C, for protocols that answer on their own (a websocket's
   pong): through the TLS layer if any, no Lua values; 0 or a libuv error. */
int loom_stream_out(lstream *st, const uv_buf_t *bufs, int n);
/* Whether writes should wait (more than the high-water mark is queued). */
int loom_stream_full(lstream *st);
/* For the transport beneath the buffer (tls.c): bytes as the socket carries
   them out, and plaintext into the read buffer. 0 or a libuv error. */
int loom_stream_raw_send(lstream *st, const uv_buf_t *bufs, int n);
int loom_stream_append(lstream *st, const char *p, size_t n);
int loom_stream_drain(lua_State *L, loom_task *t, lstream *st, lua_KFunction k);
int loom_stream_drained(lua_State *L, loom_task *t, lstream *st);
/* Cancels t if the peer closes or resets the connection from now on (t
   NULL: nobody); an end already seen does not count. */
void loom_stream_watch_gone(lstream *st, loom_task *t);

#endif
