/*
 * tls.h: the TLS transport of a loom.Stream (tls.c), beneath its read
 * buffer (see stream.h for the layers): ciphertext from the socket goes in
 * and comes out as plaintext in the stream's buffer, so every reader of the
 * buffer (read, read_line, the HTTP and WebSocket parsers) works unchanged
 * over TLS; writes go out encrypted by the stream's raw send path (the same
 * queue and backpressure). tls.c owns the SSL object and its memory BIOs.
 */
#ifndef LOOM_TLS_H
#define LOOM_TLS_H

#include "stream.h"

/* The TLS transport; a stream gets it from loom.tls.wrap (tls.c), its state
   an SSL object with two memory BIOs. */
extern const loom_transport loom_tls_transport;
void loom_open_tls(lua_State *L);

#endif
