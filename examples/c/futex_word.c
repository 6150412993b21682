/*
 * Waits for and wakes a cowshm process through a word of a shared segment:
 * the C side of atomics.wait / atomics.notify. A futex on a MAP_SHARED
 * mapping is keyed by the kernel by file and offset, so this program and a
 * Node.js process that maps the same segment wait on the same word (use the
 * shared futex ops: never FUTEX_PRIVATE_FLAG).
 *
 *   cc -O2 -o futex_word futex_word.c
 *   ./futex_word NAME INDEX wait VALUE     sleeps while word INDEX holds VALUE,
 *                                          then prints the value it holds
 *   ./futex_word NAME INDEX wake VALUE     stores VALUE at INDEX, wakes every
 *                                          waiter, prints how many woke
 *
 * INDEX counts int32 words (an Int32Array index); NAME is cowshm's name.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static long futex(_Atomic int32_t *word, int op, int32_t value) {
  return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

int main(int argc, char **argv) {
  if (argc != 5 || (strcmp(argv[3], "wait") != 0 && strcmp(argv[3], "wake") != 0)) {
    fprintf(stderr, "usage: %s NAME INDEX wait|wake VALUE\n", argv[0]);
    return 2;
  }
  char path[NAME_MAX + 2];
  if (snprintf(path, sizeof path, "/%s", argv[1]) >= (int)sizeof path) {
    fprintf(stderr, "name too long: %s\n", argv[1]);
    return 2;
  }
  long index = strtol(argv[2], NULL, 10);
  int32_t value = (int32_t)strtol(argv[4], NULL, 10);
  int fd = shm_open(path, O_RDWR, 0);
  if (fd < 0) {
    fprintf(stderr, "shm_open %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || index < 0 || (index + 1) * 4 > st.st_size) {
    fprintf(stderr, "index %ld is outside the segment\n", index);
    return 1;
  }
  void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    fprintf(stderr, "mmap: %s\n", strerror(errno));
    return 1;
  }
  _Atomic int32_t *word = (_Atomic int32_t *)base + index;
  if (strcmp(argv[3], "wait") == 0) {
    printf("waiting\n");
    fflush(stdout);
    /* Sleep while the word holds VALUE: a wake without a change (or a
     * spurious one) just loops. */
    while (atomic_load(word) == value) {
      if (futex(word, FUTEX_WAIT, value) != 0 && errno != EAGAIN && errno != EINTR) {
        fprintf(stderr, "futex wait: %s\n", strerror(errno));
        return 1;
      }
    }
    printf("%d\n", (int)atomic_load(word));
  } else {
    atomic_store(word, value);
    long woken = futex(word, FUTEX_WAKE, INT_MAX);
    if (woken < 0) {
      fprintf(stderr, "futex wake: %s\n", strerror(errno));
      return 1;
    }
    printf("%ld\n", woken);
  }
  return 0;
}
