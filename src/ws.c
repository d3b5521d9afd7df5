/*
 * ws.c: WebSocket framing (RFC 6455) over a loom.Stream, the hot part of
 * loom.websocket (lua/loom/websocket.lua does the handshakes and the API).
 * Owns loom.WSState: the parse state of the frame being read (a frame is
 * consumed from the stream's buffer as its bytes arrive, so a large frame
 * never needs to fit the buffer), the message being reassembled (bounded by
 * max_message before a byte of it is stored), the incremental UTF-8 check of
 * text messages, the close handshake's state and permessage-deflate
 * (RFC 7692: a zlib stream each way, kept between messages unless "no
 * context takeover" was agreed). Control frames are answered here: a ping
 * gets its pong, a close its close. Unmasking and masking go eight bytes at
 * a time.
 */

/***
@module loom.websocket
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <zlib.h>
#include "loom.h"
#include "stream.h"

#define LOOM_WS "loom.WSState"

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct wsstate {
  int client;        /* we mask what we send; the peer must not */
  size_t max_message;
  /* the frame being read */
  int in_frame, fin, opcode, masked;
  uint64_t left;     /* payload bytes still to come */
  unsigned char key[4];
  unsigned keypos;
  /* the message being reassembled (data frames), or a control frame */
  int msg_op;        /* OP_TEXT or OP_BINARY while a message is open, else 0 */
  char *msg;
  size_t mlen, mcap;
  char ctrl[125];
  size_t clen;
  /* incremental UTF-8 check of a text message */
  int u_need;
  unsigned char u_lo, u_hi;
  /* closing */
  int close_sent, close_recv;
  int code;          /* the close code received (or sent on an error) */
  char reason[124];
  size_t reason_len;
  unsigned pongs;    /* pongs received: ping waits for the count to move */
  /* permessage-deflate, when agreed */
  int deflate;       /* on */
  int compressed;    /* the message being read is */
  int reset_out, reset_in; /* no context takeover: each message starts afresh */
  int out_bits;      /* the window we compress with (the peer may have asked for less) */
  z_stream zin, zout;
  int zin_ok, zout_ok;
  char *plain;       /* the inflated message */
  size_t pcap;
} wsstate;

/* ---------------------------------------------------------------- utf-8 */

/* Checks n more bytes of a text message; 0, or -1 for invalid UTF-8. */
static int utf8_feed(wsstate *w, const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (w->u_need == 0) {
      if (c < 0x80) { /* ASCII runs, eight at a time */
        while (i + 8 <= n) {
          uint64_t v;
          memcpy(&v, s + i, 8);
          if (v & 0x8080808080808080ULL) break;
          i += 8;
        }
        while (i < n && s[i] < 0x80) i++;
        continue;
      }
      w->u_lo = 0x80;
      w->u_hi = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) w->u_need = 1;
      else if (c == 0xE0) w->u_need = 2, w->u_lo = 0xA0;
      else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) w->u_need = 2;
      else if (c == 0xED) w->u_need = 2, w->u_hi = 0x9F; /* no surrogates */
      else if (c == 0xF0) w->u_need = 3, w->u_lo = 0x90;
      else if (c >= 0xF1 && c <= 0xF3) w->u_need = 3;
      else if (c == 0xF4) w->u_need = 3, w->u_hi = 0x8F; /* nothing past U+10FFFF */
      else return -1;
    } else {
      if (c < w->u_lo || c > w->u_hi) return -1;
      w->u_lo = 0x80;
      w->u_hi = 0xBF;
      w->u_need--;
    }
    i++;
  }
  return 0;
}

/* ---------------------------------------------------------------- masking */

/* XORs p[0, n) with the key, starting at key position *pos. */
static void unmask(unsigned char *p, size_t n, const unsigned char key[4], unsigned *pos) {
  size_t i = 0;
  unsigned k = *pos & 3;
  while (i < n && (k & 3) != 0) p[i++] ^= key[k++ & 3];
  if (n - i >= 8) {
    uint64_t m;
    unsigned char kk[8];
    int j;
    for (j = 0; j < 8; j++) kk[j] = key[j & 3];
    memcpy(&m, kk, 8);
    for (; i + 8 <= n; i += 8) {
      uint64_t v;
      memcpy(&v, p + i, 8);
      v ^= m;
      memcpy(p + i, &v, 8);
    }
  }
  while (i < n) p[i++] ^= key[k++ & 3];
  *pos = (unsigned)(k & 3);
}

