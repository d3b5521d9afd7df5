/*
 * fs.c: loom.fs in C — files and paths through libuv's thread pool.
 * Owns the fs request (one per operation; it owns its buffers and is freed by
 * whoever sees it last: the waiting task's continuation, or the callback when
 * the task gave up), the loom.File object (io-like reads served from a C
 * buffer, one operation at a time, others queued FIFO), and the path
 * operations. The Lua layer (lua/loom/fs.lua) adds the whole-file helpers.
 */

/***
@module loom.fs
*/
#include <ctype.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "loom.h"

#define LOOM_FILE "loom.File"
#define FIRST_BUF (64 * 1024)      /* the first refill of a file: small files stay small */
#define FILE_BUF (2 * 1024 * 1024) /* a read-ahead block: the pool reads this much while the loop
                                      serves the block before it */
#define AHEAD_ROOM (64 * 1024) /* room before read-ahead data for what is left of the buffer */
#define NUMERAL_MAX 200

enum {
  OP_OPEN, OP_CLOSE, OP_READ, OP_WRITE, OP_FSYNC, OP_FTRUNC, OP_FSTAT, OP_STAT, OP_LSTAT,
  OP_MKDIR, OP_RMDIR, OP_UNLINK, OP_RENAME, OP_COPY, OP_SYMLINK, OP_READLINK, OP_REALPATH,
  OP_CHMOD, OP_MKDTEMP, OP_SCANDIR
};

typedef struct lfile lfile;

typedef struct fsreq {
  uv_fs_t req;
  loom_task *task; /* the waiting task; NULL once it gave up (cancelled) */
  lfile *file;     /* the file a file operation works on, anchored by fileref */
  int fileref;
  int op;
  char *buf;  /* read: the buffer the file adopts; write: a copy of the data */
  size_t cap; /* its size */
  size_t keep; /* read: buffered bytes copied to the front of buf */
  int64_t off; /* read: file offset of buf[0] (read-ahead: of buf[AHEAD_ROOM]); write: offset
                  written at (-1: append) */
  int ahead;   /* a read-ahead: owned by the file, not by a task */
  int done;    /* read-ahead: completed */
} fsreq;

struct lfile {
  uv_file fd;       /* -1 once closed */
  int closed;       /* close() was called (it may wait for the request in flight) */
  int readable, writable, append;
  int busy;         /* a request is in flight */
  int eof;          /* the last refill read nothing */
  int pos_at_end;   /* after an append: the position is the end of the file */
  char *buf, *spare;
  size_t cap, spare_cap, len, rpos; /* buffered bytes are buf[rpos, len) */
  int64_t bufoff;   /* file offset of buf[0]; the position is bufoff + rpos */
  int fmt_i, nfmt;  /* read: the format being served, how many there are */
  size_t want;      /* read: bytes wanted in the buffer from rpos */
  fsreq *ahead;     /* the read of the next block, started while this one is served */
  loom_link waiters;
};

#define ahead_pending(f) ((f)->ahead != NULL && !(f)->ahead->done)

/* Upvalues of every function here: 1 = module state, 2 = the file metatable. */
#define MT lua_upvalueindex(2)

static fsreq *req_new(int op) {
  fsreq *r = calloc(1, sizeof *r);
  if (r) {
    r->op = op;
    r->fileref = LUA_NOREF;
  }
  return r;
}

static void req_free(fsreq *r) {
  uv_fs_req_cleanup(&r->req);
  free(r->buf);
  free(r);
}

static void close_fd(uv_loop_t *loop, uv_file fd) {
  uv_fs_t c;
  uv_fs_close(loop, &c, fd, NULL); /* synchronous: no callback */
  uv_fs_req_cleanup(&c);
}

static void drop_buffer(lfile *f) {
  f->bufoff += (int64_t)f->rpos;
  f->len = f->rpos = 0;
  f->eof = 0;
}

/* The file's request is over: a deferred close happens now, and the next task
   waiting for the file may go. */
static void file_release(loom_loop *lp, lfile *f) {
  f->busy = 0;
  if (f->closed && f->fd >= 0 && !ahead_pending(f)) {
    close_fd(NULL, f->fd);
    f->fd = -1;
  }
  if (!loom_list_empty(&f->waiters)) loom_wake(lp, loom_container(f->waiters.next, loom_task, wait), 0);
}

static void end_file_req(lua_State *L, loom_loop *lp, fsreq *r) {
  if (r->file) {
    file_release(lp, r->file);
    luaL_unref(L, LUA_REGISTRYINDEX, r->fileref);
  }
  req_free(r);
}

/* Finishes a request whose task gave up: what the kernel did still counts
   (a write moved the position; an open made a descriptor to close). */
static void orphan(loom_loop *lp, fsreq *r) {
  if (r->op == OP_WRITE && r->req.result > 0 && r->file) {
    if (r->off < 0)
      r->file->pos_at_end = 1;
    else
      r->file->bufoff = r->off + r->req.result;
  }
  if (r->op == OP_OPEN && r->req.result >= 0) close_fd(NULL, (uv_file)r->req.result);
  end_file_req(lp->L, lp, r);
}

/* A read-ahead landed with no task waiting for it: it stays with the file
   until a read adopts it; the file needs no anchor any more; an operation
   that waited for it may go. */
