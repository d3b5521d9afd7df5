/*
 * tls.c: loom.tls on OpenSSL. Owns contexts (loom.TLSContext: an SSL_CTX
 * with loom's secure defaults), the TLS layer of a stream (tls.h: an SSL
 * object with two memory BIOs, fed from the stream's libuv reads and
 * flushed through its raw send path), the handshake (a blocking call of the
 * task, never of the loop) and stream:tls_info().
 *
 * Defaults, after nginx's ngx_event_openssl.c: TLS 1.2 at least, no
 * compression, no renegotiation, forward-secret AEAD ciphers only for TLS
 * 1.2 (TLS 1.3's own suites otherwise), server cipher preference. A client
 * verifies the chain (the system store unless `ca` says otherwise) and the
 * host name, and sends SNI; only `verify = false` turns verification off.
 */

/***
@module loom.tls
*/
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "loom.h"
#include "tls.h"

#define LOOM_TLS_CTX "loom.TLSContext"
#define RECORD 16384 /* one TLS record of plaintext */

static const char default_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

typedef struct tlsctx {
  SSL_CTX *ctx;
  int verify;          /* -1: the role's default, 0: off, 1: on */
  int system_store;    /* no `ca`: the system store is read when first needed */
  unsigned char *alpn; /* the protocols, in ALPN's wire format */
  unsigned alpn_len;
  int nsni;            /* `servers`: host names and their contexts (kept in uservalue 1) */
  char **sni_names;
  SSL_CTX **sni_ctx;
} tlsctx;

typedef struct loom_tls {
  SSL *ssl;
  BIO *rbio, *wbio; /* ciphertext in from the socket, out to it */
  int done;         /* the handshake completed */
  int notified;     /* the peer's close_notify arrived */
  int truncated;    /* the socket ended without it */
} loom_tls;

#define TLS(st) ((loom_tls *)(st)->tpdata)

/* Upvalues of the functions here: 1 = module state, 2 = the context
   metatable, 3 = the Stream metatable. */
#define CTX_MT lua_upvalueindex(2)
#define STREAM_MT lua_upvalueindex(3)

/* ---------------------------------------------------------------- records */

/* Sends what OpenSSL wrote to the outgoing BIO. */
static int flush_out(lstream *st) {
  loom_tls *tls = TLS(st);
  BUF_MEM *bm;
  uv_buf_t b;
  int rc;
  BIO_get_mem_ptr(tls->wbio, &bm);
  if (bm->length == 0) return 0;
  if (st->h.uv == NULL) {
    (void)BIO_reset(tls->wbio);
    return UV_EPIPE;
  }
  b = uv_buf_init(bm->data, (unsigned)bm->length);
  rc = loom_stream_raw_send(st, &b, 1); /* copies what it cannot send now */
  (void)BIO_reset(tls->wbio);
  return rc;
}

/* Decrypts what the incoming BIO holds into the stream's buffer. */
static int pump(lstream *st) {
  loom_tls *tls = TLS(st);
  char buf[RECORD];
  for (;;) {
    int r = SSL_read(tls->ssl, buf, sizeof buf), e;
    if (r > 0) {
      if (loom_stream_append(st, buf, (size_t)r) < 0) return UV_ENOMEM;
      continue;
    }
    e = SSL_get_error(tls->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      tls->notified = 1;
      st->eof = 1;
      break;
    }
    ERR_clear_error();
    flush_out(st); /* an alert, if OpenSSL made one */
    return UV_EPROTO;
  }
  return flush_out(st); /* session tickets, key updates */
}

static int tls_input(lstream *st, const char *p, size_t n) {
  loom_tls *tls = TLS(st);
  if (BIO_write(tls->rbio, p, (int)n) != (int)n) return UV_ENOMEM;
  return tls->done ? pump(st) : 0; /* during the handshake, the handshaker reads */
}

static void tls_eof(lstream *st) {
  if (!TLS(st)->notified) TLS(st)->truncated = 1;
}

static int tls_truncated(lstream *st) {
  return TLS(st)->truncated;
}