/* ---------------------------------------------------------------- deflate */

/* Inflates the compressed message in w->msg into w->plain (its length in
   *plen): 0, 1009 past max_message, or -1 for bad data. */
static int inflate_message(wsstate *w, size_t *plen) {
  static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
  size_t out = 0;
  int pass, r = Z_OK;
  if (!w->zin_ok) {
    if (inflateInit2(&w->zin, -15) != Z_OK) return -1;
    w->zin_ok = 1;
  }
  for (pass = 0; pass < 2; pass++) { /* the message, then the tail the sender stripped */
    w->zin.next_in = pass == 0 ? (unsigned char *)w->msg : (unsigned char *)tail;
    w->zin.avail_in = pass == 0 ? (uInt)w->mlen : 4;
    if (pass == 0 && w->mlen == 0) continue;
    do {
      if (out == w->pcap) {
        size_t cap = w->pcap ? w->pcap * 2 : 16384;
        char *nb;
        if (out >= w->max_message) return 1009;
        if (cap > w->max_message + 1) cap = w->max_message + 1;
        if ((nb = realloc(w->plain, cap)) == NULL) return -1;
        w->plain = nb;
        w->pcap = cap;
      }
      w->zin.next_out = (unsigned char *)w->plain + out;
      w->zin.avail_out = (uInt)(w->pcap - out);
      r = inflate(&w->zin, Z_SYNC_FLUSH);
      out = w->pcap - w->zin.avail_out;
      if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) return -1;
      if (r == Z_STREAM_END) inflateReset(&w->zin); /* a final block: what follows starts afresh */
      if (out > w->max_message) return 1009;
    } while (w->zin.avail_in > 0 || w->zin.avail_out == 0);
  }
  if (w->reset_in) inflateReset(&w->zin);
  *plen = out;
  return 0;
}

/* Deflates len bytes into a new buffer (its length in *olen), without the
   trailing 00 00 ff ff; NULL when out of memory. */