static void ahead_landed(loom_loop *lp, fsreq *r) {
  lfile *f = r->file;
  r->done = 1;
  luaL_unref(lp->L, LUA_REGISTRYINDEX, r->fileref);
  r->fileref = LUA_NOREF;
  if (f->closed) {
    f->ahead = NULL;
    req_free(r);
  }
  if (!f->busy) file_release(lp, f);
}

static void on_fs(uv_fs_t *req) {
  fsreq *r = loom_container(req, fsreq, req);
  loom_loop *lp = (loom_loop *)req->loop;
  if (r->task)
    loom_wake(lp, r->task, 0);
  else if (r->ahead)
    ahead_landed(lp, r);
  else
    orphan(lp, r);
}

static void fs_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  fsreq *r = t->waitobj;
  (void)L;
  if (t->state == LOOM_WAITING)
    r->task = NULL; /* still in the pool: on_fs finishes it */
  else
    orphan(lp, r); /* done, and nobody will read the result */
}

/* Suspends the task until the request completes; k continues it. */
static int wait_req(lua_State *L, loom_task *t, fsreq *r, lua_KFunction k) {
  loom_suspend(L, t);
  r->task = t;
  t->undo = fs_undo;
  t->waitobj = r;
  return loom_yield(L, t, k);
}

/* The request of the task that was just woken (its continuation runs). */
static fsreq *woken_req(lua_State *L, lua_KContext ctx, lua_KFunction k) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, k);
  return t->waitobj;
}

static const char *type_name(uint64_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "link";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: return "unknown";
  }
}

static void set_time(lua_State *L, const char *k, uv_timespec_t ts) {
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void push_stat(lua_State *L, const uv_stat_t *st) {
  lua_createtable(L, 0, 14);
  set_int(L, "size", st->st_size);
  set_int(L, "mode", st->st_mode & 07777);
  lua_pushstring(L, type_name(st->st_mode));
  lua_setfield(L, -2, "type");
  set_time(L, "mtime", st->st_mtim);
  set_time(L, "atime", st->st_atim);
  set_time(L, "ctime", st->st_ctim);
  set_time(L, "birthtime", st->st_birthtim);
  set_int(L, "nlink", st->st_nlink);
  set_int(L, "uid", st->st_uid);
  set_int(L, "gid", st->st_gid);
  set_int(L, "ino", st->st_ino);
  set_int(L, "dev", st->st_dev);
  set_int(L, "blocks", st->st_blocks);
  set_int(L, "blksize", st->st_blksize);
}

static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
    case UV_DIRENT_FILE: return "file";
    case UV_DIRENT_DIR: return "directory";
    case UV_DIRENT_LINK: return "link";
    case UV_DIRENT_FIFO: return "fifo";
    case UV_DIRENT_SOCKET: return "socket";
    case UV_DIRENT_CHAR: return "char";
    case UV_DIRENT_BLOCK: return "block";
    default: return "unknown";
  }
}

/* ---------------------------------------------------------------- files */

static lfile *tofile(lua_State *L) {
  lfile *f = loom_checkudata(L, 1, MT);
  if (f->closed) luaL_error(L, "attempt to use a closed file");
  return f;
}

static void push_file(lua_State *L, uv_file fd, int flags) {
  lfile *f = lua_newuserdatauv(L, sizeof *f, 0);
  memset(f, 0, sizeof *f);
  f->fd = fd;
  f->readable = (flags & O_ACCMODE) != O_WRONLY;
  f->writable = (flags & O_ACCMODE) != O_RDONLY;
  f->append = (flags & O_APPEND) != 0;
  loom_list_init(&f->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
}

static int read_retry(lua_State *L, int status, lua_KContext ctx);

/* A waiter cancelled after the file's turn was handed to it passes the turn
   on, or the tasks behind it would wait for ever. */
static void turn_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  lfile *f = t->waitobj;
  (void)L;
  if (t->state == LOOM_READY && !f->busy && !loom_list_empty(&f->waiters))
    loom_wake(lp, loom_container(f->waiters.next, loom_task, wait), 0);
}

/* Waits, FIFO, while another task's operation on f is in flight; k retries
   the operation from the start. Returns 0 if f is free (and now taken). */
static int take_file(lua_State *L, loom_task *t, lfile *f, lua_KFunction k) {
  if (!f->busy && (k == read_retry || !ahead_pending(f))) return 0; /* reads use the read-ahead */
  loom_suspend(L, t);
  t->undo = turn_undo;
  t->waitobj = f;
  loom_list_append(&f->waiters, &t->wait);
  return loom_yield(L, t, k);
}

/* Starts a file request: anchors the file at index 1 and marks it busy. */
static void own_file(lua_State *L, lfile *f, fsreq *r) {
  r->file = f;
  lua_pushvalue(L, 1);
  r->fileref = luaL_ref(L, LUA_REGISTRYINDEX);
  f->busy = 1;
}

#define RETRY(name, fn)                                        \
  static int name(lua_State *L, int status, lua_KContext ctx) { \
    (void)status;                                              \
    loom_resumed(L, loom_getstate(L), ctx, name);              \
    return fn(L);                                              \
  }

static int read_k(lua_State *L, int status, lua_KContext ctx);
static int read_formats(lua_State *L, loom_state *S, loom_task *t, lfile *f);

