/* Checkpoints: write a mapping's pages to a file on the libuv thread pool,
 * hashing them on the way (XXH64), and hash files for verification.
 *
 * The worker never dereferences the source mapping itself: each chunk goes
 * from the mapping to the file with pwritev(2), and is read back from the page
 * cache with pread(2) to be hashed (and compared, for a delta against a base).
 * - Safety: the kernel's copy from user memory fails with EFAULT instead of
 *   raising SIGSEGV when the mapping was released meanwhile (close() leaves a
 *   PROT_NONE reservation there, and the caller keeps the ArrayBuffer
 *   reachable so the reservation cannot be reused).
 * - Consistency: the checksum covers exactly the bytes in the file.
 * - Snapshots: write(2) copies through the page tables, like a CPU load, so a
 *   page that a snapshot's fault handler is copying at that moment reads as
 *   either its old shared page or its private copy, both the frozen bytes.
 *   process_vm_readv(2) does not qualify: it pins the shared page first and
 *   copies from it later, and can see a write that lands in between. It is
 *   used only for the base mapping, which nobody writes.
 * The chunk read back is hot in cache, so the extra copy costs little next
 * to the disk, and for a full checkpoint it runs on a second thread, behind
 * the copy (see struct hasher).
 *
 * Why not hash straight from the mapping, saving the read-back? For a
 * snapshot the bytes would be the same: a page of it is either still the
 * shared page, whose writers stay blocked until the fault handler has copied
 * it into the snapshot, or the snapshot's private copy, and a CPU load sees
 * the frozen bytes in both. But the load would fault (SIGSEGV) where the
 * kernel's copy returns EFAULT, if the snapshot is released during the write
 * or another process truncates the region; a plain view (writeCheckpoint)
 * can change between the copy and the hash; and so can a page another
 * process writes through its own mapping, which no fault handler here sees.
 * Reading back keeps "the checksum is of the file's bytes" true in all of
 * these cases, and measured on 2 vCPUs the read-back costs about 0.03 s per
 * GiB, on the second CPU. */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- XXH64 -------------------------------------------------------------- */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

struct xxh64 {
  uint64_t v[4];
  uint64_t total;
  uint8_t buf[32];
  size_t nbuf;
};

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v; /* little-endian hosts only: Linux on x86-64 and arm64 */
}
static inline uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t xround(uint64_t acc, uint64_t in) {
  acc += in * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}
static inline uint64_t xmerge(uint64_t acc, uint64_t val) {
  acc ^= xround(0, val);
  return acc * P1 + P4;
}

static void xxh64_init(struct xxh64 *h) {
  h->v[0] = 0 + P1 + P2;
  h->v[1] = P2;
  h->v[2] = 0;
  h->v[3] = 0 - P1;
  h->total = 0;
  h->nbuf = 0;
}

static const uint8_t *stripes(uint64_t v[4], const uint8_t *p, const uint8_t *end) {
  uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
  while (p + 32 <= end) {
    a = xround(a, rd64(p));
    b = xround(b, rd64(p + 8));
    c = xround(c, rd64(p + 16));
    d = xround(d, rd64(p + 24));
    p += 32;
  }
  v[0] = a, v[1] = b, v[2] = c, v[3] = d;
  return p;
}

static void xxh64_update(struct xxh64 *h, const void *data, size_t len) {
  const uint8_t *p = data, *end = p + len;
  h->total += len;
  if (h->nbuf + len < 32) {
    memcpy(h->buf + h->nbuf, p, len);
    h->nbuf += len;
    return;
  }
  if (h->nbuf > 0) {
    size_t fill = 32 - h->nbuf;
    memcpy(h->buf + h->nbuf, p, fill);
    stripes(h->v, h->buf, h->buf + 32);
    p += fill;
    h->nbuf = 0;
  }
  p = stripes(h->v, p, end);
  h->nbuf = (size_t)(end - p);
  memcpy(h->buf, p, h->nbuf);
}

