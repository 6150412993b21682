/* Baseline for bench/region.bench.js: the syscalls cowshm makes for
 * Region.create + map + close + unlink, and Region.open + map + close
 * (shm_open, fstat, geteuid for the owner check, mmap, munmap, close).
 *
 *   region create NAME SIZE RUNS ITERS
 *   region open   NAME SIZE RUNS ITERS   (NAME must exist with SIZE bytes)
 *
 * Each run times ITERS iterations; prints {"seconds": median per iteration,
 * "runs": [per-iteration seconds of every run]} as JSON. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static void create_once(const char *name, size_t size) {
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) die("shm_open");
  if (fchmod(fd, 0600) != 0) die("fchmod");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  if (fallocate(fd, 0, 0, (off_t)size) != 0) die("fallocate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  if (munmap(p, size) != 0) die("munmap");
  if (close(fd) != 0) die("close");
  if (shm_unlink(name) != 0) die("shm_unlink");
}

static void open_once(const char *name, size_t size) {
  struct stat st;
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) die("shm_open");
  if (fstat(fd, &st) != 0) die("fstat");
  if ((size_t)st.st_size != size) {
    errno = EINVAL;
    die("unexpected size");
  }
  /* Region.open's owner check: the segment must belong to the effective uid. */
  if (st.st_uid != geteuid()) {
    errno = EPERM;
    die("owned by another user");
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  if (munmap(p, (size_t)st.st_size) != 0) die("munmap");
  if (close(fd) != 0) die("close");
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: region create|open NAME SIZE RUNS ITERS\n");
    return 2;
  }
  int create = strcmp(argv[1], "create") == 0;
  char name[256];
  snprintf(name, sizeof name, "/%s", argv[2]);
  size_t size = strtoull(argv[3], NULL, 10);
  int runs = atoi(argv[4]), iters = atoi(argv[5]);
  double *t = calloc((size_t)runs, sizeof *t);
  if (t == NULL) die("calloc");
  /* One untimed iteration: first-touch costs of the code and the kernel paths. */
  if (create) create_once(name, size);
  else open_once(name, size);
  for (int r = 0; r < runs; r++) {
    double t0 = now();
    for (int i = 0; i < iters; i++) {
      if (create) create_once(name, size);
      else open_once(name, size);
    }
    t[r] = (now() - t0) / iters;
  }
  printf("{\"runs\":[");
  for (int r = 0; r < runs; r++) printf("%s%.9g", r ? "," : "", t[r]);
  qsort(t, (size_t)runs, sizeof *t, cmp_double);
  printf("],\"seconds\":%.9g}\n", runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2);
  return 0;
}