static void keep_spare(lfile *f, char *buf, size_t cap) {
  free(f->spare);
  f->spare = buf;
  f->spare_cap = cap;
}

/* Forgets a read-ahead that has landed (its buffer becomes the spare). */
static void drop_ahead(lfile *f) {
  fsreq *r = f->ahead;
  if (r == NULL || !r->done) return;
  keep_spare(f, r->buf, r->cap);
  r->buf = NULL;
  f->ahead = NULL;
  req_free(r);
}

/* Starts reading the block after the buffer into a second buffer, after a
   room where what is left of the current one goes at adoption: sequential
   reads then overlap the pool's reading with the loop's serving. The file at
   index 1 is anchored while the read is in flight. */
static void start_ahead(lua_State *L, loom_state *S, lfile *f) {
  size_t cap = FILE_BUF + AHEAD_ROOM;
  fsreq *r;
  uv_buf_t b;
  if (f->closed || f->ahead || f->eof || (r = req_new(OP_READ)) == NULL) return;
  if (f->spare && f->spare_cap >= cap) {
    r->buf = f->spare;
    cap = f->spare_cap;
    f->spare = NULL;
  } else if ((r->buf = malloc(cap)) == NULL) {
    req_free(r);
    return;
  }
  r->cap = cap;
  r->ahead = 1;
  r->off = f->bufoff + (int64_t)f->len;
  b = uv_buf_init(r->buf + AHEAD_ROOM, (unsigned)(cap - AHEAD_ROOM));
  if (uv_fs_read(&S->loop->uv, &r->req, f->fd, &b, 1, r->off, on_fs) < 0) {
    req_free(r);
    return;
  }
  r->file = f;
  lua_pushvalue(L, 1);
  r->fileref = luaL_ref(L, LUA_REGISTRYINDEX);
  f->ahead = r;
}

/* Makes the landed read-ahead the buffer, with what is left of the current
   one in front. Returns 0, or the read's libuv error. */
static int adopt_ahead(lfile *f) {
  fsreq *r = f->ahead;
  size_t have = f->len - f->rpos;
  int64_t n = r->req.result;
  f->ahead = NULL;
  if (n < 0) {
    req_free(r);
    return (int)n;
  }
  if (have <= AHEAD_ROOM) {
    memcpy(r->buf + AHEAD_ROOM - have, f->buf + f->rpos, have);
    keep_spare(f, f->buf, f->cap);
    f->buf = r->buf;
    f->cap = r->cap;
    r->buf = NULL;
    f->rpos = AHEAD_ROOM - have;
    f->len = AHEAD_ROOM + (size_t)n;
    f->bufoff = r->off - AHEAD_ROOM;
  } else { /* a long line spans the blocks: join them in a new buffer */
    size_t cap = have + (size_t)n;
    char *nb = malloc(cap ? cap : 1);
    if (nb == NULL) {
      req_free(r);
      return UV_ENOMEM;
    }
    memcpy(nb, f->buf + f->rpos, have);
    memcpy(nb + have, r->buf + AHEAD_ROOM, (size_t)n);
    keep_spare(f, r->buf, r->cap);
    r->buf = NULL;
    free(f->buf);
    f->buf = nb;
    f->cap = cap;
    f->rpos = 0;
    f->len = cap;
    f->bufoff = r->off - (int64_t)have;
  }
  f->eof = n == 0;
  req_free(r);
  return 0;
}

static int ahead_k(lua_State *L, int status, lua_KContext ctx);

static void ahead_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  fsreq *r = t->waitobj;
  r->task = NULL;
  if (t->state == LOOM_READY) { /* it landed: it stays with the file */
    r->done = 1;
    luaL_unref(L, LUA_REGISTRYINDEX, r->fileref);
    r->fileref = LUA_NOREF;
  }
  file_release(lp, r->file);
}

/* Reads more of the file into a new buffer holding what is left of the old
   one, at least f->want bytes from rpos if the file has them. */
static int refill(lua_State *L, loom_state *S, loom_task *t, lfile *f) {
  size_t have = f->len - f->rpos, cap = f->cap ? f->cap : FIRST_BUF;
  fsreq *r;
  uv_buf_t b;
  int rc;
  if (f->ahead) {
    if (!f->ahead->done) { /* wait for it */
      loom_suspend(L, t);
      f->ahead->task = t;
      t->undo = ahead_undo;
      t->waitobj = f->ahead;
      return loom_yield(L, t, ahead_k);
    }
    if ((rc = adopt_ahead(f)) < 0) {
      file_release(S->loop, f);
      lua_settop(L, 1 + f->nfmt);
      return loom_fail(L, rc, NULL);
    }
    if (f->want <= FILE_BUF) start_ahead(L, S, f);
    return read_formats(L, S, t, f);
  }
  while (cap < f->want || cap < have + FIRST_BUF / 4) cap *= 2;
  if ((r = req_new(OP_READ)) == NULL) {
    f->busy = 0;
    return luaL_error(L, "read: out of memory");
  }
  if (f->spare && f->spare_cap >= cap) {
    r->buf = f->spare;
    cap = f->spare_cap;
    f->spare = NULL;
  } else {
    r->buf = malloc(cap);
  }
  if (r->buf == NULL) {
    req_free(r);
    f->busy = 0;
    return luaL_error(L, "read: out of memory");
  }
  r->cap = cap;
  r->keep = have;
  r->off = f->bufoff + (int64_t)f->rpos;
  if (have) memcpy(r->buf, f->buf + f->rpos, have);
  b = uv_buf_init(r->buf + have, (unsigned)(cap - have));
  rc = uv_fs_read(&S->loop->uv, &r->req, f->fd, &b, 1, r->off + (int64_t)have, on_fs);
  if (rc < 0) {
    req_free(r);
    file_release(S->loop, f);
    lua_settop(L, 1 + f->nfmt);
    return loom_fail(L, rc, NULL);
  }
  own_file(L, f, r);
  return wait_req(L, t, r, read_k);
}

