/* Baseline for bench/sum.bench.js: the question's aggregation loop
 * (size_t sum += A[i] over int32) on a populated, warm shared mapping.
 *
 *   sum NAME BYTES RUNS
 *
 * Opens the existing /dev/shm/NAME (the bench created and filled it), maps it
 * MAP_SHARED, sums once untimed (faulting every page in), then times RUNS
 * sums. Prints {"seconds": median, "runs": [...], "sum": "..."}. */
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

/* The loop of the original question, kept out of line so every run sums. */
__attribute__((noinline)) static size_t agg(const int *A, size_t n) {
  size_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += A[i];
  return sum;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: sum NAME BYTES RUNS\n");
    return 2;
  }
  char name[256];
  snprintf(name, sizeof name, "/%s", argv[1]);
  size_t bytes = strtoull(argv[2], NULL, 10), n = bytes / sizeof(int);
  int runs = atoi(argv[3]);
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) die("shm_open");
  const int *A = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (A == MAP_FAILED) die("mmap");
  double *t = calloc((size_t)runs, sizeof *t);
  if (t == NULL) die("calloc");
  volatile size_t sink = agg(A, n); /* warm-up */
  for (int r = 0; r < runs; r++) {
    double t0 = now();
    sink = agg(A, n);
    t[r] = now() - t0;
  }
  printf("{\"runs\":[");
  for (int r = 0; r < runs; r++) printf("%s%.9g", r ? "," : "", t[r]);
  qsort(t, (size_t)runs, sizeof *t, cmp_double);
  printf("],\"seconds\":%.9g,\"sum\":\"%zu\"}\n", runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2,
         (size_t)sink);
  munmap((void *)A, bytes);
  close(fd);
  return 0;
}
