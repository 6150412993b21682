/* Baseline for bench/cow.bench.js: the mmap(MAP_PRIVATE) call that makes a
 * copy-on-write view, on the existing shm segment NAME of BYTES bytes (the
 * bench created and reserved it).
 *
 *   cow NAME BYTES RUNS ITERS
 *
 * Each run times ITERS mmap calls (the munmaps that follow are not timed).
 * Prints {"seconds": median per mmap, "runs": [...]}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: cow NAME BYTES RUNS ITERS\n");
    return 2;
  }
  char name[256];
  snprintf(name, sizeof name, "/%s", argv[1]);
  size_t bytes = strtoull(argv[2], NULL, 10);
  int runs = atoi(argv[3]), iters = atoi(argv[4]);
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) die("shm_open");
  void **maps = calloc((size_t)iters, sizeof *maps);
  double *t = calloc((size_t)runs, sizeof *t);
  if (maps == NULL || t == NULL) die("calloc");
  for (int r = -1; r < runs; r++) { /* run -1 warms up */
    double t0 = now();
    for (int i = 0; i < iters; i++) {
      maps[i] = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (maps[i] == MAP_FAILED) die("mmap");
    }
    double dt = (now() - t0) / iters;
    if (r >= 0) t[r] = dt;
    for (int i = 0; i < iters; i++)
      if (munmap(maps[i], bytes) != 0) die("munmap");
  }
  printf("{\"runs\":[");
  for (int r = 0; r < runs; r++) printf("%s%.9g", r ? "," : "", t[r]);
  qsort(t, (size_t)runs, sizeof *t, cmp_double);
  printf("],\"seconds\":%.9g}\n", runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2);
  close(fd);
  return 0;
}