static size_t digits(const char *s, size_t i, size_t n, int hex, size_t *count) {
  size_t start = i;
  while (i < n && (hex ? isxdigit((unsigned char)s[i]) : isdigit((unsigned char)s[i]))) i++;
  *count += i - start;
  return i;
}

/* Bytes at the start of s[0, n) that io's "n" format would take: an
   optional sign, "0x" for hexadecimal, digits, a fraction, an exponent.
   lua_stringtonumber then judges them. */
static size_t numeral_len(const char *s, size_t n) {
  size_t i = 0, count = 0;
  int hex = 0;
  if (n > NUMERAL_MAX) n = NUMERAL_MAX;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  if (i < n && s[i] == '0') {
    i++;
    if (i < n && (s[i] == 'x' || s[i] == 'X')) {
      i++;
      hex = 1;
    } else {
      count = 1;
    }
  }
  i = digits(s, i, n, hex, &count);
  if (i < n && s[i] == '.') i = digits(s, i + 1, n, hex, &count);
  if (count > 0 && i < n && (hex ? (s[i] == 'p' || s[i] == 'P') : (s[i] == 'e' || s[i] == 'E'))) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    i = digits(s, i, n, 0, &count);
  }
  return i;
}

/* Serves the format at fidx from the buffer: 1 pushed a value, -1 pushed
   fail (nil: end of file, or not a numeral), 0 needs f->want bytes. */
static int serve(lua_State *L, lfile *f, int fidx) {
  const char *p = f->buf + f->rpos;
  size_t have = f->len - f->rpos;
  if (lua_type(L, fidx) == LUA_TNUMBER) {
    size_t n = (size_t)lua_tointeger(L, fidx);
    if (have < (n ? n : 1) && !f->eof) { /* read(0) probes for the end, as io's */
      f->want = n ? n : 1;
      return 0;
    }
    if (have == 0) {
      lua_pushnil(L);
      return -1;
    }
    if (n > have) n = have;
    lua_pushlstring(L, p, n);
    f->rpos += n;
    return 1;
  } else {
    const char *fmt = lua_tostring(L, fidx);
    if (*fmt == '*') fmt++; /* "*l", as Lua 5.1-5.2 spelled them */
    switch (*fmt) {
      case 'l':
      case 'L': {
        const char *nl = have ? memchr(p, '\n', have) : NULL;
        size_t n;
        if (nl == NULL && !f->eof) {
          f->want = have + 1;
          return 0;
        }
        if (nl == NULL && have == 0) {
          lua_pushnil(L);
          return -1;
        }
        n = nl ? (size_t)(nl - p) + 1 : have;
        lua_pushlstring(L, p, (*fmt == 'l' && nl) ? n - 1 : n);
        f->rpos += n;
        return 1;
      }
      case 'a':
        if (!f->eof) {
          f->want = f->cap > have ? f->cap + 1 : have + 1; /* grow until the end */
          return 0;
        }
        lua_pushlstring(L, p, have);
        f->rpos += have;
        return 1;
      case 'n': {
        size_t skip = 0, n;
        char num[NUMERAL_MAX + 1];
        if (have < NUMERAL_MAX + 64 && !f->eof) {
          f->want = have + NUMERAL_MAX + 64;
          return 0;
        }
        while (skip < have && isspace((unsigned char)p[skip])) skip++;
        n = numeral_len(p + skip, have - skip);
        memcpy(num, p + skip, n);
        num[n] = '\0';
        f->rpos += skip + n;
        if (n > 0 && lua_stringtonumber(L, num) != 0) return 1;
        lua_pushnil(L);
        return -1;
      }
      default: /* checked by f_read */
        lua_pushnil(L);
        return -1;
    }
  }
}

static void check_formats(lua_State *L, int n) {
  int i;
  for (i = 2; i <= n; i++) {
    if (lua_type(L, i) == LUA_TNUMBER) {
      luaL_argcheck(L, lua_isinteger(L, i) && lua_tointeger(L, i) >= 0, i, "invalid format");
    } else {
      const char *fmt = luaL_checkstring(L, i);
      if (*fmt == '*') fmt++;
      luaL_argcheck(L, *fmt != '\0' && strchr("nlLa", *fmt) != NULL, i, "invalid format");
    }
  }
}

/* Serves formats f->fmt_i .. f->nfmt (at stack index 1 + i), refilling the
   buffer as needed; io's rule: the first failure returns nil and stops. */
