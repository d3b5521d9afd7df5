/*
 * ws_fuzz.c: a libFuzzer harness for the WebSocket frame parser of
 * src/ws.c. The input is what a peer could send after the handshake: its
 * first byte chooses the role (client or server side) and where the bytes
 * are split in two arrivals; the rest is parsed message by message until
 * the websocket closes or the bytes run out. A malformed frame must end in
 * a close with a code, never a crash, a hang or a read out of bounds.
 */
#include "../../src/ws.c"

static lua_State *L;

static void parse(lstream *st, wsstate *w) {
  int i, n;
  for (i = 0; i < 10000; i++) {
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushnil(L);
    n = recv_step(L, NULL, st, w);
    if (n == 0 || w->close_recv) return; /* more bytes needed, or closed */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lstream st;
  wsstate w;
  size_t cut;
  if (size < 1) return 0;
  if (L == NULL) L = luaL_newstate();
  memset(&st, 0, sizeof st);
  memset(&w, 0, sizeof w);
  loom_list_init(&st.readers);
  loom_list_init(&st.writers);
  st.linger.idx = -1;
  w.client = data[0] & 1;
  w.max_message = 1 << 16;
  cut = (size - 1) * (data[0] >> 1) / 128;
  st.rbuf = malloc(size);
  st.rcap = size;
  memcpy(st.rbuf, data + 1, cut); /* the first arrival */
  st.rlen = cut;
  parse(&st, &w);
  if (!w.close_recv) { /* the second */
    memmove(st.rbuf, st.rbuf + st.rpos, st.rlen - st.rpos);
    st.rlen -= st.rpos;
    st.rpos = 0;
    memcpy(st.rbuf + st.rlen, data + 1 + cut, size - 1 - cut);
    st.rlen += size - 1 - cut;
    parse(&st, &w);
  }
  free(st.rbuf);
  free(w.msg);
  lua_settop(L, 0);
  return 0;
}
