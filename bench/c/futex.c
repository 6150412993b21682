/* Baselines for bench/atomics.bench.js, the same work done from C:
 *   futex pingpong ROUNDS [WARMUP] two processes ping-pong a word of a shared
 *                                 memfd with FUTEX_WAIT/FUTEX_WAKE; seconds
 *                                 per round trip, timed after WARMUP untimed
 *                                 ones (default 0)
 * It prints one JSON object. (The locks' baselines: bench/c/mutex.c.) */
#include "bench.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long fx(_Atomic uint32_t *a, int op, uint32_t v) { return syscall(SYS_futex, a, op, v, NULL, NULL, 0); }

static void *shared(size_t size) {
  int fd = memfd_create("bench", 0);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  close(fd);
  return p;
}

static void pingpong(long n, long warm) {
  _Atomic uint32_t *w = shared(4096);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (long i = 0; i < warm + n; i++) {
      uint32_t v;
      while ((v = atomic_load(w)) != (uint32_t)(2 * i + 1)) fx(w, FUTEX_WAIT, v);
      atomic_store(w, (uint32_t)(2 * i + 2));
      fx(w, FUTEX_WAKE, INT32_MAX);
    }
    _exit(0);
  }
  double t0 = now();
  for (long i = 0; i < warm + n; i++) {
    if (i == warm) t0 = now();
    atomic_store(w, (uint32_t)(2 * i + 1));
    fx(w, FUTEX_WAKE, INT32_MAX);
    uint32_t v;
    while ((v = atomic_load(w)) != (uint32_t)(2 * i + 2)) fx(w, FUTEX_WAIT, v);
  }
  double t = now() - t0;
  waitpid(pid, NULL, 0);
  printf("{\"seconds\": %.9g}\n", t / n);
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "pingpong") == 0) pingpong(atol(argv[2]), argc >= 4 ? atol(argv[3]) : 0);
  else {
    fprintf(stderr, "usage: %s pingpong ROUNDS [WARMUP]\n", argv[0]);
    return 2;
  }
  return 0;
}