static int read_formats(lua_State *L, loom_state *S, loom_task *t, lfile *f) {
  for (; f->fmt_i <= f->nfmt; f->fmt_i++) {
    int got = serve(L, f, 1 + f->fmt_i);
    if (got == 0) return refill(L, S, t, f);
    if (got < 0) break;
  }
  file_release(S->loop, f);
  if (loom_step_expired(S->loop)) { /* a long run of buffered reads: let others go */
    int skip = 1 + f->nfmt;
    lua_rotate(L, 1, -skip);
    lua_pop(L, skip);
    return loom_pause(L, t);
  }
  return lua_gettop(L) - 1 - f->nfmt;
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, read_k);
  loom_state *S = loom_getstate(L);
  lfile *f = r->file;
  (void)status;
  if (r->req.result < 0) {
    int err = (int)r->req.result;
    end_file_req(L, S->loop, r);
    lua_settop(L, 1 + f->nfmt);
    return loom_fail(L, err, NULL);
  }
  keep_spare(f, f->buf, f->cap);
  f->buf = r->buf;
  f->cap = r->cap;
  r->buf = NULL;
  f->bufoff = r->off;
  f->rpos = 0;
  f->len = r->keep + (size_t)r->req.result;
  f->eof = r->req.result == 0;
  luaL_unref(L, LUA_REGISTRYINDEX, r->fileref);
  r->file = NULL;
  if (f->len == f->cap && f->want <= FILE_BUF) start_ahead(L, S, f); /* sequential: read on */
  req_free(r);
  f->busy = 1; /* still ours until the formats are served */
  return read_formats(L, S, (loom_task *)ctx, f);
}

/* The read-ahead the task waited for has landed. */
static int ahead_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, ahead_k);
  loom_state *S = loom_getstate(L);
  lfile *f = r->file;
  int rc;
  (void)status;
  r->task = NULL;
  r->done = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, r->fileref);
  r->fileref = LUA_NOREF;
  if ((rc = adopt_ahead(f)) < 0) {
    file_release(S->loop, f);
    lua_settop(L, 1 + f->nfmt);
    return loom_fail(L, rc, NULL);
  }
  if (f->want <= FILE_BUF) start_ahead(L, S, f);
  return read_formats(L, S, (loom_task *)ctx, f);
}

static int f_read(lua_State *L);
RETRY(read_retry, f_read)

/***
An open file, from `loom.fs.open`: io's methods, each running in the
thread pool. Only one operation per file runs at a time (others queue, in
order); sequential reads are read ahead.
@type File
*/

/***
Reads by io's formats: a number of bytes, `"a"` (all), `"l"` (a line
without its end, the default), `"L"` (with it), `"n"` (a number); several
formats give several values. Blocks.
@function File:read
@param ... formats
@return the values read; nil at the end of the file; nil, msg, code on failure
@usage local header = f:read("l")
local rest = f:read("a")
*/
static int f_read(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  loom_task *t = loom_checkrunning(L, S, "read");
  if (!f->readable) return loom_fail(L, UV_EBADF, "read");
  check_formats(L, lua_gettop(L));
  if (take_file(L, t, f, read_retry)) return 0;
  if (lua_gettop(L) == 1) lua_pushliteral(L, "l");
  f->busy = 1;
  f->nfmt = lua_gettop(L) - 1;
  f->fmt_i = 1;
  f->eof = 0;
  if (f->pos_at_end) f->eof = 1; /* after an append the position is the end */
  return read_formats(L, S, t, f);
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, write_k);
  loom_state *S = loom_getstate(L);
  lfile *f = r->file;
  int64_t n = r->req.result;
  (void)status;
  if (n >= 0) {
    if (r->off < 0)
      f->pos_at_end = 1;
    else
      f->bufoff = r->off + n;
  }
  end_file_req(L, S->loop, r);
  if (n < 0) return loom_fail(L, (int)n, NULL);
  lua_settop(L, 1);
  return 1;
}

static int f_write(lua_State *L);
RETRY(write_retry, f_write)

/***
Writes strings and numbers. The data is copied, so a cancelled write
harms nothing. Blocks.
@function File:write
@param ... strings or numbers
@return the file, or nil, msg, code
@usage assert(f:write("id,name\n", 42, "\n"))
*/
static int f_write(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  loom_task *t = loom_checkrunning(L, S, "write");
  int i, n = lua_gettop(L), rc;
  size_t total = 0, at = 0;
  fsreq *r;
  uv_buf_t b;
  for (i = 2; i <= n; i++) {
    size_t len;
    luaL_checklstring(L, i, &len);
    total += len;
  }
  if (!f->writable) return loom_fail(L, UV_EBADF, "write");
  if (take_file(L, t, f, write_retry)) return 0;
  if (total == 0) {
    lua_settop(L, 1);
    return 1;
  }
  if ((r = req_new(OP_WRITE)) == NULL || (r->buf = malloc(total)) == NULL) {
    if (r) req_free(r);
    return luaL_error(L, "write: out of memory");
  }
  for (i = 2; i <= n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    memcpy(r->buf + at, s, len);
    at += len;
  }
  drop_ahead(f);
  drop_buffer(f);
  r->cap = total;
  r->off = f->append ? -1 : f->bufoff;
  b = uv_buf_init(r->buf, (unsigned)total);
  rc = uv_fs_write(&S->loop->uv, &r->req, f->fd, &b, 1, r->off, on_fs);
  if (rc < 0) {
    req_free(r);
    return loom_fail(L, rc, NULL);
  }
  own_file(L, f, r);
  return wait_req(L, t, r, write_k);
}