static unsigned char *deflate_message(wsstate *w, const char *data, size_t len, size_t *olen) {
  size_t cap = deflateBound(&w->zout, (uLong)len) + 16, out;
  unsigned char *buf;
  if (!w->zout_ok) {
    if (deflateInit2(&w->zout, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -w->out_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return NULL;
    w->zout_ok = 1;
    cap = deflateBound(&w->zout, (uLong)len) + 16;
  }
  if ((buf = malloc(cap)) == NULL) return NULL;
  w->zout.next_in = (unsigned char *)data;
  w->zout.avail_in = (uInt)len;
  w->zout.next_out = buf;
  w->zout.avail_out = (uInt)cap;
  deflate(&w->zout, Z_SYNC_FLUSH);
  out = cap - w->zout.avail_out;
  if (out >= 4 && memcmp(buf + out - 4, "\0\0\xff\xff", 4) == 0) out -= 4;
  if (w->reset_out) deflateReset(&w->zout);
  *olen = out;
  return buf;
}

/* ---------------------------------------------------------------- sending */

/* Sends one frame (header and payload in one write; masked when we are
   the client). 0 or a libuv error. */
static int send_frame(lstream *st, wsstate *w, int opcode, const char *data, size_t len) {
  unsigned char hdr[14], *z = NULL;
  size_t h = 2;
  uv_buf_t b[2];
  int rc;
  hdr[0] = (unsigned char)(0x80 | opcode);
  if (w->deflate && !(opcode & 8)) { /* a data message goes compressed */
    size_t zlen;
    if ((z = deflate_message(w, data, len, &zlen)) == NULL) return UV_ENOMEM;
    data = (const char *)z;
    len = zlen;
    hdr[0] |= 0x40;
  }
  if (len < 126) {
    hdr[1] = (unsigned char)len;
  } else if (len < 65536) {
    hdr[1] = 126;
    hdr[2] = (unsigned char)(len >> 8);
    hdr[3] = (unsigned char)len;
    h = 4;
  } else {
    int i;
    hdr[1] = 127;
    for (i = 0; i < 8; i++) hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    h = 10;
  }
  if (!w->client) {
    b[0] = uv_buf_init((char *)hdr, (unsigned)h);
    b[1] = uv_buf_init((char *)data, (unsigned)len);
    rc = loom_stream_out(st, b, len ? 2 : 1);
  } else {
    unsigned char *frame = malloc(h + 4 + len);
    unsigned pos = 0;
    if (frame == NULL) {
      free(z);
      return UV_ENOMEM;
    }
    hdr[1] |= 0x80;
    memcpy(frame, hdr, h);
    if (RAND_bytes(frame + h, 4) != 1) {
      free(frame);
      free(z);
      return UV_EIO;
    }
    memcpy(frame + h + 4, data, len);
    unmask(frame + h + 4, len, frame + h, &pos);
    b[0] = uv_buf_init((char *)frame, (unsigned)(h + 4 + len));
    rc = loom_stream_out(st, b, 1); /* copies what it cannot send now */
    free(frame);
  }
  free(z);
  return rc;
}

static int send_close(lstream *st, wsstate *w, int code, const char *reason, size_t rlen) {
  char body[125];
  if (w->close_sent) return 0;
  w->close_sent = 1;
  if (code == 0) return send_frame(st, w, OP_CLOSE, "", 0);
  if (rlen > 123) rlen = 123;
  body[0] = (char)(code >> 8);
  body[1] = (char)code;
  memcpy(body + 2, reason, rlen);
  return send_frame(st, w, OP_CLOSE, body, 2 + rlen);
}

/* ---------------------------------------------------------------- receiving */

static int valid_close_code(int c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014 && c != 1004) || (c >= 3000 && c <= 4999);
}

/* Ends the websocket on our side for a protocol error: a close frame with
   code, then the stream closes (gracefully: the frame goes out first). */
static void fail_close(lstream *st, wsstate *w, int code, const char *why) {
  size_t n = strlen(why);
  send_close(st, w, code, why, n);
  w->close_recv = 1;
  w->code = code;
  w->reason_len = n < sizeof w->reason ? n : sizeof w->reason;
  memcpy(w->reason, why, w->reason_len);
  loom_stream_shut(st);
}

static int push_closed(lua_State *L, wsstate *w) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  lua_pushinteger(L, w->code ? w->code : 1006);
  lua_pushlstring(L, w->reason, w->reason_len);
  return 4;
}

static int grow_msg(wsstate *w, size_t need) {
  size_t cap = w->mcap ? w->mcap : 4096;
  char *nb;
  if (need <= w->mcap) return 0;
  while (cap < need) cap *= 2;
  if ((nb = realloc(w->msg, cap)) == NULL) return -1;
  w->msg = nb;
  w->mcap = cap;
  return 0;
}

/* A control frame is complete in w->ctrl: answers it. Returns 1 when the
   websocket closed (the receive call returns), else 0. */
static int on_control(lua_State *L, lstream *st, wsstate *w) {
  (void)L;
  switch (w->opcode) {
    case OP_PING:
      send_frame(st, w, OP_PONG, w->ctrl, w->clen);
      return 0;
    case OP_PONG:
      w->pongs++;
      return 0;
    default: { /* OP_CLOSE */
      int code = 1005;
      if (w->clen == 1) {
        fail_close(st, w, 1002, "a close frame with a one-byte body");
        return 1;
      }
      if (w->clen >= 2) {
        wsstate probe;
        code = ((unsigned char)w->ctrl[0] << 8) | (unsigned char)w->ctrl[1];
        if (!valid_close_code(code)) {
          fail_close(st, w, 1002, "an invalid close code");
          return 1;
        }
        memset(&probe, 0, sizeof probe);
        if (utf8_feed(&probe, (unsigned char *)w->ctrl + 2, w->clen - 2) < 0 || probe.u_need) {
          fail_close(st, w, 1007, "a close reason that is not UTF-8");
          return 1;
        }
      }
      w->close_recv = 1;
      if (!w->close_sent) { /* the peer started the handshake: its code and reason stand */
        w->code = code;
        w->reason_len = w->clen >= 2 ? w->clen - 2 : 0;
        memcpy(w->reason, w->ctrl + 2, w->reason_len);
      }
      /* the reply echoes the code (none for none), then the connection ends */
      send_close(st, w, code == 1005 ? 0 : code, "", 0);
      loom_stream_shut(st);
      return 1;
    }
  }
}

