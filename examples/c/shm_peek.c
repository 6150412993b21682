/*
 * Opens a POSIX shared memory segment by name, as any C program would, and
 * treats it as an array of int32_t (a cowshm Int32Array).
 *
 *   cc -O2 -o shm_peek shm_peek.c        (older glibc: add -lrt)
 *   ./shm_peek NAME                      prints the element count and their sum
 *   ./shm_peek NAME INDEX VALUE          also stores VALUE at INDEX
 *
 * NAME is cowshm's name: the segment is /dev/shm/NAME, and shm_open wants "/NAME".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2 && argc != 4) {
    fprintf(stderr, "usage: %s NAME [INDEX VALUE]\n", argv[0]);
    return 2;
  }
  char path[NAME_MAX + 2];
  if (snprintf(path, sizeof path, "/%s", argv[1]) >= (int)sizeof path) {
    fprintf(stderr, "name too long: %s\n", argv[1]);
    return 2;
  }
  int fd = shm_open(path, O_RDWR, 0);
  if (fd == -1) {
    fprintf(stderr, "shm_open %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct stat st;
  if (fstat(fd, &st) == -1) {
    fprintf(stderr, "fstat %s: %s\n", path, strerror(errno));
    return 1;
  }
  size_t size = (size_t)st.st_size;
  if (size < sizeof(int32_t)) {
    fprintf(stderr, "%s holds %zu bytes: not one int32_t\n", path, size);
    return 1;
  }
  /* MAP_SHARED: writes go to the segment and every other process sees them. */
  int32_t *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (a == MAP_FAILED) {
    fprintf(stderr, "mmap %s: %s\n", path, strerror(errno));
    return 1;
  }
  close(fd); /* the mapping keeps the segment alive */

  size_t count = size / sizeof(int32_t);
  int64_t sum = 0;
  for (size_t i = 0; i < count; i++) sum += a[i];
  printf("{\"count\": %zu, \"sum\": \"%" PRId64 "\", \"first\": %" PRId32 "}\n", count, sum, a[0]);

  if (argc == 4) {
    char *end;
    errno = 0;
    unsigned long long index = strtoull(argv[2], &end, 10);
    if (errno || *end || index >= count) {
      fprintf(stderr, "INDEX must be below %zu: %s\n", count, argv[2]);
      return 2;
    }
    long long value = strtoll(argv[3], &end, 10);
    if (errno || *end || value < INT32_MIN || value > INT32_MAX) {
      fprintf(stderr, "VALUE must fit an int32_t: %s\n", argv[3]);
      return 2;
    }
    a[index] = (int32_t)value;
  }
  if (munmap(a, size) == -1) {
    fprintf(stderr, "munmap: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}