static int tls_send(lstream *st, const uv_buf_t *bufs, int n) {
  loom_tls *tls = TLS(st);
  size_t total = 0;
  int i;
  if (!tls->done) return UV_ENOTCONN;
  for (i = 0; i < n; i++) total += bufs[i].len;
  if (n > 1 && total <= RECORD) { /* small pieces: one record, not one each */
    char rec[RECORD];
    size_t at = 0;
    for (i = 0; i < n; i++) {
      memcpy(rec + at, bufs[i].base, bufs[i].len);
      at += bufs[i].len;
    }
    if (SSL_write(tls->ssl, rec, (int)at) <= 0) goto fail;
  } else {
    for (i = 0; i < n; i++)
      if (bufs[i].len > 0 && SSL_write(tls->ssl, bufs[i].base, (int)bufs[i].len) <= 0) goto fail;
  }
  return flush_out(st);
fail:
  ERR_clear_error();
  return st->werr = UV_EPROTO;
}

static void tls_shutdown(lstream *st) {
  loom_tls *tls = TLS(st);
  if (!tls->done || st->werr || (SSL_get_shutdown(tls->ssl) & SSL_SENT_SHUTDOWN)) return;
  if (SSL_shutdown(tls->ssl) < 0) ERR_clear_error();
  flush_out(st);
}

static void tls_free(lstream *st) {
  SSL_free(TLS(st)->ssl); /* and its BIOs */
  free(st->tpdata);
  st->tpdata = NULL;
  st->tp = &loom_plain_transport;
}

const loom_transport loom_tls_transport = {
    "tls", tls_input, tls_eof, tls_truncated, tls_send, tls_shutdown, tls_free, 0,
};

/* ---------------------------------------------------------------- contexts */

static int ctx_fail(lua_State *L, const char *what) {
  unsigned long e = ERR_get_error();
  char msg[256];
  ERR_error_string_n(e, msg, sizeof msg);
  ERR_clear_error();
  return luaL_error(L, "tls.context: %s: %s", what, e == 0 ? "invalid" : ERR_reason_error_string(e) ? ERR_reason_error_string(e) : msg);
}

static int is_pem(const char *s) {
  return strstr(s, "-----BEGIN") != NULL;
}

/* cert: a chain file, or PEM text (the first certificate is the leaf). */
static int use_cert(lua_State *L, SSL_CTX *ctx, const char *cert) {
  BIO *b;
  X509 *x;
  if (!is_pem(cert)) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) return ctx_fail(L, cert);
    return 0;
  }
  b = BIO_new_mem_buf(cert, -1);
  if ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
    X509_free(x);
    BIO_free(b);
    return ctx_fail(L, "cert");
  }
  X509_free(x);
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) X509_free(x);
  ERR_clear_error(); /* the end of the PEM text */
  BIO_free(b);
  return 0;
}

static int use_key(lua_State *L, SSL_CTX *ctx, const char *key) {
  BIO *b;
  EVP_PKEY *k;
  if (!is_pem(key)) {
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) return ctx_fail(L, key);
  } else {
    b = BIO_new_mem_buf(key, -1);
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (k == NULL || SSL_CTX_use_PrivateKey(ctx, k) != 1) {
      EVP_PKEY_free(k);
      return ctx_fail(L, "key");
    }
    EVP_PKEY_free(k);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return ctx_fail(L, "the key does not match the certificate");
  return 0;
}