static int recv_k(lua_State *L, int status, lua_KContext ctx);

/* Pushes the complete message (len bytes of *buf) and its kind, and gets
   ready for the next one; a big message's buffer is not kept. Returns 2. */
static int deliver(lua_State *L, wsstate *w, char **buf, size_t *cap, size_t len) {
  lua_pushlstring(L, *buf ? *buf : "", len);
  lua_pushstring(L, w->msg_op == OP_TEXT ? "text" : "binary");
  w->msg_op = 0;
  w->mlen = 0;
  if (*cap > 1024 * 1024) {
    free(*buf);
    *buf = NULL;
    *cap = 0;
  }
  return 2;
}

/* Parses frames from the stream's buffer until a message is complete (its
   data and kind pushed), the websocket closes, or more bytes are needed
   (then it waits). Stack: [stream, state, pong]. */
static int recv_step(lua_State *L, loom_task *t, lstream *st, wsstate *w) {
  for (;;) {
    size_t have;
    const unsigned char *p = (const unsigned char *)loom_stream_peek(st, &have);
    if (w->close_recv) return push_closed(L, w);
    if (!w->in_frame) {
      size_t need = 2, hlen;
      uint64_t len;
      int b0, b1, op;
      if (have < 2) goto more;
      b0 = p[0];
      b1 = p[1];
      len = b1 & 0x7f;
      if (len == 126) need = 4;
      else if (len == 127) need = 10;
      if (b1 & 0x80) need += 4;
      if (have < need) goto more;
      op = b0 & 0x0f;
      /* RSV1 marks a compressed message, on its first frame only */
      if ((b0 & 0x30) || ((b0 & 0x40) && (!w->deflate || op == OP_CONT || (op & 8)))) {
        fail_close(st, w, 1002, "reserved bits set (no extension was agreed)");
        continue;
      }
      if (((b1 & 0x80) != 0) == w->client) {
        fail_close(st, w, 1002, w->client ? "a masked frame from the server" : "an unmasked frame from the client");
        continue;
      }
      hlen = 2;
      if (len == 126) {
        len = ((uint64_t)p[2] << 8) | p[3];
        hlen = 4;
      } else if (len == 127) {
        int i;
        len = 0;
        for (i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
        hlen = 10;
        if (len >> 63) {
          fail_close(st, w, 1002, "a frame length with its top bit set");
          continue;
        }
      }
      if (op & 8) {
        if (op != OP_CLOSE && op != OP_PING && op != OP_PONG) {
          fail_close(st, w, 1002, "a reserved control opcode");
          continue;
        }
        if (!(b0 & 0x80) || len > 125) {
          fail_close(st, w, 1002, "a fragmented or oversized control frame");
          continue;
        }
        w->clen = 0;
      } else {
        if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY) {
          fail_close(st, w, 1002, "a reserved data opcode");
          continue;
        }
        if ((op == OP_CONT) != (w->msg_op != 0)) {
          fail_close(st, w, 1002, op == OP_CONT ? "a continuation with no message open" :
                                                  "a new message inside a fragmented one");
          continue;
        }
        if (len > w->max_message - w->mlen) { /* refused before a byte of it is stored */
          fail_close(st, w, 1009, "message too big");
          continue;
        }
        if (op != OP_CONT) {
          w->msg_op = op;
          w->mlen = 0;
          w->u_need = 0;
          w->compressed = (b0 & 0x40) != 0;
        }
      }
      w->in_frame = 1;
      w->fin = (b0 & 0x80) != 0;
      w->opcode = op;
      w->masked = (b1 & 0x80) != 0;
      w->left = len;
      w->keypos = 0;
      if (w->masked) memcpy(w->key, p + hlen, 4);
      loom_stream_consume(st, hlen + (w->masked ? 4 : 0));
      continue;
    }
    /* payload: what has arrived of it is taken now */
    {
      size_t n = have < w->left ? have : (size_t)w->left;
      unsigned char *dst = NULL;
      if (n > 0 && (w->opcode & 8)) {
        dst = (unsigned char *)w->ctrl + w->clen;
        w->clen += n;
      } else if (n > 0) {
        if (grow_msg(w, w->mlen + n) < 0) {
          fail_close(st, w, 1011, "out of memory");
          continue;
        }
        dst = (unsigned char *)w->msg + w->mlen;
        w->mlen += n;
      }
      if (n > 0) {
        memcpy(dst, p, n);
        if (w->masked) unmask(dst, n, w->key, &w->keypos);
        loom_stream_consume(st, n);
        w->left -= n;
        if (!(w->opcode & 8) && w->msg_op == OP_TEXT && !w->compressed && utf8_feed(w, dst, n) < 0) {
          fail_close(st, w, 1007, "invalid UTF-8 in a text message");
          continue;
        }
      }
      if (w->left > 0) goto more;
      w->in_frame = 0;
      if (w->opcode & 8) {
        if (on_control(L, st, w)) return push_closed(L, w);
        if (w->opcode == OP_PONG && lua_toboolean(L, 3)) { /* a ping is waiting for it */
          lua_pushnil(L);
          lua_pushliteral(L, "pong");
          return 2;
        }
        continue;
      }
      if (!w->fin) continue;
      if (w->compressed) {
        size_t plen;
        int r = inflate_message(w, &plen);
        if (r == 1009) {
          fail_close(st, w, 1009, "message too big");
          continue;
        }
        if (r != 0) {
          fail_close(st, w, 1007, "a compressed message that does not inflate");
          continue;
        }
        if (w->msg_op == OP_TEXT && (utf8_feed(w, (unsigned char *)w->plain, plen) < 0 || w->u_need)) {
          fail_close(st, w, 1007, "invalid UTF-8 in a text message");
          continue;
        }
        w->compressed = 0;
        return deliver(L, w, &w->plain, &w->pcap, plen);
      }
      if (w->msg_op == OP_TEXT && w->u_need) {
        fail_close(st, w, 1007, "a text message ending inside a UTF-8 sequence");
        continue;
      }
      return deliver(L, w, &w->msg, &w->mcap, w->mlen);
    }
  more:
    if (st->closed) {
      if (!w->code) w->code = w->close_sent ? 1000 : 1006;
      w->close_recv = 1;
      continue;
    }
    if (loom_stream_end(st)) { /* the peer vanished without a close */
      w->code = 1006;
      w->close_recv = 1;
      loom_stream_shut(st);
      continue;
    }
    if (t == NULL) return 0;
    return loom_stream_wait(L, t, st, 0, recv_k);
  }
}