static uint64_t xxh64_final(const struct xxh64 *h) {
  uint64_t r;
  if (h->total >= 32) {
    r = rotl64(h->v[0], 1) + rotl64(h->v[1], 7) + rotl64(h->v[2], 12) + rotl64(h->v[3], 18);
    for (int i = 0; i < 4; i++) r = xmerge(r, h->v[i]);
  } else {
    r = h->v[2] + P5;
  }
  r += h->total;
  const uint8_t *p = h->buf, *end = h->buf + h->nbuf;
  while (p + 8 <= end) {
    r ^= xround(0, rd64(p));
    r = rotl64(r, 27) * P1 + P4;
    p += 8;
  }
  if (p + 4 <= end) {
    r ^= (uint64_t)rd32(p) * P1;
    r = rotl64(r, 23) * P2 + P3;
    p += 4;
  }
  while (p < end) {
    r ^= (*p) * P5;
    r = rotl64(r, 11) * P1;
    p++;
  }
  r ^= r >> 33;
  r *= P2;
  r ^= r >> 29;
  r *= P3;
  r ^= r >> 32;
  return r;
}

static napi_value hex64(napi_env env, uint64_t v) {
  char s[17];
  snprintf(s, sizeof s, "%016llx", (unsigned long long)v);
  napi_value out = NULL;
  napi_create_string_utf8(env, s, 16, &out);
  return out;
}

/* xxh64(typedArray) -> 16 hex digits */
static napi_value xxh64_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_typedarray_type type;
  size_t length;
  void *data;
  napi_value ab;
  size_t off;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &off) != napi_ok ||
      type != napi_uint8_array)
    return cowshm_throw_type(env, "cowshm internal error: expected a Uint8Array");
  struct xxh64 h;
  xxh64_init(&h);
  if (length > 0) xxh64_update(&h, data, length);
  return hex64(env, xxh64_final(&h));
}

#define CHUNK_BYTES ((size_t)1 << 20)

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* hashFile(fd, offset, length) -> 16 hex digits. pread, not mmap: a file
 * truncated under us is a clean error, never a SIGBUS. */
static napi_value hash_file_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  uint64_t off, len;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &off) || !cowshm_get_u64(env, argv[2], &len))
    return NULL;
  uint8_t *buf = malloc(CHUNK_BYTES);
  if (buf == NULL) return cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
  struct xxh64 h;
  xxh64_init(&h);
  while (len > 0) {
    size_t want = len < CHUNK_BYTES ? (size_t)len : CHUNK_BYTES;
    ssize_t n = RETRY(pread(fd, buf, want, (off_t)off));
    if (n < 0) {
      int err = errno;
      free(buf);
      return cowshm_throw_errno(env, err, "pread", NULL);
    }
    if (n == 0) {
      free(buf);
      cowshm_throw_code(env, "ERR_COWSHM_CHECKPOINT_TRUNCATED", "the file ended before its data did");
      return NULL;
    }
    xxh64_update(&h, buf, (size_t)n);
    off += (uint64_t)n;
    len -= (uint64_t)n;
  }
  free(buf);
  return hex64(env, xxh64_final(&h));
}

/* ---- the writer ---------------------------------------------------------- */

/* Shared by the worker and an Int32Array JS polls; freed by whichever lets go
 * last, so neither a collected array nor an environment torn down while the
 * worker runs leaves the other pointing at freed memory. */
struct ck_state {
  _Atomic int refs;
  int32_t v[2];
};

static void state_unref(struct ck_state *st) {
  if (atomic_fetch_sub(&st->refs, 1) == 1) free(st);
}

static void state_finalize(napi_env env, void *data, void *hint) { state_unref(hint); }

struct ck_work {
  napi_async_work work;
  napi_deferred deferred;
  struct ck_state *shared;
  int32_t *state; /* shared->v: [0] cancel request (set by JS), [1] pages examined so far */
  uint32_t *pages; /* candidate pages (a private copy), or NULL for every page in [0, npages) */
  size_t npages;
  int fd;
  uint64_t file_offset;
  double src_id, cmp_id;
  uintptr_t src, cmp; /* cmp == 0: no comparison */
  size_t src_len, cmp_len;
  size_t page;
  /* results */
  int err;
  const char *syscall;
  uint64_t hash;
  uint32_t *kept;
  size_t nkept;
};

/* The iovecs for `n` (at most 256) pages listed in idx of the mapping at
 * base, runs of consecutive pages merged into one. Returns how many. */