/* ca: a file or a directory of trusted certificates, or PEM text. */
static int use_ca(lua_State *L, SSL_CTX *ctx, const char *ca) {
  struct stat sb;
  if (is_pem(ca)) {
    BIO *b = BIO_new_mem_buf(ca, -1);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509 *x;
    int n = 0;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
      X509_STORE_add_cert(store, x);
      X509_free(x);
      n++;
    }
    ERR_clear_error();
    BIO_free(b);
    if (n == 0) return luaL_error(L, "tls.context: ca: no certificate in the PEM text");
    return 0;
  }
  if (stat(ca, &sb) != 0) return luaL_error(L, "tls.context: ca: %s: no such file or directory", ca);
  if (SSL_CTX_load_verify_locations(ctx, S_ISDIR(sb.st_mode) ? NULL : ca, S_ISDIR(sb.st_mode) ? ca : NULL) != 1)
    return ctx_fail(L, ca);
  return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  tlsctx *c = arg;
  (void)ssl;
  if (c->alpn == NULL ||
      SSL_select_next_proto((unsigned char **)out, outlen, c->alpn, c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* no protocol in common: go on without one */
  return SSL_TLSEXT_ERR_OK;
}

static const char *opt_string(lua_State *L, const char *k) {
  const char *s;
  lua_getfield(L, 1, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if ((s = lua_tostring(L, -1)) == NULL || lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "bad argument #1 to 'context' (%s must be a string)", k);
  lua_pop(L, 1); /* the table keeps it */
  return s;
}

static int ctx_gc(lua_State *L) {
  tlsctx *c = lua_touserdata(L, 1);
  int i;
  SSL_CTX_free(c->ctx);
  c->ctx = NULL;
  free(c->alpn);
  c->alpn = NULL;
  for (i = 0; i < c->nsni; i++) free(c->sni_names[i]);
  free(c->sni_names);
  free(c->sni_ctx);
  c->sni_names = NULL;
  c->sni_ctx = NULL;
  c->nsni = 0;
  return 0;
}

/* A server's SNI: the certificate of the name the client asked for, from
   `servers` (case-insensitive), else the context's own. */
static int on_servername(SSL *ssl, int *alert, void *arg) {
  tlsctx *c = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  int i;
  (void)alert;
  if (name == NULL) return SSL_TLSEXT_ERR_OK;
  for (i = 0; i < c->nsni; i++)
    if (strcasecmp(name, c->sni_names[i]) == 0) {
      SSL_set_SSL_CTX(ssl, c->sni_ctx[i]);
      /* the chosen context's certificate; loom's verify mode and options stay */
      break;
    }
  return SSL_TLSEXT_ERR_OK;
}

/* servers = {[name] = {cert =, key =}}: a context per name, made with the
   parent's other fields. */
static void use_servers(lua_State *L, tlsctx *c) {
  int n = 0, i = 0, sub;
  if (lua_getfield(L, 1, "servers") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, -1)) luaL_error(L, "bad argument #1 to 'context' (servers must be a table of name = {cert, key})");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    n++;
    lua_pop(L, 1);
  }
  c->sni_names = calloc((size_t)n, sizeof *c->sni_names);
  c->sni_ctx = calloc((size_t)n, sizeof *c->sni_ctx);
  if (n > 0 && (c->sni_names == NULL || c->sni_ctx == NULL)) luaL_error(L, "tls.context: out of memory");
  lua_createtable(L, n, 0); /* keeps the sub-contexts alive: the parent's uservalue */
  sub = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, sub - 1)) {
    tlsctx *sc;
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      luaL_error(L, "bad argument #1 to 'context' (servers must be a table of name = {cert, key})");
    {
      lua_Debug ar; /* l_context itself, with its upvalues */
      lua_getstack(L, 0, &ar);
      lua_getinfo(L, "f", &ar);
    }
    lua_createtable(L, 0, 8);
    lua_getfield(L, -3, "cert");
    lua_setfield(L, -2, "cert");
    lua_getfield(L, -3, "key");
    lua_setfield(L, -2, "key");
    {
      static const char *const inherit[] = {"ca", "verify", "alpn", "min_version", "ciphers", NULL};
      int k;
      for (k = 0; inherit[k]; k++) {
        lua_getfield(L, 1, inherit[k]);
        lua_setfield(L, -2, inherit[k]);
      }
    }
    lua_call(L, 1, 1);
    sc = lua_touserdata(L, -1);
    c->sni_names[i] = strdup(lua_tostring(L, -3));
    c->sni_ctx[i] = sc->ctx;
    c->nsni = ++i;
    lua_rawseti(L, sub, i);
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, 2, 1);
  lua_pop(L, 1);
  SSL_CTX_set_tlsext_servername_callback(c->ctx, on_servername);
  SSL_CTX_set_tlsext_servername_arg(c->ctx, c);
}