static int recv_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, recv_k);
  (void)status;
  return recv_step(L, t, lua_touserdata(L, 1), lua_touserdata(L, 2));
}

/* ---------------------------------------------------------------- Lua */

#define STATE_MT lua_upvalueindex(2)

/* loom.core._ws_state(client, max_message [, deflate, reset_out, reset_in,
   out_bits]): a new parse state; deflate when permessage-deflate was
   agreed, with "no context takeover" for what we send (reset_out) and what
   we get, and our compression window (9-15 bits, default 15). */
static int l_state(lua_State *L) {
  int client = lua_toboolean(L, 1), deflate = lua_toboolean(L, 3);
  int reset_out = lua_toboolean(L, 4), reset_in = lua_toboolean(L, 5);
  int bits = (int)luaL_optinteger(L, 6, 15);
  lua_Integer max = luaL_checkinteger(L, 2);
  wsstate *w;
  luaL_argcheck(L, bits >= 9 && bits <= 15, 6, "window bits must be 9-15");
  luaL_argcheck(L, max > 0, 2, "max_message must be positive");
  w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->client = client;
  w->max_message = (size_t)max;
  w->deflate = deflate;
  w->reset_out = reset_out;
  w->reset_in = reset_in;
  w->out_bits = bits;
  lua_pushvalue(L, STATE_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int state_gc(lua_State *L) {
  wsstate *w = lua_touserdata(L, 1);
  free(w->msg);
  w->msg = NULL;
  free(w->plain);
  w->plain = NULL;
  if (w->zin_ok) inflateEnd(&w->zin);
  if (w->zout_ok) deflateEnd(&w->zout);
  w->zin_ok = w->zout_ok = 0;
  return 0;
}

/* loom.core._ws_recv(stream, state [, pong]): data, "text"|"binary", or
   nil, "closed", code, reason; with pong, also nil, "pong" when one
   arrives. Blocks. */
static int l_recv(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  wsstate *w = loom_checkudata(L, 2, STATE_MT);
  loom_task *t = loom_checkrunning(L, S, "receive");
  lua_settop(L, 3);
  return recv_step(L, t, st, w);
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, send_k);
  int n;
  (void)status;
  if ((n = loom_stream_drained(L, t, lua_touserdata(L, 1))) != 0) return n;
  lua_pushboolean(L, 1);
  return 1;
}

/* loom.core._ws_send(stream, state, data, opcode): true, or nil, msg, code;
   waits while the stream's backlog is above its high-water mark. Blocks. */
static int l_send(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  wsstate *w = loom_checkudata(L, 2, STATE_MT);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  int op = (int)luaL_checkinteger(L, 4), rc;
  loom_task *t = loom_checkrunning(L, S, "send");
  if (w->close_sent || w->close_recv || st->closed) return loom_fail_closed(L);
  if ((rc = send_frame(st, w, op, data, len)) < 0) return loom_fail(L, rc, NULL);
  lua_settop(L, 1);
  if (loom_stream_full(st)) return loom_stream_drain(L, t, st, send_k);
  lua_pushboolean(L, 1);
  return 1;
}

/* loom.core._ws_close_frame(stream, state, code, reason): sends the close
   frame once; true, or nil, msg, code. Never blocks. */
static int l_close_frame(lua_State *L) {
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  wsstate *w = loom_checkudata(L, 2, STATE_MT);
  lua_Integer code = luaL_optinteger(L, 3, 1000);
  size_t rlen = 0;
  const char *reason = luaL_optlstring(L, 4, "", &rlen);
  int rc;
  luaL_argcheck(L, code == 0 || valid_close_code((int)code), 3, "not a valid close code");
  luaL_argcheck(L, rlen <= 123, 4, "a close reason is at most 123 bytes");
  if (w->close_sent || st->closed) return loom_fail_closed(L);
  if (!w->code) w->code = (int)code;
  if (!w->reason_len) {
    w->reason_len = rlen;
    memcpy(w->reason, reason, rlen);
  }
  if ((rc = send_close(st, w, (int)code, reason, rlen)) < 0) return loom_fail(L, rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* loom.core._ws_info(state): close_sent, close_recv, pongs received. */
static int l_info(lua_State *L) {
  wsstate *w = loom_checkudata(L, 1, STATE_MT);
  lua_pushboolean(L, w->close_sent);
  lua_pushboolean(L, w->close_recv);
  lua_pushinteger(L, (lua_Integer)w->pongs);
  return 3;
}

/* loom.core._ws_accept(key): base64(SHA-1(key .. GUID)), the handshake's
   Sec-WebSocket-Accept; with no key, a fresh random Sec-WebSocket-Key. */
static int l_accept(lua_State *L) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char md[EVP_MAX_MD_SIZE], out[64], raw[16];
  unsigned mdlen = 0;
  size_t klen;
  const char *key = luaL_optlstring(L, 1, NULL, &klen);
  int n;
  if (key == NULL) {
    if (RAND_bytes(raw, sizeof raw) != 1) return luaL_error(L, "websocket: no randomness");
    n = EVP_EncodeBlock(out, raw, sizeof raw);
  } else {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha1(), NULL);
    EVP_DigestUpdate(c, key, klen);
    EVP_DigestUpdate(c, guid, sizeof guid - 1);
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    n = EVP_EncodeBlock(out, md, (int)mdlen);
  }
  lua_pushlstring(L, (const char *)out, (size_t)n);
  return 1;
}

/* Expects [state, module]. */
void loom_open_ws(lua_State *L) {
  static const luaL_Reg funcs[] = {{"_ws_state", l_state},           {"_ws_recv", l_recv}, {"_ws_send", l_send},
                                   {"_ws_close_frame", l_close_frame}, {"_ws_info", l_info}, {"_ws_accept", l_accept},
                                   {NULL, NULL}};
  int S = lua_absindex(L, -2), i;
  luaL_newmetatable(L, LOOM_WS);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  for (i = 0; funcs[i].name; i++) {
    lua_pushvalue(L, S);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, funcs[i].func, 2);
    lua_setfield(L, S + 1, funcs[i].name);
  }
  lua_pop(L, 1);
}
