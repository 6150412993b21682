/* A minimal io_uring: one ring, raw syscalls, only what futex.c needs. */
#ifndef COWSHM_URING_H
#define COWSHM_URING_H

#include <linux/io_uring.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Newer than some installed headers: the values are the kernel's ABI. */
#define COWSHM_IORING_OP_FUTEX_WAIT 51 /* Linux 6.7 */
#define COWSHM_FUTEX2_SIZE_U32 0x02
#define COWSHM_FUTEX2_PRIVATE 128
#define COWSHM_FUTEX_BITSET_MATCH_ANY 0xffffffffu

struct uring {
  int fd;
  unsigned *sq_head, *sq_tail, *sq_flags, *sq_array;
  unsigned sq_mask, sq_entries;
  unsigned *cq_head, *cq_tail;
  unsigned cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
  unsigned queued; /* SQEs filled but not yet handed to the kernel */
  /* The ring registered with the thread that set it up (Linux 5.18): its
   * io_uring_enter calls pass this index instead of the descriptor, which
   * the kernel then need not look up and reference on every call. */
  int registered;  /* -1: not registered */
  pthread_t owner;
};

/* 0, or the errno of io_uring_setup/mmap (the ring is then unusable). The
 * calling thread's calls to uring_submit use the registered ring where the
 * kernel allows it; other threads' the descriptor. */
int uring_init(struct uring *r, unsigned sq_entries, unsigned cq_entries);
/* A zeroed SQE to fill, or NULL when the submission queue is full. */
struct io_uring_sqe *uring_sqe(struct uring *r);
/* Forgets the SQEs taken since the last submit. */
void uring_withdraw(struct uring *r);
/* Hands the queued SQEs to the kernel (and, with `wait`, sleeps until one
 * completion is there). Returns 0, or an errno when the kernel took none of
 * them (they are then taken back). */
int uring_submit(struct uring *r, int wait);
/* Takes the oldest completion: 1 and *out filled, or 0 when there is none. */
int uring_cqe(struct uring *r, struct io_uring_cqe *out);
/* Whether completions wait in the kernel's overflow list (flush with uring_submit). */
int uring_overflowed(const struct uring *r);
void uring_exit(struct uring *r);

#endif