/***
A reusable TLS context with loom's secure defaults. Never blocks.
@function context
@tparam table opts `cert`, `key` (file paths or PEM text), `ca` (a file, a
directory or PEM text; default: the system store), `verify` (a client
verifies unless `false`; a server asks for and checks client certificates
when `true`), `alpn` (a list of protocol names), `min_version` ("1.2",
the default, or "1.3"), `ciphers` (TLS 1.2 cipher list), `servers` (a
server's certificates by host name, chosen by SNI: `{["api.example"] =
{cert =, key =}}`; other names get `cert`)
@return a context
@raise on a bad field, an unreadable file or a key that does not match
@usage local ctx = loom.tls.context{ cert = "server.pem", key = "server.key" }
*/
static int l_context(lua_State *L) {
  tlsctx *c;
  const char *s, *cert, *key;
  int n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  lua_pushvalue(L, CTX_MT);
  lua_setmetatable(L, -2);
  if ((c->ctx = SSL_CTX_new(TLS_method())) == NULL) return ctx_fail(L, "cannot create a context");
  SSL_CTX_set_options(c->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* the chain sent is the one given with the certificate, as nginx does:
     OpenSSL would otherwise search the trust store for it on every full
     handshake (1.5x the server's CPU per handshake here) */
  SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_BOTH);
  /* One TLS 1.3 session ticket per handshake, not OpenSSL's two: a client
     needs one to resume, and with two, wrk's new-connection load resumed
     far less (2,050 against 3,630 handshakes/s here). */
  SSL_CTX_set_num_tickets(c->ctx, 1);
  s = opt_string(L, "min_version");
  if (s && strcmp(s, "1.2") != 0 && strcmp(s, "1.3") != 0)
    return luaL_error(L, "bad argument #1 to 'context' (min_version must be \"1.2\" or \"1.3\")");
  SSL_CTX_set_min_proto_version(c->ctx, s && strcmp(s, "1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
  s = opt_string(L, "ciphers");
  if (SSL_CTX_set_cipher_list(c->ctx, s ? s : default_ciphers) != 1) return ctx_fail(L, "ciphers");
  lua_getfield(L, 1, "verify");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    return luaL_error(L, "bad argument #1 to 'context' (verify must be a boolean)");
  c->verify = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if ((s = opt_string(L, "ca")) != NULL)
    use_ca(L, c->ctx, s);
  else
    c->system_store = 1; /* (reading it takes ~50 ms: not for a server that never verifies) */
  cert = opt_string(L, "cert");
  key = opt_string(L, "key");
  if ((cert == NULL) != (key == NULL))
    return luaL_error(L, "bad argument #1 to 'context' (cert and key go together)");
  if (cert) {
    use_cert(L, c->ctx, cert);
    use_key(L, c->ctx, key);
  }
  if (lua_getfield(L, 1, "alpn") != LUA_TNIL) { /* ALPN's wire format: length-prefixed names */
    int list = lua_gettop(L);
    size_t total = 0, len;
    if (!lua_istable(L, list)) return luaL_error(L, "bad argument #1 to 'context' (alpn must be a list of names)");
    n = (int)lua_rawlen(L, list);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, list, i);
      if (lua_type(L, -1) != LUA_TSTRING || (len = lua_rawlen(L, -1)) == 0 || len > 255)
        return luaL_error(L, "bad argument #1 to 'context' (alpn names are strings of 1 to 255 bytes)");
      total += 1 + len;
      lua_pop(L, 1);
    }
    if (total > 0 && (c->alpn = malloc(total)) != NULL) {
      for (i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        s = lua_tolstring(L, -1, &len);
        c->alpn[c->alpn_len++] = (unsigned char)len;
        memcpy(c->alpn + c->alpn_len, s, len);
        c->alpn_len += (unsigned)len;
        lua_pop(L, 1);
      }
    }
  }
  lua_pop(L, 1);
  SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, c);
  use_servers(L, c);
  return 1;
}

/* ---------------------------------------------------------------- handshake */

static int is_ip(const char *s) {
  unsigned char buf[16];
  return uv_inet_pton(AF_INET, s, buf) == 0 || uv_inet_pton(AF_INET6, s, buf) == 0;
}

/* Pushes nil, msg, code for a failed handshake: ECERT with the verifier's
   reason, else EPROTO with OpenSSL's. */
