/* The blocking baseline of bench/pg.sh: the same work as pg_loom.lua, one
   query after another on one connection with libpq's blocking calls
   (prepared statements, as the others use).
   usage: pg_blocking CONNINFO select|wait SECS | insert ROWS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void ok(PGconn *c, PGresult *r) {
  if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "pg_blocking: %s", PQerrorMessage(c));
    exit(1);
  }
  PQclear(r);
}

int main(int argc, char **argv) {
  PGconn *c;
  double n, t0, best = 1e9;
  char id[16], name[32];
  const char *vals[2] = {id, name};
  long count = 0;
  if (argc != 4) return 2;
  n = atof(argv[3]);
  c = PQconnectdb(argv[1]);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "pg_blocking: %s", PQerrorMessage(c));
    return 1;
  }
  if (strcmp(argv[2], "insert") != 0) {
    ok(c, PQprepare(c, "q", strcmp(argv[2], "wait") == 0
                              ? "SELECT u.id, u.name FROM users u, pg_sleep(0.001) WHERE u.id = $1"
                              : "SELECT id, name FROM users WHERE id = $1", 1, NULL));
    t0 = now();
    while (now() - t0 < n) {
      snprintf(id, sizeof id, "%ld", count % 10000 + 1);
      ok(c, PQexecPrepared(c, "q", 1, vals, NULL, NULL, 0));
      count++;
    }
    printf("qps=%d\n", (int)(count / (now() - t0)));
  } else {
    ok(c, PQprepare(c, "i", "INSERT INTO bulk VALUES ($1, $2)", 2, NULL));
    for (int round = 0; round < 3; round++) {
      ok(c, PQexec(c, "TRUNCATE bulk"));
      t0 = now();
      ok(c, PQexec(c, "BEGIN"));
      for (long i = 1; i <= (long)n; i++) {
        snprintf(id, sizeof id, "%ld", i);
        snprintf(name, sizeof name, "name %ld", i);
        ok(c, PQexecPrepared(c, "i", 2, vals, NULL, NULL, 0));
      }
      ok(c, PQexec(c, "COMMIT"));
      if (now() - t0 < best) best = now() - t0;
    }
    printf("rows_per_s=%d\n", (int)(n / best));
  }
  PQfinish(c);
  return 0;
}