static size_t page_iovecs(uintptr_t base, size_t page, const uint32_t *idx, size_t n, struct iovec iov[256]) {
  size_t niov = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = base + (uintptr_t)idx[i] * page;
    if (niov > 0 && (uintptr_t)iov[niov - 1].iov_base + iov[niov - 1].iov_len == a) {
      iov[niov - 1].iov_len += page;
    } else {
      iov[niov].iov_base = (void *)a;
      iov[niov].iov_len = page;
      niov++;
    }
  }
  return niov;
}

/* Copies `n` pages listed in idx from the mapping at base into dst, with the
 * kernel doing the reads. Returns 0 or an errno. */
static int read_pages(uintptr_t base, size_t page, const uint32_t *idx, size_t n, uint8_t *dst) {
  struct iovec local = {dst, n * page};
  struct iovec remote[256];
  size_t nr = page_iovecs(base, page, idx, n, remote);
  size_t want = n * page;
  ssize_t got = RETRY(process_vm_readv(getpid(), &local, 1, remote, nr, 0));
  if (got < 0) return errno;
  return (size_t)got == want ? 0 : EFAULT;
}

/* Writes `n` pages listed in idx from the mapping at base to fd at off. */
static int write_pages(int fd, uintptr_t base, size_t page, const uint32_t *idx, size_t n, uint64_t off,
                       int populated) {
  struct iovec iov[256];
  size_t niov = page_iovecs(base, page, idx, n, iov);
  /* Map the pages first: write(2) copies from user memory with page faults
   * disabled and faults in one page per retry, several times slower than a
   * batched populate on a fresh mapping (a new snapshot has no page tables
   * yet). A released range fails here too, with EFAULT or ENOMEM. */
  for (size_t i = 0; i < niov && !populated; i++) {
    if (RETRY(madvise(iov[i].iov_base, iov[i].iov_len, MADV_POPULATE_READ)) != 0) {
      if (errno == EINVAL) break; /* kernel older than 5.14: the write faults the pages in itself */
      return errno == ENOMEM ? EFAULT : errno;
    }
  }
  struct iovec *v = iov;
  while (niov > 0) {
    ssize_t w = RETRY(pwritev(fd, v, (int)niov, (off_t)off));
    if (w < 0) return errno;
    if (w == 0) return EIO;
    off += (uint64_t)w;
    size_t left = (size_t)w;
    while (niov > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      v++;
      niov--;
    }
    if (niov > 0) {
      v->iov_base = (uint8_t *)v->iov_base + left;
      v->iov_len -= left;
    }
  }
  return 0;
}