static int hs_fail(lua_State *L, lstream *st) {
  long v = SSL_get_verify_result(TLS(st)->ssl);
  unsigned long e = ERR_peek_last_error();
  lua_pushnil(L);
  if (v != X509_V_OK && SSL_get_verify_mode(TLS(st)->ssl) != SSL_VERIFY_NONE) {
    lua_pushfstring(L, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    lua_pushliteral(L, "ECERT");
  } else if (st->rerr) {
    lua_pushfstring(L, "TLS handshake: %s", uv_strerror(st->rerr));
    lua_pushstring(L, uv_err_name(st->rerr));
  } else if (e != 0) {
    const char *r = ERR_reason_error_string(e);
    lua_pushfstring(L, "TLS handshake failed: %s", r ? r : "protocol error");
    lua_pushliteral(L, "EPROTO");
  } else {
    lua_pushliteral(L, "TLS handshake failed: the connection closed");
    lua_pushliteral(L, "EPROTO");
  }
  ERR_clear_error();
  return 3;
}

static int hs_k(lua_State *L, int status, lua_KContext ctx);

/* Drives the handshake of the stream at 1 as far as the bytes allow. */
static int hs_step(lua_State *L, loom_task *t, lstream *st) {
  loom_tls *tls = TLS(st);
  int r, e;
  if (st->closed || st->h.uv == NULL) return loom_fail_closed(L);
  ERR_clear_error();
  r = SSL_do_handshake(tls->ssl);
  if (flush_out(st) < 0 && r != 1) return hs_fail(L, st);
  if (r == 1) {
    tls->done = 1;
    if ((r = pump(st)) < 0) st->rerr = r; /* application data that came with the last flight */
    lua_settop(L, 1);
    return 1;
  }
  e = SSL_get_error(tls->ssl, r);
  if (e == SSL_ERROR_WANT_READ && !st->eof && !st->rerr) return loom_stream_wait(L, t, st, 0, hs_k);
  return hs_fail(L, st);
}

static int hs_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, hs_k);
  (void)status;
  return hs_step(L, t, lua_touserdata(L, 1));
}

/* loom.core._tls_wrap(stream, context, server, servername): runs the
   handshake over the connected stream; the stream (now TLS), or nil, msg,
   code. Blocks. */
static int l_wrap(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  tlsctx *c = luaL_checkudata(L, 2, LOOM_TLS_CTX);
  int server = lua_toboolean(L, 3), verify;
  const char *name = luaL_optstring(L, 4, NULL);
  loom_task *t = loom_checkrunning(L, S, "tls.wrap");
  loom_tls *tls;
  if (st->tp == &loom_tls_transport) return luaL_error(L, "tls.wrap: the stream is already TLS");
  if (st->closed || st->h.uv == NULL) return loom_fail_closed(L);
  verify = server ? c->verify == 1 : c->verify != 0;
  if (verify && c->system_store) {
    SSL_CTX_set_default_verify_paths(c->ctx);
    c->system_store = 0;
  }
  if (!server && verify && name == NULL)
    return luaL_error(L, "tls.wrap: a server name is needed to verify the peer (servername, or verify = false)");
  if ((tls = calloc(1, sizeof *tls)) == NULL || (tls->ssl = SSL_new(c->ctx)) == NULL) {
    free(tls);
    return luaL_error(L, "tls.wrap: out of memory");
  }
  tls->rbio = BIO_new(BIO_s_mem());
  tls->wbio = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(tls->rbio, -1); /* empty means "wait for more", not the end */
  SSL_set_bio(tls->ssl, tls->rbio, tls->wbio);
  if (server) {
    SSL_set_accept_state(tls->ssl);
    SSL_set_verify(tls->ssl, verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE, NULL);
  } else {
    SSL_set_connect_state(tls->ssl);
    SSL_set_verify(tls->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (name && is_ip(name)) {
      if (verify) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls->ssl), name);
    } else if (name) {
      SSL_set_tlsext_host_name(tls->ssl, name);
      SSL_set_hostflags(tls->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (verify) SSL_set1_host(tls->ssl, name);
    }
    if (c->alpn) SSL_set_alpn_protos(tls->ssl, c->alpn, c->alpn_len);
    if (lua_type(L, 5) == LUA_TUSERDATA) { /* a session to resume (_tls_session) */
      SSL_SESSION **sess = lua_touserdata(L, 5);
      if (*sess) SSL_set_session(tls->ssl, *sess);
    }
  }
  st->tp = &loom_tls_transport;
  st->tpdata = tls;
  if (st->rlen > st->rpos) { /* bytes read before the upgrade are the start of the TLS stream */
    BIO_write(tls->rbio, st->rbuf + st->rpos, (int)(st->rlen - st->rpos));
    st->rpos = st->rlen = 0;
  }
  lua_settop(L, 1);
  return hs_step(L, t, st);
}

/* ---------------------------------------------------------------- sessions */

/* A client session kept for resumption: a userdata holding an SSL_SESSION. */
static int sess_gc(lua_State *L) {
  SSL_SESSION **s = lua_touserdata(L, 1);
  SSL_SESSION_free(*s);
  *s = NULL;
  return 0;
}

