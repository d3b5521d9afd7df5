/*
 * tls.h: the TLS layer of a loom.Stream (tls.c), beneath its read buffer:
 * ciphertext from the socket goes in through loom_tls_input and comes out
 * as plaintext in the stream's buffer, so every reader of the buffer
 * (read, read_line, the HTTP parser) works unchanged over TLS; writes go
 * out through loom_tls_send, encrypted, by the stream's raw send path (the
 * same queue and backpressure). stream.c calls these where a stream has a
 * TLS layer (st->tls); tls.c owns the SSL object and its memory BIOs.
 */
#ifndef LOOM_TLS_H
#define LOOM_TLS_H

#include "stream.h"

/* Ciphertext arrived: fed to OpenSSL; after the handshake, what it decrypts
   is appended to the stream's buffer. 0, or UV_EPROTO on a record failure. */
int loom_tls_input(lstream *st, const char *p, size_t n);
/* The socket ended: the stream's end is clean only after close_notify. */
void loom_tls_eof(lstream *st);
/* True when the stream ended without the peer's close_notify. */
int loom_tls_truncated(lstream *st);
/* Encrypts and sends n buffers; 0 or a libuv error. */
int loom_tls_send(lstream *st, const uv_buf_t *bufs, int n);
/* A graceful close: close_notify is queued behind the data. */
void loom_tls_close_notify(lstream *st);
/* Frees the layer (the stream's __gc). */
void loom_tls_free(lstream *st);
void loom_open_tls(lua_State *L);

#endif
