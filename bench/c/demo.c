/* Baseline for bench/demo.bench.js: the program of the original question
 * (shm_open, ftruncate, mmap shared, A[i] = i, mmap MAP_PRIVATE copy, sum
 * both, check, unlink), without the final getchar(), with each phase timed.
 *
 *   demo NAME ELEMENTS [huge]
 *
 * With `huge`, the same on 2 MiB hugetlb pages: a memfd_create(MFD_HUGETLB)
 * region (the size rounded up to whole huge pages) instead of shm_open.
 *
 * Prints {"elements": N, "ok": true|false, "phases": [{"name", "seconds"}...]}. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/memfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static size_t ARRAYSIZE;

__attribute__((noinline)) static void init(int *A) {
  for (size_t i = 0; i < ARRAYSIZE; ++i) A[i] = (int)i;
}

__attribute__((noinline)) static size_t agg(const int *A) {
  size_t sum = 0;
  for (size_t i = 0; i < ARRAYSIZE; ++i) sum += A[i];
  return sum;
}

static const char *names[8];
static double seconds[8];
static int phases;
static double mark;

static void phase(const char *name) {
  double t = now();
  names[phases] = name;
  seconds[phases++] = t - mark;
  mark = t;
}

int main(int argc, char **argv) {
  if (argc != 3 && !(argc == 4 && strcmp(argv[3], "huge") == 0)) {
    fprintf(stderr, "usage: demo NAME ELEMENTS [huge]\n");
    return 2;
  }
  int huge = argc == 4;
  char name[256];
  snprintf(name, sizeof name, "/%s", argv[1]);
  ARRAYSIZE = strtoull(argv[2], NULL, 10);
  mark = now();
  size_t bytes = sizeof(int) * ARRAYSIZE;
  if (huge) bytes = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
  if (!huge) shm_unlink(name);
  int fd = huge ? memfd_create(name + 1, MFD_HUGETLB | MFD_HUGE_2MB) : shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd == -1) {
    perror("Error allocating fd");
    return 1;
  }
  if (ftruncate(fd, (off_t)bytes) == -1) {
    perror("Error ftruncate");
    return 1;
  }
  phase("create");
  int *A = (int *)mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (A == (int *)-1) {
    perror("Error mapping A to memory");
    return 1;
  }
  init(A);
  phase("fill");
  int *Acopy = (int *)mmap(NULL, bytes, PROT_READ, MAP_PRIVATE | (huge ? MAP_NORESERVE : 0), fd, 0);
  if (Acopy == (int *)-1) {
    perror("Error mapping copy from file");
    return 1;
  }
  phase("copy");
  size_t sumA = agg(A);
  size_t expected = (ARRAYSIZE * (ARRAYSIZE - 1)) >> 1;
  phase("sum-region");
  size_t sumCopy = agg(Acopy);
  phase("sum-copy");
  if (!huge) shm_unlink(name);
  phase("unlink");
  int ok = expected == sumA && expected == sumCopy;
  printf("{\"elements\":%zu,\"expectedSum\":\"%zu\",\"sumRegion\":\"%zu\",\"sumCopy\":\"%zu\",\"ok\":%s,\"phases\":[",
         ARRAYSIZE, expected, sumA, sumCopy, ok ? "true" : "false");
  for (int i = 0; i < phases; i++)
    printf("%s{\"name\":\"%s\",\"seconds\":%.9g}", i ? "," : "", names[i], seconds[i]);
  printf("]}\n");
  return ok ? 0 : 1;
}