static int read_back(int fd, uint8_t *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t r = RETRY(pread(fd, p, n, (off_t)off));
    if (r < 0) return errno;
    if (r == 0) return EIO;
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = RETRY(pwrite(fd, p, n, (off_t)off));
    if (w < 0) return errno;
    if (w == 0) return EIO;
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

static int mapping_alive(double id) {
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  return s != NULL && atomic_load(&s->state) == SLOT_MAPPED;
}

/* Starts the disk writing what [*kicked, pos) left dirty now, while the
 * next chunks are copied, instead of leaving all of it to the final fsync:
 * the copy and the disk overlap, and the fsync is left with little to do.
 * Only a hint: durability still comes from the fsync, which also reports any
 * writeback error, so a refusal (a file system without it) just ends the
 * hints. */
static void kick_writeback(int fd, uint64_t *kicked, uint64_t pos, int *kick) {
  if (!*kick || pos <= *kicked) return;
  if (RETRY(sync_file_range(fd, (off_t)*kicked, (off_t)(pos - *kicked), SYNC_FILE_RANGE_WRITE)) != 0) *kick = 0;
  *kicked = pos;
}

/* The hasher of a full checkpoint: a second thread that reads back and
 * hashes what the writer has finished, chunk by chunk and in order, and
 * starts its writeback. Same bytes, same order, same checksum as doing it
 * inline; but the copy into the file and the read-back-and-hash run on two
 * CPUs at once. The writer publishes `ready` (bytes of the file that are
 * final) and `fin` (nothing more will come); either side can set `stop`. */
struct hasher {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fd;
  uint64_t pos, ready;
  int fin, stop;
  int err;
  const char *syscall;
  struct xxh64 h;
  uint8_t *buf;
  size_t bufsize;
};

/* The hasher and the populater run at nice 19, below the writer's +10: on an
 * idle machine they still have a CPU to themselves, but when the
 * application's threads want both CPUs they get almost nothing, and the
 * checkpoint takes longer instead. Measured on 2 vCPUs (bench/checkpoint,
 * 1 GiB), a worker writing to a 64 MiB hot set during the checkpoint kept
 * 0.60x its speed alone, as with the single writer thread before them; with
 * both helpers at +10 it kept 0.44-0.71x, for a checkpoint 15% faster when
 * idle. SCHED_IDLE protected the worker as well but made the idle checkpoint
 * slower still. Best effort, like the writer's nice value. */
static void helper_priority(void) {
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
}

static void *hasher_thread(void *data) {
  struct hasher *hs = data;
  helper_priority();
  uint64_t kicked = hs->pos;
  int kick = 1;
  for (;;) {
    pthread_mutex_lock(&hs->mu);
    while (hs->ready == hs->pos && !hs->fin && !hs->stop) pthread_cond_wait(&hs->cv, &hs->mu);
    uint64_t ready = hs->ready;
    int stop = hs->stop, fin = hs->fin;
    pthread_mutex_unlock(&hs->mu);
    if (stop || (fin && ready == hs->pos)) break;
    while (hs->pos < ready) {
      size_t n = ready - hs->pos < hs->bufsize ? (size_t)(ready - hs->pos) : hs->bufsize;
      int err = read_back(hs->fd, hs->buf, n, hs->pos);
      if (err != 0) {
        pthread_mutex_lock(&hs->mu);
        hs->err = err, hs->syscall = "pread", hs->stop = 1;
        pthread_mutex_unlock(&hs->mu);
        return NULL;
      }
      xxh64_update(&hs->h, hs->buf, n);
      hs->pos += n;
    }
    kick_writeback(hs->fd, &kicked, hs->pos, &kick);
  }
  return NULL;
}

/* Tells the hasher how far the file is final; returns its error, if any. */
static int hasher_publish(struct hasher *hs, uint64_t ready, int fin, int stop) {
  pthread_mutex_lock(&hs->mu);
  hs->ready = ready;
  hs->fin |= fin;
  hs->stop |= stop;
  int err = hs->err;
  pthread_cond_signal(&hs->cv);
  pthread_mutex_unlock(&hs->mu);
  return err;
}

/* The populater of a full checkpoint: fills the source's page tables ahead
 * of the writer (MADV_POPULATE_READ, a tenth of a second per GiB on a fresh
 * snapshot), on the other CPU, so that the writer's pwritev finds every page
 * mapped. `upto` (bytes from the start of the mapping) is how far it got;
 * the writer populates what is beyond that itself, as without it. A failure
 * (a released mapping, a kernel without MADV_POPULATE_READ) just ends it:
 * the writer's own populate reports what matters. */
struct populater {
  uintptr_t start;
  size_t len;
  _Atomic size_t upto;
  _Atomic int stop;
};

static void *populater_thread(void *data) {
  struct populater *pp = data;
  helper_priority();
  for (size_t off = 0; off < pp->len && !atomic_load_explicit(&pp->stop, memory_order_relaxed);) {
    size_t n = pp->len - off < CHUNK_BYTES ? pp->len - off : CHUNK_BYTES;
    if (RETRY(madvise((void *)(pp->start + off), n, MADV_POPULATE_READ)) != 0) break;
    off += n;
    atomic_store_explicit(&pp->upto, off, memory_order_release);
  }
  return NULL;
}

static void run_writer(struct ck_work *w) {
  size_t page = w->page, per = CHUNK_BYTES / page;
  if (per > 256) per = 256;
  uint8_t *buf = malloc(per * page), *cbuf = w->cmp ? malloc(per * page) : NULL;
  uint32_t idx[256];
  struct hasher hs;
  pthread_t ht, pt;
  int hashing = 0; /* the hasher thread runs */
  struct populater pp = {.start = w->src, .len = w->npages * page};
  int populating = 0; /* the populater thread runs */
  if (buf == NULL || (w->cmp && cbuf == NULL)) {
    w->err = ENOMEM, w->syscall = "malloc";
    goto out;
  }
  if (w->cmp) {
    w->kept = malloc((w->npages ? w->npages : 1) * sizeof *w->kept);
    if (w->kept == NULL) {
      w->err = ENOMEM, w->syscall = "malloc";
      goto out;
    }
  }
  struct xxh64 h;
  xxh64_init(&h);
  uint64_t pos = w->file_offset, kicked = pos;
  int kick = 1;
  /* A delta decides what to keep from the bytes read back, so it reads them
   * itself. Without a second thread, a full checkpoint does so too. */
  if (!w->cmp && pthread_mutex_init(&hs.mu, NULL) == 0) {
    if (pthread_cond_init(&hs.cv, NULL) == 0) {
      hs.fd = w->fd, hs.pos = hs.ready = pos, hs.fin = hs.stop = 0, hs.err = 0, hs.syscall = NULL;
      xxh64_init(&hs.h);
      hs.buf = buf, hs.bufsize = per * page;
      if (pthread_create(&ht, NULL, hasher_thread, &hs) == 0) hashing = 1;
      if (!hashing) pthread_cond_destroy(&hs.cv);
    }
    if (!hashing) pthread_mutex_destroy(&hs.mu);
  }
  if (hashing && w->pages == NULL && pthread_create(&pt, NULL, populater_thread, &pp) == 0) populating = 1;
  for (size_t done = 0; done < w->npages;) {
    if (__atomic_load_n(&w->state[0], __ATOMIC_RELAXED)) {
      w->err = ECANCELED, w->syscall = "cancel";
      goto out;
    }
    size_t n = w->npages - done < per ? w->npages - done : per;
    for (size_t i = 0; i < n; i++) idx[i] = w->pages ? w->pages[done + i] : (uint32_t)(done + i);
    /* A released source reads as EFAULT below; checking first gives the
     * clearer error in the common case. */
    if (!mapping_alive(w->src_id) || (w->cmp && !mapping_alive(w->cmp_id))) {
      w->err = ESRCH, w->syscall = "released";
      goto out;
    }
    /* Pages in order from 0 when populating: chunk [done, done + n). */
    int ahead = populating && atomic_load_explicit(&pp.upto, memory_order_acquire) >= (done + n) * page;
    int err = write_pages(w->fd, w->src, page, idx, n, pos, ahead);
    if (err != 0) {
      w->err = err, w->syscall = err == EFAULT ? "released" : "pwritev";
      goto out;
    }
    if (hashing) {
      pos += n * page;
      done += n;
      __atomic_store_n(&w->state[1], (int32_t)done, __ATOMIC_RELAXED);
      err = hasher_publish(&hs, pos, 0, 0);
      if (err != 0) goto out; /* reported below, from the hasher */
      continue;
    }
    err = read_back(w->fd, buf, n * page, pos);
    if (err != 0) {
      w->err = err, w->syscall = "pread";
      goto out;
    }
    size_t keep = n;
    if (w->cmp) {
      err = read_pages(w->cmp, page, idx, n, cbuf);
      if (err != 0) {
        w->err = err, w->syscall = err == EFAULT ? "released" : "process_vm_readv";
        goto out;
      }
      /* Keep only pages that differ from the base, compacted in place. */
      keep = 0;
      for (size_t i = 0; i < n; i++) {
        if (memcmp(buf + i * page, cbuf + i * page, page) == 0) continue;
        if (keep != i) memcpy(buf + keep * page, buf + i * page, page);
        w->kept[w->nkept++] = idx[i];
        keep++;
      }
      if (keep > 0 && keep < n) {
        err = write_all(w->fd, buf, keep * page, pos);
        if (err != 0) {
          w->err = err, w->syscall = "pwrite";
          goto out;
        }
      }
    }
    if (keep > 0) {
      xxh64_update(&h, buf, keep * page);
      pos += keep * page;
    }
    done += n;
    __atomic_store_n(&w->state[1], (int32_t)done, __ATOMIC_RELAXED);
    kick_writeback(w->fd, &kicked, pos, &kick);
  }
  if (hashing) {
    hasher_publish(&hs, pos, 1, 0);
    pthread_join(ht, NULL);
    hashing = 0;
    if (hs.err != 0) {
      w->err = hs.err, w->syscall = hs.syscall;
    } else {
      w->hash = xxh64_final(&hs.h);
    }
    pthread_cond_destroy(&hs.cv);
    pthread_mutex_destroy(&hs.mu);
    goto out;
  }
  w->hash = xxh64_final(&h);
out:
  if (populating) {
    atomic_store(&pp.stop, 1);
    pthread_join(pt, NULL);
  }
  if (hashing) {
    /* Stopped early: by an error of the writer, a cancel, or the hasher's own error. */
    hasher_publish(&hs, hs.ready, 0, 1);
    pthread_join(ht, NULL);
    if (w->err == 0) w->err = hs.err, w->syscall = hs.syscall;
    pthread_cond_destroy(&hs.cv);
    pthread_mutex_destroy(&hs.mu);
  }
  free(buf);
  free(cbuf);
}

/* The copy runs in a thread of its own at a lower priority (nice +10) than
 * the application's threads: when CPUs are short, the threads writing to the
 * region go first and the checkpoint takes longer, which is the trade a
 * background checkpoint should make. Measured on 2 vCPUs, a worker writing to
 * a hot set kept its full speed instead of about half. A thread of its own
 * because Linux lets a thread raise its nice value but not lower it again
 * without CAP_SYS_NICE, and the pool's threads serve everything else too. */
#define WRITER_NICE 10

static void *writer_thread(void *data) {
  /* Best effort: at the default priority the checkpoint is still correct. */
  int now = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), now + WRITER_NICE > 19 ? 19 : now + WRITER_NICE);
  run_writer(data);
  return NULL;
}

