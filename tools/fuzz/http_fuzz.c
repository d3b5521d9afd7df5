/*
 * http_fuzz.c: a libFuzzer harness for the request parsing of src/http_parse.c
 * (tokens, limits, bodies, the Lua tables built from them). The input is a
 * byte stream a client could send: its first byte chooses where the bytes
 * are split into two reads, the rest is parsed as pipelined requests, each
 * head turned into its table and each body read whole, until the end or an
 * error. `make fuzz` builds and runs it (FUZZ_SECONDS, default 60) with
 * AddressSanitizer and UBSan; tools/fuzz/corpus holds seed inputs.
 */
#include "../../src/http_parse.c"

static lua_State *L;

/* Upvalues as the methods have them: 3 = headers metatable, 4 = keys. */
static int parse_all(lua_State *L) {
  hconn *hc = lua_touserdata(L, 1);
  lstream *st = hc->st;
  size_t full = st->rlen;
  int i, n;
  st->rlen = st->rpos + (full - st->rpos) * (size_t)lua_tointeger(L, 2) / 256;
  st->eof = 0;
  loom_http_begin_next(hc);
  if (feed(hc) == 0) {
    st->rlen = full;
    st->eof = 1; /* so that the parser never waits */
    for (i = 0; i < 64; i++) {
      lua_settop(L, 1);
      if (i > 0) loom_http_begin_next(hc);
      n = loom_http_next_step(L, hc, NULL, NULL);
      if (lua_isnil(L, -n)) break;
      lua_settop(L, 1);
      n = read_step(L, hc, NULL, 1);
      if (lua_isnil(L, -n)) break;
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lstream st;
  hconn *hc;
  int i;
  if (size < 1) return 0;
  if (L == NULL) L = luaL_newstate();
  memset(&st, 0, sizeof st);
  st.tp = &loom_plain_transport;
  st.rbuf = malloc(size);
  memcpy(st.rbuf, data + 1, size - 1);
  st.rlen = size - 1;
  lua_settop(L, 0);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_newtable(L);
  lua_createtable(L, K_LAST, 0);
  for (i = K_METHOD; i <= K_LAST; i++) {
    lua_pushstring(L, loom_http_keys[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushcclosure(L, parse_all, 4);
  hc = lua_newuserdatauv(L, sizeof *hc, HC_NUV);
  memset(hc, 0, sizeof *hc);
  http_parser_init(&hc->p, HTTP_REQUEST);
  hc->p.data = hc;
  hc->st = &st;
  hc->kind = HTTP_REQUEST;
  hc->max_head = 1024;
  hc->max_body = 4096;
  lua_newtable(L);
  lua_setiuservalue(L, -2, HC_MESSAGE_MT);
  lua_pushinteger(L, data[0]);
  lua_call(L, 2, 0);
  free(hc->hbuf);
  free(hc->bbuf);
  free(hc->wbuf);
  free(st.rbuf);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