/* loom.core._tls_session(stream): the stream's session for resuming later
   (a userdata), or nil. */
static int l_session(lua_State *L) {
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  SSL_SESSION *s, **box;
  if (st->tp != &loom_tls_transport || (s = SSL_get1_session(TLS(st)->ssl)) == NULL) return 0;
  if (!SSL_SESSION_is_resumable(s)) {
    SSL_SESSION_free(s);
    return 0;
  }
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = s;
  if (luaL_newmetatable(L, "loom.TLSSession")) {
    lua_pushcfunction(L, sess_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return 1;
}

/* ---------------------------------------------------------------- info */

static void push_name(lua_State *L, X509_NAME *n) {
  char buf[512];
  BIO *b = BIO_new(BIO_s_mem());
  int len;
  X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
  len = BIO_read(b, buf, sizeof buf);
  lua_pushlstring(L, buf, len > 0 ? (size_t)len : 0);
  BIO_free(b);
}

static void push_peer(lua_State *L, X509 *x) {
  GENERAL_NAMES *sans;
  int i, n = 0;
  struct tm tm;
  lua_createtable(L, 0, 4);
  push_name(L, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject");
  push_name(L, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer");
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
    lua_pushinteger(L, (lua_Integer)timegm(&tm));
    lua_setfield(L, -2, "not_after");
  }
  lua_newtable(L);
  sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
    if (g->type == GEN_DNS) {
      lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(g->d.dNSName), (size_t)ASN1_STRING_length(g->d.dNSName));
      lua_rawseti(L, -2, ++n);
    } else if (g->type == GEN_IPADD) {
      char ip[64];
      int len = ASN1_STRING_length(g->d.iPAddress);
      const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
      if ((len == 4 && uv_inet_ntop(AF_INET, p, ip, sizeof ip) == 0) ||
          (len == 16 && uv_inet_ntop(AF_INET6, p, ip, sizeof ip) == 0)) {
        lua_pushstring(L, ip);
        lua_rawseti(L, -2, ++n);
      }
    }
  }
  GENERAL_NAMES_free(sans);
  lua_setfield(L, -2, "names");
}

/***
What the TLS session agreed on. Never blocks.
@function Stream:tls_info
@return a table `{version, cipher, alpn, reused, peer = {subject, issuer,
not_after, names}}` (`peer` nil when the peer sent no certificate), or nil
for a stream that is not TLS
@usage print(s:tls_info().version)
*/
static int l_tls_info(lua_State *L) {
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  const unsigned char *alpn;
  unsigned alen;
  X509 *peer;
  SSL *ssl;
  if (st->tp != &loom_tls_transport || !TLS(st)->done) return 0;
  ssl = TLS(st)->ssl;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, SSL_get_version(ssl));
  lua_setfield(L, -2, "version");
  lua_pushstring(L, SSL_get_cipher_name(ssl));
  lua_setfield(L, -2, "cipher");
  SSL_get0_alpn_selected(ssl, &alpn, &alen);
  if (alen > 0) {
    lua_pushlstring(L, (const char *)alpn, alen);
    lua_setfield(L, -2, "alpn");
  }
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "reused");
  if ((peer = SSL_get1_peer_certificate(ssl)) != NULL) {
    push_peer(L, peer);
    lua_setfield(L, -2, "peer");
    X509_free(peer);
  }
  return 1;
}

/* Expects [state, module] with module._Stream set. */
void loom_open_tls(lua_State *L) {
  static const luaL_Reg funcs[] = {{"_tls_context", l_context}, {"_tls_wrap", l_wrap}, {"_tls_session", l_session},
                                   {NULL, NULL}};
  int S = lua_absindex(L, -2), mod = S + 1, i;
  luaL_newmetatable(L, LOOM_TLS_CTX);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setfield(L, mod, "_TLSContext");
  for (i = 0; funcs[i].name; i++) {
    lua_pushvalue(L, S);
    luaL_getmetatable(L, LOOM_TLS_CTX);
    lua_getfield(L, mod, "_Stream");
    lua_pushcclosure(L, funcs[i].func, 3);
    lua_setfield(L, mod, funcs[i].name);
  }
  lua_getfield(L, mod, "_Stream"); /* stream:tls_info() */
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, l_tls_info);
  lua_setfield(L, -2, "tls_info");
  lua_pop(L, 2);
}