static void ck_execute(napi_env env, void *data) {
  pthread_t t;
  if (pthread_create(&t, NULL, writer_thread, data) == 0)
    pthread_join(t, NULL);
  else
    run_writer(data);
}

static void ck_complete(napi_env env, napi_status status, void *data) {
  struct ck_work *w = data;
  napi_value result = NULL, err = NULL;
  if (status == napi_ok && w->err == 0) {
    napi_value kept;
    if (w->cmp) {
      void *out = NULL;
      napi_value ab;
      if (napi_create_arraybuffer(env, w->nkept * sizeof(uint32_t), &out, &ab) == napi_ok) {
        if (w->nkept) memcpy(out, w->kept, w->nkept * sizeof(uint32_t));
        napi_create_typedarray(env, napi_uint32_array, w->nkept, ab, 0, &kept);
      } else {
        napi_get_null(env, &kept);
      }
    } else {
      napi_get_null(env, &kept);
    }
    napi_create_array_with_length(env, 2, &result);
    napi_set_element(env, result, 0, hex64(env, w->hash));
    napi_set_element(env, result, 1, kept);
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    if (w->err == ECANCELED) {
      napi_value msg, code;
      napi_create_string_utf8(env, "The operation was aborted", NAPI_AUTO_LENGTH, &msg);
      napi_create_string_utf8(env, "ABORT_ERR", NAPI_AUTO_LENGTH, &code);
      napi_create_error(env, code, msg, &err);
    } else if (w->err == ESRCH || (w->err == EFAULT && strcmp(w->syscall, "released") == 0)) {
      napi_value msg, code;
      napi_create_string_utf8(env,
                              "the mapping being written was released before the checkpoint was complete; "
                              "release a snapshot only after its writeTo() has settled",
                              NAPI_AUTO_LENGTH, &msg);
      napi_create_string_utf8(env, "ERR_COWSHM_CLOSED", NAPI_AUTO_LENGTH, &code);
      napi_create_error(env, code, msg, &err);
    } else {
      cowshm_throw_errno(env, status != napi_ok ? EIO : w->err, status != napi_ok ? "async work" : w->syscall,
                         NULL);
      napi_get_and_clear_last_exception(env, &err);
    }
    napi_reject_deferred(env, w->deferred, err);
  }
  napi_delete_async_work(env, w->work);
  state_unref(w->shared);
  free(w->pages);
  free(w->kept);
  free(w);
}

