/* A minimal io_uring over raw syscalls (no liburing): set up one ring, fill
 * SQEs, submit, take CQEs. The ring belongs to one thread's caller, who
 * serialises every call (futex.c holds its ring lock). */
#include "uring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef IORING_SQ_CQ_OVERFLOW
#define IORING_SQ_CQ_OVERFLOW (1U << 1)
#endif

int uring_init(struct uring *r, unsigned sq_entries, unsigned cq_entries) {
  struct io_uring_params p;
  memset(r, 0, sizeof *r);
  r->fd = -1;
  r->registered = -1;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
  p.cq_entries = cq_entries;
  int fd = (int)syscall(__NR_io_uring_setup, sq_entries, &p);
  if (fd < 0) return errno;
  r->fd = fd;
  r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
  r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (r->sq_map == MAP_FAILED) goto fail;
  if (single) {
    r->cq_map = r->sq_map;
  } else {
    r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (r->cq_map == MAP_FAILED) goto fail;
  }
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) goto fail;
  char *sq = r->sq_map, *cq = r->cq_map;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_flags = (unsigned *)(sq + p.sq_off.flags);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_entries = p.sq_entries;
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  /* Refused before 5.18 (EINVAL) or with the thread's table full: the
   * descriptor works as well, one lookup per call slower. */
  struct io_uring_rsrc_update reg = {.offset = -1U, .data = (uint64_t)fd};
  if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_RING_FDS, &reg, 1) == 1) {
    r->registered = (int)reg.offset;
    r->owner = pthread_self();
  }
  return 0;
fail: {
  int err = errno;
  uring_exit(r);
  return err;
}
}

struct io_uring_sqe *uring_sqe(struct uring *r) {
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned tail = *r->sq_tail + r->queued;
  if (tail - head >= r->sq_entries) return NULL;
  unsigned i = tail & r->sq_mask;
  struct io_uring_sqe *sqe = &r->sqes[i];
  memset(sqe, 0, sizeof *sqe);
  r->sq_array[i] = i;
  /* Published to the kernel (release) only once filled: by uring_submit. */
  r->queued++;
  return sqe;
}

void uring_withdraw(struct uring *r) { r->queued = 0; }

int uring_submit(struct uring *r, int wait) {
  unsigned tail = *r->sq_tail;
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned n = tail + r->queued - head; /* with any an earlier short submit left */
  __atomic_store_n(r->sq_tail, tail + r->queued, __ATOMIC_RELEASE);
  r->queued = 0;
  /* The registered index means this ring only in the thread that registered it. */
  int own = r->registered >= 0 && pthread_equal(pthread_self(), r->owner);
  for (;;) {
    unsigned flags = wait || uring_overflowed(r) ? IORING_ENTER_GETEVENTS : 0;
    long done = own ? syscall(__NR_io_uring_enter, r->registered, n, wait ? 1 : 0, flags | IORING_ENTER_REGISTERED_RING, NULL, 0)
                    : syscall(__NR_io_uring_enter, r->fd, n, wait ? 1 : 0, flags, NULL, 0);
    if (done >= 0) {
      n -= (unsigned)done > n ? n : (unsigned)done;
      if (n == 0 || done == 0) return 0; /* the rest (if any) goes with the next call */
      continue;
    }
    int err = errno;
    if (err == EINTR) {
      if (wait) return 0; /* the caller looks at the CQ again */
      continue;
    }
    /* Nothing was taken: take the SQEs back (the kernel reads the tail
     * only inside io_uring_enter, and there is no SQ polling thread). */
    if (__atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE) == head) {
      __atomic_store_n(r->sq_tail, head, __ATOMIC_RELEASE);
      return err;
    }
    return 0;
  }
}

int uring_cqe(struct uring *r, struct io_uring_cqe *out) {
  unsigned head = *r->cq_head;
  if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return 0;
  *out = r->cqes[head & r->cq_mask];
  __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
  return 1;
}

int uring_overflowed(const struct uring *r) {
  return r->sq_flags != NULL && (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW) != 0;
}

void uring_exit(struct uring *r) {
  /* Another thread's exit leaves the registration to the owner's end (the
   * kernel drops it then): unregistering is for the owner only. */
  if (r->registered >= 0 && pthread_equal(pthread_self(), r->owner)) {
    struct io_uring_rsrc_update reg = {.offset = (unsigned)r->registered};
    syscall(__NR_io_uring_register, r->fd, IORING_UNREGISTER_RING_FDS, &reg, 1);
  }
  if (r->sqes != NULL && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
  if (r->cq_map != NULL && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map != NULL && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
  if (r->fd > 0) close(r->fd);
  memset(r, 0, sizeof *r);
  r->fd = -1;
  r->registered = -1;
}
