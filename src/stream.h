/*
 * stream.h: the stream object shared by stream.c (reading, writing,
 * closing), the files that open streams (tcp.c: TCP and Unix sockets), the
 * transports beneath a stream's buffer (stream.c's plain one, tls.c) and
 * the protocol parsers above it (http_parse.c, ws.c).
 *
 * The layers, bottom up:
 *   socket     a uv_stream_t: reads into the loop's one read buffer,
 *              writes through loom_stream_raw_send (tried at once, the
 *              unsent tail queued; one queue and one backpressure mark)
 *   transport  a loom_transport: turns socket bytes into the stream's
 *              bytes (input) and the stream's bytes into socket bytes
 *              (send); plain passes them through, TLS decrypts/encrypts
 *   buffer     the stream's read buffer: what the transport delivered and
 *              no reader took yet (loom_stream_peek / _consume / _end /
 *              loom_stream_wait for more)
 *   readers    Stream:read and friends (stream.c), the HTTP parser
 *              (http_parse.c), the WebSocket frame parser (ws.c)
 */
#ifndef LOOM_STREAM_H
#define LOOM_STREAM_H

#include "loom.h"
#include "handle.h"

#define LOOM_STREAM "loom.Stream"

typedef struct lstream lstream;

/* A transport: one table of operations per kind, its state in tpdata. */
typedef struct loom_transport {
  const char *name;
  /* Socket bytes arrived: the stream's bytes go to the buffer (through
     loom_stream_append). 0 or a libuv error, which fails the stream's reads. */
  int (*input)(lstream *st, const char *p, size_t n);
  /* The socket ended cleanly (st->eof is set). */
  void (*eof)(lstream *st);
  /* Whether that end proves nothing (TLS without close_notify): readers
     whose framing is "until the end" must then fail. */
  int (*truncated)(lstream *st);
  /* Sends the stream's bytes: 0 or a libuv error. */
  int (*send)(lstream *st, const uv_buf_t *bufs, int n);
  /* A graceful close: the transport's last bytes, queued after the data. */
  void (*shutdown)(lstream *st);
  /* Frees tpdata (the stream's __gc). */
  void (*free)(lstream *st);
  int raw; /* the socket carries the stream's bytes as they are (sendfile) */
} loom_transport;

extern const loom_transport loom_plain_transport;

struct lstream {
  loom_handle h;  /* first: a uv_tcp_t or uv_pipe_t (loom_stream_sock) */
  loom_loop *lp;
  int closed, shut, reading, eof;
  int rerr, werr; /* read / write failure (libuv code), reported to the next caller */
  char *rbuf;     /* buffered bytes are rbuf[rpos, rlen) */
  size_t rcap, rlen, rpos;
  uint64_t received; /* bytes that ever entered the buffer (or were handed to a reader) */
  uint64_t sent;     /* bytes users ever sent (before the transport: TLS counts plain bytes) */
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
  const loom_transport *tp; /* beneath the buffer: plain or TLS (tls.h) */
  void *tpdata;
  loom_task *gone_task; /* cancelled if the peer closes or resets meanwhile (an HTTP handler's task) */
};

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
/* For transports: bytes as the socket carries them out, and the stream's
   bytes into its buffer. 0 or a libuv error. */
int loom_stream_raw_send(lstream *st, const uv_buf_t *bufs, int n);
int loom_stream_append(lstream *st, const char *p, size_t n);

/* The buffer, for parsers: the bytes no reader took yet (*n of them), the
   n first of them taken, and whether more may come: 0, UV_EOF after a clean
   end, or the read error. A parser short of bytes with loom_stream_end 0
   waits with loom_stream_wait. */
static inline const char *loom_stream_peek(const lstream *st, size_t *n) {
  *n = st->rlen - st->rpos;
  return st->rbuf + st->rpos;
}
static inline void loom_stream_consume(lstream *st, size_t n) {
  st->rpos += n;
}
static inline int loom_stream_end(const lstream *st) {
  return st->rerr ? st->rerr : st->eof ? UV_EOF : 0;
}
/* For a reader whose framing is "until the end" when the transport says
   the end proves nothing: pushes nil, msg, "EPROTO"; returns 3. */
int loom_stream_fail_truncated(lua_State *L);
int loom_stream_drain(lua_State *L, loom_task *t, lstream *st, lua_KFunction k);
int loom_stream_drained(lua_State *L, loom_task *t, lstream *st);
/* Cancels t if the peer closes or resets the connection from now on (t
   NULL: nobody); an end already seen does not count. */
void loom_stream_watch_gone(lstream *st, loom_task *t);

#endif