static int get_u32_array(napi_env env, napi_value v, const uint32_t **out, size_t *len) {
  napi_typedarray_type type;
  void *data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, &data, &ab, &off) != napi_ok || type != napi_uint32_array) {
    cowshm_throw_type(env, "cowshm internal error: expected a Uint32Array");
    return 0;
  }
  *out = data;
  return 1;
}

/* writePages(fd, fileOffset, srcId, pages: Uint32Array | null, pageCount, cmpId)
 *   -> [Promise<[hashHex, keptPages: Uint32Array | null]>, state: Int32Array]
 * Writes the listed pages of mapping srcId (every page in [0, pageCount) when
 * pages is null) back to back from fileOffset. With cmpId >= 0, only pages
 * that differ from the same page of mapping cmpId are written, and the
 * result lists them. state[0] = 1 (Atomics.store) cancels; state[1] counts
 * the pages examined so far. The caller keeps both mappings' ArrayBuffers
 * reachable until the promise settles. */
static napi_value write_pages_js(napi_env env, napi_callback_info info) {
  napi_value argv[6], promise, name, result, ab, arr;
  int32_t fd;
  uint64_t off, count;
  double src_id, cmp_id;
  if (!cowshm_args(env, info, 6, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &off) || !cowshm_get_u64(env, argv[4], &count))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[2], &src_id));
  NAPI_OK(env, napi_get_value_double(env, argv[5], &cmp_id));
  struct ck_work *w = calloc(1, sizeof *w);
  if (w == NULL) return cowshm_throw_errno(env, ENOMEM, "calloc", NULL);
  w->fd = fd;
  w->file_offset = off;
  w->page = cowshm_page_size;
  w->src_id = src_id;
  w->cmp_id = cmp_id;

  napi_valuetype t;
  if (napi_typeof(env, argv[3], &t) != napi_ok) goto napi_fail;
  if (t == napi_null) {
    w->npages = count;
  } else {
    const uint32_t *list;
    if (!get_u32_array(env, argv[3], &list, &w->npages)) goto fail;
    w->pages = malloc((w->npages ? w->npages : 1) * sizeof *w->pages);
    if (w->pages == NULL) {
      cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
      goto fail;
    }
    if (w->npages) memcpy(w->pages, list, w->npages * sizeof *w->pages);
  }

  cowshm_registry_lock();
  struct cowshm_slot *s = cowshm_slot_by_id(src_id);
  int ok = s != NULL && atomic_load(&s->state) == SLOT_MAPPED;
  if (ok) w->src = s->start, w->src_len = s->len;
  struct cowshm_slot *c = cmp_id >= 0 ? cowshm_slot_by_id(cmp_id) : NULL;
  if (cmp_id >= 0) {
    ok = ok && c != NULL && atomic_load(&c->state) == SLOT_MAPPED;
    if (ok) w->cmp = c->start, w->cmp_len = c->len;
  }
  cowshm_registry_unlock();
  if (!ok) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the mapping to write is closed");
    goto fail;
  }
  size_t limit = w->src_len / w->page;
  if (w->cmp && w->cmp_len / w->page < limit) limit = w->cmp_len / w->page;
  for (size_t i = 0; i < w->npages; i++) {
    size_t p = w->pages ? w->pages[i] : i;
    if (p >= limit || (w->pages && i > 0 && w->pages[i] <= w->pages[i - 1])) {
      cowshm_throw_range(env, "cowshm internal error: page list out of range or not increasing");
      goto fail;
    }
  }

  w->shared = calloc(1, sizeof *w->shared);
  if (w->shared == NULL) {
    cowshm_throw_errno(env, ENOMEM, "calloc", NULL);
    goto fail;
  }
  atomic_store(&w->shared->refs, 1);
  w->state = w->shared->v;
  if (napi_create_external_arraybuffer(env, w->shared->v, sizeof w->shared->v, state_finalize, w->shared, &ab) !=
      napi_ok)
    goto napi_fail;
  atomic_fetch_add(&w->shared->refs, 1); /* the ArrayBuffer's */
  if (napi_create_typedarray(env, napi_int32_array, 2, ab, 0, &arr) != napi_ok ||
      napi_create_string_utf8(env, "cowshm.checkpoint", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, ck_execute, ck_complete, w, &w->work) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_array_with_length(env, 2, &result) != napi_ok ||
      napi_set_element(env, result, 0, promise) != napi_ok || napi_set_element(env, result, 1, arr) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok)
    goto napi_fail;
  return result;
napi_fail:
  cowshm_throw_napi_failure(env, "queueing the checkpoint writer", __FILE__, __LINE__);
fail:
  if (w->work) napi_delete_async_work(env, w->work);
  if (w->shared) state_unref(w->shared);
  free(w->pages);
  free(w);
  return NULL;
}

napi_value cowshm_init_checkpoint(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"xxh64", NULL, xxh64_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashFile", NULL, hash_file_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writePages", NULL, write_pages_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
