/* tls_echo_uv: the reference TLS echo server for bench/tls.sh: libuv and
 * OpenSSL with memory BIOs (the same structure as loom's TLS transport:
 * ciphertext read by libuv goes into one BIO, what OpenSSL writes to the
 * other is sent with uv_try_write, the rest queued), with nginx's
 * settings (SSL_MODE_RELEASE_BUFFERS, no compression), and no scripting
 * layer: what the loop and OpenSSL themselves cost.
 * usage: tls_echo_uv PORT CERT KEY */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

static uv_loop_t *loop;
static SSL_CTX *ctx;

typedef struct {
  uv_tcp_t h;
  SSL *ssl;
  BIO *rbio, *wbio;
} conn;

typedef struct {
  uv_write_t req;
  char data[];
} wreq;

static void on_close(uv_handle_t *h) {
  conn *c = (conn *)h;
  SSL_free(c->ssl);
  free(c);
}

static void on_write(uv_write_t *r, int status) {
  (void)status;
  free(r);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  static char buf[65536];
  (void)h;
  (void)sz;
  *b = uv_buf_init(buf, sizeof buf);
}

/* Sends what OpenSSL wrote: tried at once, the tail copied and queued. */
static void flush_out(conn *c) {
  BUF_MEM *bm;
  uv_buf_t b;
  int n;
  BIO_get_mem_ptr(c->wbio, &bm);
  if (bm->length == 0) return;
  b = uv_buf_init(bm->data, (unsigned)bm->length);
  n = uv_try_write((uv_stream_t *)&c->h, &b, 1);
  if (n < 0) n = 0;
  if ((size_t)n < bm->length) {
    wreq *w = malloc(sizeof *w + bm->length - n);
    memcpy(w->data, bm->data + n, bm->length - n);
    b = uv_buf_init(w->data, (unsigned)(bm->length - n));
    uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, on_write);
  }
  (void)BIO_reset(c->wbio);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = (conn *)s;
  char buf[16384];
  int r;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  BIO_write(c->rbio, b->base, (int)n);
  if (!SSL_is_init_finished(c->ssl)) {
    r = SSL_do_handshake(c->ssl);
    flush_out(c);
    if (r != 1) {
      if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) uv_close((uv_handle_t *)s, on_close);
      ERR_clear_error();
      return;
    }
  }
  while ((r = SSL_read(c->ssl, buf, sizeof buf)) > 0) SSL_write(c->ssl, buf, r);
  if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
    ERR_clear_error();
    flush_out(c);
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  flush_out(c);
}

static void on_conn(uv_stream_t *srv, int status) {
  conn *c;
  if (status < 0) return;
  c = calloc(1, sizeof *c);
  uv_tcp_init(loop, &c->h);
  if (uv_accept(srv, (uv_stream_t *)&c->h) != 0) {
    uv_close((uv_handle_t *)&c->h, on_close);
    return;
  }
  uv_tcp_nodelay(&c->h, 1);
  c->ssl = SSL_new(ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_accept_state(c->ssl);
  uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
}

int main(int argc, char **argv) {
  uv_tcp_t srv;
  struct sockaddr_in a;
  if (argc < 4) {
    fprintf(stderr, "usage: tls_echo_uv PORT CERT KEY\n");
    return 2;
  }
  ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "tls_echo_uv: cannot load the certificate or key\n");
    return 1;
  }
  loop = uv_default_loop();
  uv_tcp_init(loop, &srv);
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &a);
  uv_tcp_bind(&srv, (const struct sockaddr *)&a, 0);
  if (uv_listen((uv_stream_t *)&srv, 1024, on_conn) != 0) return 1;
  return uv_run(loop, UV_RUN_DEFAULT);
}
