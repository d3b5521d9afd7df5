/*
 * inflate.c: HTTP content decoding for the client (Content-Encoding gzip
 * and deflate, on zlib): a whole body decoded at once, never past a size
 * limit, so a small compressed body cannot become an unbounded one.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "loom.h"

/* Inflates in with the given window bits into a Lua string of at most max
   bytes. 1 (the string pushed), 0 (not this format), -1 (over max: nothing
   pushed). */
static int inflate_to(lua_State *L, const char *in, size_t n, int wbits, size_t max) {
  z_stream z;
  luaL_Buffer b;
  int rc;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, wbits) != Z_OK) return luaL_error(L, "inflate: out of memory");
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  luaL_buffinit(L, &b);
  do {
    char *out = luaL_prepbuffsize(&b, 16384);
    z.next_out = (Bytef *)out;
    z.avail_out = 16384;
    rc = inflate(&z, Z_NO_FLUSH);
    luaL_addsize(&b, 16384 - z.avail_out);
    if (z.total_out > max) {
      inflateEnd(&z);
      luaL_pushresult(&b);
      lua_pop(L, 1);
      return -1;
    }
    /* gzip allows several members one after another */
    if (rc == Z_STREAM_END && z.avail_in > 0 && (wbits & 16)) rc = inflateReset(&z) == Z_OK ? Z_OK : Z_DATA_ERROR;
  } while (rc == Z_OK || (rc == Z_BUF_ERROR && z.avail_out == 0));
  inflateEnd(&z);
  luaL_pushresult(&b);
  if (rc != Z_STREAM_END) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* loom.core._inflate(data, encoding, max): the body decoded ("gzip", or
   "deflate": a zlib stream, or the raw deflate some servers send), or nil,
   msg, code ("EBODY" over max bytes, "EPROTO" for a corrupt body). */
static int l_inflate(lua_State *L) {
  size_t n;
  const char *in = luaL_checklstring(L, 1, &n);
  const char *enc = luaL_checkstring(L, 2);
  lua_Integer max = luaL_checkinteger(L, 3);
  int r;
  if (strcmp(enc, "gzip") == 0 || strcmp(enc, "x-gzip") == 0) {
    r = inflate_to(L, in, n, 16 + MAX_WBITS, (size_t)max);
  } else if (strcmp(enc, "deflate") == 0) {
    r = inflate_to(L, in, n, MAX_WBITS, (size_t)max);
    if (r == 0) r = inflate_to(L, in, n, -MAX_WBITS, (size_t)max);
  } else {
    return luaL_argerror(L, 2, "gzip or deflate expected");
  }
  if (r == 1) return 1;
  lua_pushnil(L);
  if (r < 0) {
    lua_pushliteral(L, "body too large");
    lua_pushliteral(L, "EBODY");
  } else {
    lua_pushfstring(L, "corrupt %s body", enc);
    lua_pushliteral(L, "EPROTO");
  }
  return 3;
}

/* Expects [state, module]. */
void loom_open_inflate(lua_State *L) {
  lua_pushcfunction(L, l_inflate);
  lua_setfield(L, -2, "_inflate");
}