/* Runs a one-shot request on the file at index 1 (fsync, ftruncate, fstat)
   and continues with k. */
static int file_op(lua_State *L, loom_state *S, loom_task *t, lfile *f, int op, int64_t arg,
                   lua_KFunction k) {
  fsreq *r = req_new(op);
  int rc;
  if (r == NULL) return luaL_error(L, "out of memory");
  if (op == OP_FSYNC)
    rc = uv_fs_fsync(&S->loop->uv, &r->req, f->fd, on_fs);
  else if (op == OP_FTRUNC)
    rc = uv_fs_ftruncate(&S->loop->uv, &r->req, f->fd, arg, on_fs);
  else
    rc = uv_fs_fstat(&S->loop->uv, &r->req, f->fd, on_fs);
  if (rc < 0) {
    req_free(r);
    return loom_fail(L, rc, NULL);
  }
  r->off = arg;
  own_file(L, f, r);
  return wait_req(L, t, r, k);
}

static int seek_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, seek_k);
  loom_state *S = loom_getstate(L);
  lfile *f = r->file;
  int64_t size = (int64_t)r->req.statbuf.st_size, pos;
  int rc = (int)r->req.result;
  (void)status;
  end_file_req(L, S->loop, r);
  if (rc < 0) return loom_fail(L, rc, NULL);
  pos = size + lua_tointeger(L, 3);
  if (pos < 0) return loom_fail(L, UV_EINVAL, NULL);
  f->len = f->rpos = 0;
  f->bufoff = pos;
  f->pos_at_end = 0;
  lua_pushinteger(L, pos);
  return 1;
}

static int f_seek(lua_State *L);
RETRY(seek_retry, f_seek)

/***
Moves (or reads) the position, as io's. Blocks.
@function File:seek
@tparam[opt="cur"] string whence "set", "cur" or "end"
@tparam[opt=0] integer offset
@return the new position from the start, or nil, msg, code
@usage local size = f:seek("end")
*/
static int f_seek(lua_State *L) {
  static const char *const modes[] = {"set", "cur", "end", NULL};
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  int op = luaL_checkoption(L, 2, "cur", modes);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  loom_task *t = loom_checkrunning(L, S, "seek");
  int64_t pos;
  if (take_file(L, t, f, seek_retry)) return 0;
  drop_ahead(f);
  lua_settop(L, 3);
  if (op == 2 || (op == 1 && f->pos_at_end)) { /* relative to the end: needs the size */
    lua_pushinteger(L, off);
    lua_replace(L, 3);
    return file_op(L, S, t, f, OP_FSTAT, 0, seek_k);
  }
  pos = (op == 0 ? 0 : f->bufoff + (int64_t)f->rpos) + off;
  if (pos < 0) return loom_fail(L, UV_EINVAL, NULL);
  /* ahead within the buffer: keep it (bytes before rpos may not be the
     file's: a landed read-ahead leaves room in front of what was left) */
  if (pos >= f->bufoff + (int64_t)f->rpos && pos <= f->bufoff + (int64_t)f->len) {
    f->rpos = (size_t)(pos - f->bufoff);
  } else {
    f->len = f->rpos = 0;
    f->bufoff = pos;
  }
  f->eof = 0;
  lua_pushinteger(L, pos);
  return 1;
}

static int simple_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, simple_k);
  loom_state *S = loom_getstate(L);
  int rc = (int)r->req.result, op = r->op;
  (void)status;
  if (rc >= 0 && op == OP_FSTAT) push_stat(L, &r->req.statbuf);
  if (rc >= 0 && op == OP_FTRUNC) drop_buffer(r->file);
  end_file_req(L, S->loop, r);
  if (rc < 0) return loom_fail(L, rc, NULL);
  if (op != OP_FSTAT) lua_pushboolean(L, 1);
  return 1;
}

static int f_sync(lua_State *L);
static int f_truncate(lua_State *L);
static int f_stat(lua_State *L);
RETRY(sync_retry, f_sync)
RETRY(truncate_retry, f_truncate)
RETRY(stat_retry, f_stat)

/***
Flushes the file's data to disk (fsync). Blocks.
@function File:sync
@return true, or nil, msg, code
@usage f:write(data); f:sync()
*/
static int f_sync(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  loom_task *t = loom_checkrunning(L, S, "sync");
  if (take_file(L, t, f, sync_retry)) return 0;
  return file_op(L, S, t, f, OP_FSYNC, 0, simple_k);
}

/***
Cuts or extends the file. Blocks.
@function File:truncate
@tparam[opt] integer size default: the current position
@return true, or nil, msg, code
@usage f:truncate(0)
*/
static int f_truncate(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  lua_Integer size = luaL_optinteger(L, 2, -1);
  loom_task *t = loom_checkrunning(L, S, "truncate");
  luaL_argcheck(L, size >= -1, 2, "size must not be negative");
  if (take_file(L, t, f, truncate_retry)) return 0;
  drop_ahead(f);
  if (size < 0) size = f->bufoff + (int64_t)f->rpos;
  return file_op(L, S, t, f, OP_FTRUNC, size, simple_k);
}

