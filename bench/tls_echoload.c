/* tls_echoload: closed-loop TLS echo load generator for bench/tls.sh.
 * usage: tls_echoload HOST PORT CONNS MSGSIZE SECONDS
 * Each connection (a thread, blocking OpenSSL calls) sends MSGSIZE bytes,
 * waits for all of them back, repeats. The servers are loom's own test
 * ones, so the certificate is not verified (the handshake happens once per
 * connection, before the clock starts).
 * Prints: rps=<round trips per second> MBps=<payload MB/s> errors=<n> */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ssl.h>

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static size_t msz;
static atomic_long trips, errors, ready;
static atomic_int go, stop;

static void *worker(void *arg) {
  char *out = malloc(msz), *in = malloc(msz);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  SSL *ssl;
  (void)arg;
  memset(out, 'x', msz);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) goto fail;
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) goto fail;
  atomic_fetch_add(&ready, 1);
  while (!atomic_load(&go)) usleep(1000);
  while (!atomic_load(&stop)) {
    size_t got = 0;
    if (SSL_write(ssl, out, (int)msz) != (int)msz) goto fail;
    while (got < msz) {
      int r = SSL_read(ssl, in + got, (int)(msz - got));
      if (r <= 0) goto fail;
      got += (size_t)r;
    }
    atomic_fetch_add(&trips, 1);
  }
  SSL_free(ssl);
  close(fd);
  return NULL;
fail:
  atomic_fetch_add(&errors, 1);
  atomic_fetch_add(&ready, 1);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  int n, i;
  double secs, el;
  pthread_t *th;
  struct timespec a, b;
  long t0;
  if (argc < 6) {
    fprintf(stderr, "usage: tls_echoload HOST PORT CONNS MSGSIZE SECONDS\n");
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &addr.sin_addr);
  n = atoi(argv[3]);
  msz = (size_t)atol(argv[4]);
  secs = atof(argv[5]);
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  th = calloc((size_t)n, sizeof *th);
  for (i = 0; i < n; i++) pthread_create(&th[i], NULL, worker, NULL);
  while (atomic_load(&ready) < n) usleep(1000);
  t0 = atomic_load(&trips);
  clock_gettime(CLOCK_MONOTONIC, &a);
  atomic_store(&go, 1);
  usleep((useconds_t)(secs * 1e6));
  atomic_store(&stop, 1);
  clock_gettime(CLOCK_MONOTONIC, &b);
  el = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  t0 = atomic_load(&trips) - t0;
  for (i = 0; i < n; i++) pthread_join(th[i], NULL);
  printf("rps=%.0f MBps=%.1f errors=%ld\n", (double)t0 / el, (double)t0 * (double)msz / el / 1e6,
         atomic_load(&errors));
  return 0;
}