/***
The file's stat table (as `loom.fs.stat`). Blocks.
@function File:stat
@return a table, or nil, msg, code
@usage print(f:stat().size)
*/
static int f_stat(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = tofile(L);
  loom_task *t = loom_checkrunning(L, S, "stat");
  if (take_file(L, t, f, stat_retry)) return 0;
  return file_op(L, S, t, f, OP_FSTAT, 0, simple_k);
}

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, close_k);
  int rc = (int)r->req.result;
  (void)status;
  req_free(r);
  if (rc < 0) return loom_fail(L, rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/***
Closes the file; again is harmless; also `<close>`, and a file collected
unclosed is closed. Waits for the file's operation in flight. Blocks.
@function File:close
@return true, or nil, msg, code
@usage local f <close> = assert(loom.fs.open(path))
*/
static int f_close(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lfile *f = loom_checkudata(L, 1, MT);
  loom_task *t = S->loop ? S->loop->current : NULL;
  uv_file fd = f->fd;
  fsreq *r;
  if (f->closed) {
    lua_pushboolean(L, 1);
    return 1;
  }
  f->closed = 1;
  drop_ahead(f);
  free(f->buf);
  free(f->spare);
  f->buf = f->spare = NULL;
  f->cap = f->spare_cap = f->len = f->rpos = 0;
  if (f->busy || f->ahead) { /* closed when the request in flight is over */
    lua_pushboolean(L, 1);
    return 1;
  }
  f->fd = -1;
  if (t == NULL || t->co != L || !lua_isyieldable(L) || (r = req_new(OP_CLOSE)) == NULL) {
    close_fd(NULL, fd);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (uv_fs_close(&S->loop->uv, &r->req, fd, on_fs) < 0) {
    req_free(r);
    close_fd(NULL, fd);
    lua_pushboolean(L, 1);
    return 1;
  }
  return wait_req(L, t, r, close_k);
}

/***
The file descriptor (to hand to a child process), or nil once closed.
Never blocks.
@function File:fileno
@treturn integer|nil
@usage loom.process.spawn{ "sort", stdin = f }
*/
static int f_fileno(lua_State *L) {
  lfile *f = loom_checkudata(L, 1, MT);
  if (f->closed || f->fd < 0) return 0;
  lua_pushinteger(L, f->fd);
  return 1;
}

/* A file collected unclosed is closed (synchronously: __gc cannot wait). */
static int f_gc(lua_State *L) {
  lfile *f = lua_touserdata(L, 1);
  drop_ahead(f); /* a read-ahead in flight anchors the file: this one has landed */
  if (f->fd >= 0) {
    close_fd(NULL, f->fd);
    f->fd = -1;
  }
  free(f->buf);
  free(f->spare);
  f->buf = f->spare = NULL;
  f->closed = 1;
  return 0;
}

static int f_tostring(lua_State *L) {
  lfile *f = loom_checkudata(L, 1, MT);
  if (f->closed)
    lua_pushliteral(L, "loom.File (closed)");
  else
    lua_pushfstring(L, "loom.File (fd %d)", (int)f->fd);
  return 1;
}

/* ---------------------------------------------------------------- paths */

static int path_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq *r = woken_req(L, ctx, path_k);
  int rc = (int)r->req.result, op = r->op;
  (void)status;
  if (rc < 0) {
    req_free(r);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  switch (op) {
    case OP_OPEN:
      push_file(L, (uv_file)rc, (int)r->off);
      break;
    case OP_STAT:
    case OP_LSTAT:
      push_stat(L, &r->req.statbuf);
      break;
    case OP_READLINK:
    case OP_REALPATH:
      lua_pushstring(L, r->req.ptr);
      break;
    case OP_MKDTEMP:
      lua_pushstring(L, r->req.path);
      break;
    case OP_SCANDIR: {
      uv_dirent_t ent;
      int i = 0;
      lua_newtable(L);
      while (uv_fs_scandir_next(&r->req, &ent) != UV_EOF) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, ent.name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, dirent_type(ent.type));
        lua_setfield(L, -2, "type");
        lua_rawseti(L, -2, ++i);
      }
      break;
    }
    default:
      lua_pushboolean(L, 1);
  }
  req_free(r);
  return 1;
}

static int open_flags(lua_State *L, const char *mode) {
  int flags;
  const char *m = mode;
  switch (*m++) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return luaL_argerror(L, 2, lua_pushfstring(L, "invalid mode '%s'", mode));
  }
  if (*m == '+') {
    m++;
    flags = (flags & ~O_ACCMODE) | O_RDWR;
  }
  if (*m == 'b') m++;
  if (*m != '\0') return luaL_argerror(L, 2, lua_pushfstring(L, "invalid mode '%s'", mode));
  return flags | O_CLOEXEC;
}

/* Starts path operation `op` with the arguments of the calling function. */
static int path_op(lua_State *L, int op, const char *fname) {
  loom_state *S = loom_getstate(L);
  const char *p = luaL_checkstring(L, 1), *p2 = NULL;
  int flags = 0, mode = 0, rc;
  loom_task *t;
  fsreq *r;
  uv_loop_t *loop;
  switch (op) {
    case OP_RENAME: case OP_COPY: case OP_SYMLINK:
      p2 = luaL_checkstring(L, 2);
      if (op == OP_COPY && lua_toboolean(L, 3)) flags = UV_FS_COPYFILE_EXCL;
      break;
    case OP_OPEN:
      flags = open_flags(L, luaL_optstring(L, 2, "r"));
      mode = (int)luaL_optinteger(L, 3, 0666);
      break;
    case OP_MKDIR:
      mode = (int)luaL_optinteger(L, 2, 0777);
      break;
    case OP_CHMOD:
      mode = (int)luaL_checkinteger(L, 2);
      break;
  }
  t = loom_checkrunning(L, S, fname);
  loop = &S->loop->uv;
  if ((r = req_new(op)) == NULL) return luaL_error(L, "%s: out of memory", fname);
  switch (op) {
    case OP_OPEN: r->off = flags; rc = uv_fs_open(loop, &r->req, p, flags, mode, on_fs); break;
    case OP_STAT: rc = uv_fs_stat(loop, &r->req, p, on_fs); break;
    case OP_LSTAT: rc = uv_fs_lstat(loop, &r->req, p, on_fs); break;
    case OP_MKDIR: rc = uv_fs_mkdir(loop, &r->req, p, mode, on_fs); break;
    case OP_RMDIR: rc = uv_fs_rmdir(loop, &r->req, p, on_fs); break;
    case OP_UNLINK: rc = uv_fs_unlink(loop, &r->req, p, on_fs); break;
    case OP_RENAME: rc = uv_fs_rename(loop, &r->req, p, p2, on_fs); break;
    case OP_COPY: rc = uv_fs_copyfile(loop, &r->req, p, p2, flags, on_fs); break;
    case OP_SYMLINK: rc = uv_fs_symlink(loop, &r->req, p, p2, 0, on_fs); break;
    case OP_READLINK: rc = uv_fs_readlink(loop, &r->req, p, on_fs); break;
    case OP_REALPATH: rc = uv_fs_realpath(loop, &r->req, p, on_fs); break;
    case OP_CHMOD: rc = uv_fs_chmod(loop, &r->req, p, mode, on_fs); break;
    case OP_MKDTEMP: rc = uv_fs_mkdtemp(loop, &r->req, p, on_fs); break;
    default: rc = uv_fs_scandir(loop, &r->req, p, 0, on_fs); break;
  }
  if (rc < 0) {
    req_free(r);
    return loom_fail(L, rc, p);
  }
  lua_settop(L, 1);
  return wait_req(L, t, r, path_k);
}

#define PATH_FN(name, op)            \
  static int name(lua_State *L) {    \
    return path_op(L, op, &(#name)[2]); \
  }

/* Each of these may block and returns nil, "<path>: <message>", "<CODE>" on
   failure. p_open(path [, mode [, perm]]): a file (mode as io.open's);
   p_stat/p_lstat(path): a table (size, mtime, type, mode ...);
   p_mkdir(path [, perm]), p_rmdir, p_unlink, p_rename(from, to),
   p_copyfile(from, to [, exclusive]), p_symlink(target, path),
   p_chmod(path, perm): true; p_readlink, p_realpath: a path;
   p_mkdtemp(template ending in XXXXXX): the new directory; p_scandir(path): a
   list of {name, type}. */
PATH_FN(p_open, OP_OPEN)
PATH_FN(p_stat, OP_STAT)
PATH_FN(p_lstat, OP_LSTAT)
PATH_FN(p_mkdir, OP_MKDIR)
PATH_FN(p_rmdir, OP_RMDIR)
PATH_FN(p_unlink, OP_UNLINK)
PATH_FN(p_rename, OP_RENAME)
PATH_FN(p_copyfile, OP_COPY)
PATH_FN(p_symlink, OP_SYMLINK)
PATH_FN(p_readlink, OP_READLINK)
PATH_FN(p_realpath, OP_REALPATH)
PATH_FN(p_chmod, OP_CHMOD)
PATH_FN(p_mkdtemp, OP_MKDTEMP)
PATH_FN(p_scandir, OP_SCANDIR)

/* Expects [state, module] on the stack; adds module._fs, the primitives the
   Lua layer (loom.fs) is built on. */
void loom_open_fs(lua_State *L) {
  static const luaL_Reg methods[] = {{"read", f_read},   {"write", f_write},
                                     {"seek", f_seek},   {"sync", f_sync},
                                     {"truncate", f_truncate},
                                     {"stat", f_stat},   {"close", f_close},
                                     {"fileno", f_fileno},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", f_close}, {"__gc", f_gc},
                                  {"__tostring", f_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"open", p_open},         {"stat", p_stat},       {"lstat", p_lstat},
      {"mkdir", p_mkdir},       {"rmdir", p_rmdir},     {"unlink", p_unlink},
      {"rename", p_rename},     {"copyfile", p_copyfile}, {"symlink", p_symlink},
      {"readlink", p_readlink}, {"realpath", p_realpath}, {"chmod", p_chmod},
      {"mkdtemp", p_mkdtemp},   {"scandir", p_scandir}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  loom_newclass(L, S, LOOM_FILE, methods, meta); /* S + 2 */
  lua_newtable(L);                               /* module._fs */
  loom_classfuncs(L, S + 3, S, S + 2, funcs);
  lua_setfield(L, S + 1, "_fs");
  lua_setfield(L, S + 1, "_File");
}
