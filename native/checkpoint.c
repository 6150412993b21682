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
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

/* XXH64 (seed 0) is the format's checksum: xxHash's own single-header
 * release, vendored with its license (native/vendor/xxhash/README.md), and
 * compiled into this file only, so the addon needs no library at run time.
 * Only XXH32/XXH64 are needed: XXH_NO_XXH3 leaves the rest out. */
#define XXH_INLINE_ALL
#define XXH_NO_XXH3
#include "vendor/xxhash/xxhash.h"

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
  /* The streaming form: faster than the one-shot XXH64() with this compiler. */
  XXH64_state_t h;
  XXH64_reset(&h, 0);
  if (length > 0) XXH64_update(&h, data, length);
  return hex64(env, XXH64_digest(&h));
}

/* zeroPages(bytes: Uint8Array, pageSize, out: Uint8Array) -> count: out[i] = 1
 * where page i of bytes (whole pages only; a partial last page is never zero
 * here) holds only zero bytes. What restoring a stream leaves as a hole. */
static napi_value zero_pages_js(napi_env env, napi_callback_info info) {
  napi_value argv[3], ab;
  napi_typedarray_type type;
  size_t length, olength, off;
  void *data, *odata;
  uint32_t page;
  if (!cowshm_args(env, info, 3, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &off) != napi_ok || type != napi_uint8_array ||
      napi_get_value_uint32(env, argv[1], &page) != napi_ok || page == 0 ||
      napi_get_typedarray_info(env, argv[2], &type, &olength, &odata, &ab, &off) != napi_ok || type != napi_uint8_array)
    return cowshm_throw_type(env, "cowshm internal error: expected (Uint8Array, page size, Uint8Array)");
  size_t pages = length / page;
  if (olength < pages) return cowshm_throw_range(env, "cowshm internal error: zeroPages output too short");
  const uint8_t *b = data;
  uint8_t *o = odata;
  size_t count = 0;
  for (size_t i = 0; i < pages; i++) {
    const uint8_t *p = b + i * page;
    /* Zero iff the first byte is and every byte equals the one before. */
    o[i] = p[0] == 0 && memcmp(p, p + 1, page - 1) == 0;
    count += o[i];
  }
  return cowshm_num(env, (double)count);
}

/* An incremental XXH64 for data that arrives in pieces (a checkpoint stream
 * being restored). xxh64Init() -> Uint8Array holding a fresh XXH64_state_t;
 * xxh64Update(state, typedArray | null) -> 16 hex digits: the digest of
 * everything given so far. The state is plain bytes: a state JS corrupted
 * only gives a wrong digest. */
static napi_value xxh64_init_js(napi_env env, napi_callback_info info) {
  void *data = NULL;
  napi_value ab, arr;
  NAPI_OK(env, napi_create_arraybuffer(env, sizeof(XXH64_state_t), &data, &ab));
  XXH64_state_t h;
  XXH64_reset(&h, 0);
  memcpy(data, &h, sizeof h);
  NAPI_OK(env, napi_create_typedarray(env, napi_uint8_array, sizeof h, ab, 0, &arr));
  return arr;
}

static napi_value xxh64_update_js(napi_env env, napi_callback_info info) {
  napi_value argv[2], ab;
  napi_typedarray_type type;
  size_t slen, length = 0, off;
  void *sdata, *data = NULL;
  if (!cowshm_args(env, info, 2, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &slen, &sdata, &ab, &off) != napi_ok || type != napi_uint8_array ||
      slen != sizeof(XXH64_state_t))
    return cowshm_throw_type(env, "cowshm internal error: expected an xxh64 state");
  napi_valuetype t;
  NAPI_OK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_null && (napi_get_typedarray_info(env, argv[1], &type, &length, &data, &ab, &off) != napi_ok ||
                         type != napi_uint8_array))
    return cowshm_throw_type(env, "cowshm internal error: expected a Uint8Array");
  XXH64_state_t h; /* copied: the JS bytes need not be aligned */
  memcpy(&h, sdata, sizeof h);
  if (length > 0) XXH64_update(&h, data, length);
  memcpy(sdata, &h, sizeof h);
  return hex64(env, XXH64_digest(&h));
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
  XXH64_state_t h;
  XXH64_reset(&h, 0);
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
    XXH64_update(&h, buf, (size_t)n);
    off += (uint64_t)n;
    len -= (uint64_t)n;
  }
  free(buf);
  return hex64(env, XXH64_digest(&h));
}

/* ---- temporaries ----------------------------------------------------------
 *
 * A checkpoint is written to a temporary file beside its target and renamed
 * over it when complete. Its writer holds an exclusive OFD lock on the whole
 * temporary for as long as it exists (see locks.c): the kernel drops it when
 * the writer's descriptor goes, in whatever pid namespace or host the writer
 * runs, so anyone who can take a lock on a temporary knows its writer is gone
 * and may remove it (write.ts). Nothing else decides that, not the pid in the
 * name nor the file's age.
 *
 * The lock cannot be taken in the same step as the create: a cleaner may open
 * the new file and take its own lock in between, then remove it. So after
 * locking, the writer checks that its file still has a name (st_nlink > 0);
 * if either step lost, it closes and tries another name (-1 to JS).
 *
 * Each temporary is also registered with its environment: a worker ended by
 * terminate() never runs the JS that removes it, so the environment's cleanup
 * hook removes it then (after Node has waited for the writer's thread-pool
 * work, so nothing writes to it any more) and closes its descriptor. */

struct temp {
  struct temp *next;
  napi_env env;
  int fd;
  char path[];
};

static pthread_mutex_t temps_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct temp *temps;

static void temp_unlist(struct temp *t) {
  pthread_mutex_lock(&temps_mutex);
  for (struct temp **pp = &temps; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == t) {
      *pp = t->next;
      break;
    }
  }
  pthread_mutex_unlock(&temps_mutex);
}

/* The environment ends with the temporary still there: its JS is gone. */
static void temp_cleanup(void *arg) {
  struct temp *t = arg;
  temp_unlist(t);
  unlink(t->path); /* ENOENT: renamed into place just before the end */
  close(t->fd);
  free(t);
}

/* tempCreate(path, mode) -> fd, or -1 when this name lost a race with a
 * cleaner (try another). The file is created (O_EXCL), locked and registered. */
static napi_value temp_create_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_MAX + 1];
  int32_t mode;
  if (!cowshm_args(env, info, 2, argv) || !cowshm_get_str(env, argv[0], path, sizeof path) ||
      !cowshm_get_i32(env, argv[1], &mode))
    return NULL;
  size_t len = strlen(path);
  struct temp *t = malloc(sizeof *t + len + 1);
  if (t == NULL) return cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
  memcpy(t->path, path, len + 1);
  int fd = RETRY(open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode));
  if (fd < 0) {
    int err = errno;
    free(t);
    return cowshm_throw_errno(env, err, "open", path);
  }
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
  struct stat st;
  if (RETRY(fcntl(fd, F_OFD_SETLK, &fl)) != 0) {
    int err = errno;
    close(fd);
    free(t);
    if (err == EAGAIN || err == EACCES) return cowshm_num(env, -1); /* a cleaner holds it: it removes it */
    unlink(path);
    return cowshm_throw_errno(env, err, "fcntl", path);
  }
  if (fstat(fd, &st) != 0 || st.st_nlink == 0) {
    close(fd); /* removed by a cleaner between the create and the lock */
    free(t);
    return cowshm_num(env, -1);
  }
  t->env = env;
  t->fd = fd;
  if (napi_add_env_cleanup_hook(env, temp_cleanup, t) != napi_ok) {
    unlink(path);
    close(fd);
    free(t);
    cowshm_throw_napi_failure(env, "registering a checkpoint's temporary file", __FILE__, __LINE__);
    return NULL;
  }
  pthread_mutex_lock(&temps_mutex);
  t->next = temps;
  temps = t;
  pthread_mutex_unlock(&temps_mutex);
  return cowshm_num(env, fd);
}

/* tempRelease(fd, remove): closes a temporary made by tempCreate (and so
 * drops its lock), removing it first when `remove` (it was not renamed). */
static napi_value temp_release_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, remove;
  if (!cowshm_args(env, info, 2, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_i32(env, argv[1], &remove))
    return NULL;
  struct temp *t = NULL;
  pthread_mutex_lock(&temps_mutex);
  for (struct temp **pp = &temps; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->fd == fd && (*pp)->env == env) {
      t = *pp;
      *pp = t->next;
      break;
    }
  }
  pthread_mutex_unlock(&temps_mutex);
  if (t == NULL) return cowshm_throw_range(env, "cowshm internal error: not a checkpoint temporary");
  napi_remove_env_cleanup_hook(env, temp_cleanup, t);
  int err = 0;
  /* Removed while still locked: no cleaner can take it for another's. */
  if (remove && unlink(t->path) != 0 && errno != ENOENT) err = errno;
  close(t->fd); /* Linux releases the descriptor even when close fails */
  free(t);
  if (err != 0) return cowshm_throw_errno(env, err, "unlink", NULL);
  return cowshm_undefined(env);
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
  /* full writer: the source region's file, to skip its holes (-1: none), and
   * the pages copied into the snapshot (ascending, may be NULL) */
  int holes_fd;
  uint32_t *copied;
  size_t ncopied;
  /* streams (streamPages): mode 1 scans (hash, and with cmp the pages that
   * differ), mode 2 copies listed pages [first, first + npages) into dst */
  int mode;
  size_t first;
  uint8_t *dst;
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

/* Writes `n` pages listed in idx from the mapping at base to fd at off. On
 * failure returns the errno and sets *syscall. */
static int write_pages(int fd, uintptr_t base, size_t page, const uint32_t *idx, size_t n, uint64_t off,
                       int populated, const char **syscall) {
  struct iovec iov[256];
  size_t niov = page_iovecs(base, page, idx, n, iov);
  /* Map the pages first: write(2) copies from user memory with page faults
   * disabled and faults in one page per retry, several times slower than a
   * batched populate on a fresh mapping (a new snapshot has no page tables
   * yet). A released range fails here too, with EFAULT or ENOMEM; so does a
   * page the kernel cannot allocate (EFAULT: /dev/shm full; ENOMEM). */
  for (size_t i = 0; i < niov && !populated; i++) {
    if (RETRY(madvise(iov[i].iov_base, iov[i].iov_len, MADV_POPULATE_READ)) != 0) {
      if (errno == EINVAL) break; /* kernel older than 5.14: the write faults the pages in itself */
      *syscall = "madvise";
      return errno;
    }
  }
  struct iovec *v = iov;
  while (niov > 0) {
    ssize_t w = RETRY(pwritev(fd, v, (int)niov, (off_t)off));
    *syscall = "pwritev";
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

/* ---- holes ---------------------------------------------------------------
 *
 * A sparse region (reserve: false) is mostly holes, and a hole read through a
 * mapping of a tmpfs file is not free: the fault allocates a page for it, so
 * writing a 64 GiB region with one page written would fill /dev/shm (or fail
 * when it is full). A page that is a hole in the region's file and was not
 * copied into the snapshot reads as zeros, so the full writer skips it: the
 * checkpoint's file keeps a hole there too (it is sized at the first one), and the
 * read-back hashes the zeros a hole reads as.
 *
 * Why that is sound for a snapshot: an uncopied page of a snapshot is the
 * region's page-cache page, so if the file has a hole there the snapshot
 * reads zeros. A page written meanwhile was copied (its old bytes, zeros for
 * a hole) and is listed in `copied` if it was copied before the writer
 * started; one copied later was a hole when the snapshot was taken, so its
 * frozen bytes are zeros either way. Only another process punching a hole
 * into the region's file under a live snapshot could tell the difference, and
 * that changes what the snapshot itself reads too. */

/* Where the holes of fd are, learnt going forward: [data, hole) is known to
 * be data and [gap, data) a hole. Each lseek walks the file from where it
 * starts to its answer (a SEEK_HOLE in a fully written region walks to its
 * end), so asking once per extent rather than once per chunk keeps a whole
 * pass linear. */
struct holes {
  int fd; /* -1: no holes known */
  off_t gap, data, hole;
};

static void mark_holes(uint8_t *hole, size_t first, size_t page, off_t from, off_t to, size_t *count) {
  /* Whole pages only: a partial page of data counts as data. */
  for (off_t p = (from + (off_t)page - 1) / (off_t)page * (off_t)page; p + (off_t)page <= to; p += (off_t)page) {
    hole[(size_t)(p / (off_t)page) - first] = 1;
    (*count)++;
  }
}

/* Marks in hole[0..n) the pages [first, first + n) that lie wholly in a hole
 * of hs->fd (SEEK_DATA/SEEK_HOLE); pages are asked about in ascending order.
 * Returns how many; 0 when the file cannot tell. */
static size_t find_holes(struct holes *hs, size_t first, size_t n, size_t page, uint8_t *hole) {
  memset(hole, 0, n);
  if (hs->fd < 0) return 0;
  off_t pos = (off_t)(first * page), end = (off_t)((first + n) * page);
  size_t count = 0;
  while (pos < end) {
    if (pos >= hs->gap && pos < hs->data) { /* a known hole */
      off_t to = hs->data < end ? hs->data : end;
      mark_holes(hole, first, page, pos, to, &count);
      pos = to;
      continue;
    }
    if (pos >= hs->data && pos < hs->hole) { /* known data */
      pos = hs->hole;
      continue;
    }
    off_t data = lseek(hs->fd, pos, SEEK_DATA);
    if (data < 0 && errno != ENXIO) { /* no SEEK_DATA here: no holes known */
      hs->fd = -1;
      memset(hole, 0, n);
      return 0;
    }
    off_t next = INT64_MAX; /* ENXIO: a hole to the end of the file */
    if (data < 0) {
      data = INT64_MAX;
    } else {
      next = lseek(hs->fd, data, SEEK_HOLE);
      if (next < 0) next = INT64_MAX;
    }
    hs->gap = pos, hs->data = data, hs->hole = next;
  }
  return count;
}

/* Whether page p is in the ascending list [*at, n) of copied pages; moves *at
 * forward (pages are asked about in ascending order). */
static int was_copied(const uint32_t *copied, size_t n, size_t *at, size_t p) {
  while (*at < n && copied[*at] < p) (*at)++;
  return *at < n && copied[*at] == p;
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
  XXH64_state_t h;
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
      XXH64_update(&hs->h, hs->buf, n);
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
  struct holes holes; /* the source's file, to skip its holes (see find_holes) */
  size_t page;
  _Atomic size_t upto;
  _Atomic int stop;
};

static void *populater_thread(void *data) {
  struct populater *pp = data;
  helper_priority();
  uint8_t hole[256];
  size_t per = CHUNK_BYTES / pp->page > 256 ? 256 : CHUNK_BYTES / pp->page;
  for (size_t off = 0; off < pp->len && !atomic_load_explicit(&pp->stop, memory_order_relaxed);) {
    size_t n = pp->len - off < per * pp->page ? pp->len - off : per * pp->page;
    size_t pages = n / pp->page;
    /* Holes are left alone: populating one would allocate it. A copied page
     * in a hole is populated by the writer's own populate instead. */
    size_t holes = find_holes(&pp->holes, off / pp->page, pages, pp->page, hole);
    for (size_t i = 0; i < pages;) {
      if (holes && hole[i]) {
        i++;
        continue;
      }
      size_t m = 1;
      while (i + m < pages && !(holes && hole[i + m])) m++;
      if (RETRY(madvise((void *)(pp->start + off + i * pp->page), m * pp->page, MADV_POPULATE_READ)) != 0) return NULL;
      i += m;
    }
    off += n;
    atomic_store_explicit(&pp->upto, off, memory_order_release);
  }
  return NULL;
}

/* ---- the writers --------------------------------------------------------- */

/* What both writers check before each chunk: a cancel request, then whether
 * the mappings are still there (a released source reads as EFAULT later;
 * checking first gives the clearer error in the common case). */
static int chunk_start(struct ck_work *w) {
  if (__atomic_load_n(&w->state[0], __ATOMIC_RELAXED)) {
    w->err = ECANCELED, w->syscall = "cancel";
    return 0;
  }
  if (!mapping_alive(w->src_id) || (w->cmp && !mapping_alive(w->cmp_id))) {
    w->err = ESRCH, w->syscall = "released";
    return 0;
  }
  return 1;
}

/* A failed copy from the source. EFAULT is what a released snapshot gives
 * (its range is PROT_NONE before its slot says so, so the slot cannot be
 * trusted to tell yet), and also what a tmpfs page that cannot be allocated
 * gives (the fault is a SIGBUS): a full file system is told apart by its
 * free space and reported as ENOSPC. ENOMEM is out of memory unless the
 * mapping is gone. */
static void source_error(struct ck_work *w, int err, const char *syscall) {
  struct statfs sf;
  if (err == EFAULT && w->holes_fd >= 0 && fstatfs(w->holes_fd, &sf) == 0 && sf.f_blocks > 0 && sf.f_bavail == 0) {
    w->err = ENOSPC, w->syscall = syscall;
  } else if (err == EFAULT || err == ESRCH || (err == ENOMEM && !mapping_alive(w->src_id))) {
    w->err = ESRCH, w->syscall = "released";
  } else {
    w->err = err, w->syscall = syscall;
  }
}

static void chunk_done(struct ck_work *w, size_t done) { __atomic_store_n(&w->state[1], (int32_t)done, __ATOMIC_RELAXED); }

/* Pages per chunk: 1 MiB, at most 256 pages (one iovec array). */
static size_t chunk_pages(size_t page) {
  size_t per = CHUNK_BYTES / page;
  return per > 256 ? 256 : per == 0 ? 1 : per;
}

static void stop_hasher(struct hasher *hs, pthread_t ht) {
  hasher_publish(hs, hs->ready, 0, 1);
  pthread_join(ht, NULL);
  pthread_cond_destroy(&hs->cv);
  pthread_mutex_destroy(&hs->mu);
}

/* The full writer: every page of the source in order, each at its own place
 * in the file (file_offset + index * page), holes skipped; or the listed
 * pages back to back (a delta whose page list is known: the changed pages of
 * a live older snapshot). A second thread
 * hashes behind it (struct hasher) and another populates ahead of it
 * (struct populater); without them it does both itself. */
static void run_full(struct ck_work *w) {
  size_t page = w->page, per = chunk_pages(page);
  uint8_t *buf = malloc(per * page);
  uint32_t idx[256];
  uint8_t hole[256];
  struct hasher hs;
  pthread_t ht, pt;
  int hashing = 0, populating = 0;
  struct populater pp = {.start = w->src, .len = w->npages * page, .holes = {w->holes_fd, 0, 0, 0}, .page = page};
  struct holes holes = {w->pages ? -1 : w->holes_fd, 0, 0, 0};
  XXH64_state_t h;
  XXH64_reset(&h, 0);
  uint64_t pos = w->file_offset, kicked = pos;
  int kick = 1;
  size_t copied_at = 0;
  int sized = 0; /* the file has its full length */
  if (buf == NULL) {
    w->err = ENOMEM, w->syscall = "malloc";
    return;
  }
  if (pthread_mutex_init(&hs.mu, NULL) == 0) {
    if (pthread_cond_init(&hs.cv, NULL) == 0) {
      hs.fd = w->fd, hs.pos = hs.ready = pos, hs.fin = hs.stop = 0, hs.err = 0, hs.syscall = NULL;
      XXH64_reset(&hs.h, 0);
      hs.buf = buf, hs.bufsize = per * page;
      if (pthread_create(&ht, NULL, hasher_thread, &hs) == 0) hashing = 1;
      if (!hashing) pthread_cond_destroy(&hs.cv);
    }
    if (!hashing) pthread_mutex_destroy(&hs.mu);
  }
  if (hashing && w->pages == NULL && pthread_create(&pt, NULL, populater_thread, &pp) == 0) populating = 1;
  for (size_t done = 0; done < w->npages;) {
    if (!chunk_start(w)) break;
    size_t n = w->npages - done < per ? w->npages - done : per;
    find_holes(&holes, done, n, page, hole);
    /* Runs of pages to write, each at its own offset; skipped holes stay holes. */
    for (size_t i = 0; i < n && w->err == 0;) {
      if (hole[i] && !was_copied(w->copied, w->ncopied, &copied_at, done + i)) {
        /* The file must reach past a skipped page: the read-back would end
         * early at a hole at its end. Sized once, at the first hole. */
        if (!sized && RETRY(ftruncate(w->fd, (off_t)(w->file_offset + (uint64_t)w->npages * page))) != 0) {
          w->err = errno, w->syscall = "ftruncate";
          break;
        }
        sized = 1;
        i++;
        continue;
      }
      size_t m = 0;
      while (i + m < n && !(hole[i + m] && !was_copied(w->copied, w->ncopied, &copied_at, done + i + m))) {
        idx[m] = w->pages ? w->pages[done + i + m] : (uint32_t)(done + i + m);
        m++;
      }
      int ahead = populating && atomic_load_explicit(&pp.upto, memory_order_acquire) >= (done + i + m) * page;
      const char *sc = NULL;
      int err = write_pages(w->fd, w->src, page, idx, m, w->file_offset + (uint64_t)(done + i) * page, ahead, &sc);
      if (err != 0) source_error(w, err, sc);
      i += m;
    }
    if (w->err != 0) break;
    pos += n * page;
    done += n;
    chunk_done(w, done);
    if (hashing) {
      if (hasher_publish(&hs, pos, 0, 0) != 0) break; /* reported below, from the hasher */
      continue;
    }
    int err = read_back(w->fd, buf, n * page, pos - n * page);
    if (err != 0) {
      w->err = err, w->syscall = "pread";
      break;
    }
    XXH64_update(&h, buf, n * page);
    kick_writeback(w->fd, &kicked, pos, &kick);
  }
  if (populating) {
    atomic_store(&pp.stop, 1);
    pthread_join(pt, NULL);
  }
  if (hashing) {
    if (w->err == 0 && hs.err == 0) {
      hasher_publish(&hs, pos, 1, 0);
      pthread_join(ht, NULL);
      pthread_cond_destroy(&hs.cv);
      pthread_mutex_destroy(&hs.mu);
    } else {
      /* Stopped early: by an error of the writer, a cancel, or the hasher's own error. */
      stop_hasher(&hs, ht);
    }
    if (w->err == 0 && hs.err != 0) w->err = hs.err, w->syscall = hs.syscall;
    if (w->err == 0) w->hash = XXH64_digest(&hs.h);
  } else if (w->err == 0) {
    w->hash = XXH64_digest(&h);
  }
  free(buf);
}

/* The delta writer: the listed pages (or all), each compared with the same
 * page of the base mapping; only pages that differ are kept, back to back
 * from file_offset, and listed in w->kept. It decides from the bytes read
 * back, so it hashes them itself. Comparing every page (no list), the holes
 * of the region's file that were not copied into the snapshot are zeros
 * without being read (see find_holes): reading one through the mapping would
 * allocate it, and a delta of a sparse region would fill /dev/shm. */
static void run_delta(struct ck_work *w) {
  size_t page = w->page, per = chunk_pages(page);
  uint8_t *buf = malloc(per * page), *cbuf = malloc(per * page);
  uint32_t idx[256];
  uint8_t hole[256];
  struct holes holes = {w->pages ? -1 : w->holes_fd, 0, 0, 0};
  size_t copied_at = 0;
  w->kept = malloc((w->npages ? w->npages : 1) * sizeof *w->kept);
  XXH64_state_t h;
  XXH64_reset(&h, 0);
  uint64_t pos = w->file_offset, kicked = pos;
  int kick = 1;
  if (buf == NULL || cbuf == NULL || w->kept == NULL) {
    w->err = ENOMEM, w->syscall = "malloc";
    goto out;
  }
  for (size_t done = 0; done < w->npages;) {
    if (!chunk_start(w)) goto out;
    size_t n = w->npages - done < per ? w->npages - done : per;
    for (size_t i = 0; i < n; i++) idx[i] = w->pages ? w->pages[done + i] : (uint32_t)(done + i);
    size_t nholes = find_holes(&holes, done, n, page, hole);
    for (size_t i = 0; nholes && i < n; i++) {
      if (hole[i] && was_copied(w->copied, w->ncopied, &copied_at, idx[i])) hole[i] = 0, nholes--;
    }
    /* Each run of pages that are not holes goes to its own place in the
     * file and is read back from there; a hole is zeros in buf. */
    int err = 0;
    const char *sc = NULL;
    for (size_t i = 0; i < n && err == 0;) {
      size_t m = 1;
      if (nholes && hole[i]) {
        while (i + m < n && hole[i + m]) m++;
        memset(buf + i * page, 0, m * page);
      } else {
        while (i + m < n && !(nholes && hole[i + m])) m++;
        err = write_pages(w->fd, w->src, page, idx + i, m, pos + i * page, 0, &sc);
        if (err != 0) {
          source_error(w, err, sc);
          goto out;
        }
        err = read_back(w->fd, buf + i * page, m * page, pos + i * page);
        if (err != 0) {
          w->err = err, w->syscall = "pread";
          goto out;
        }
      }
      i += m;
    }
    err = read_pages(w->cmp, page, idx, n, cbuf);
    if (err != 0) {
      w->err = err == EFAULT && !mapping_alive(w->cmp_id) ? ESRCH : err;
      w->syscall = w->err == ESRCH ? "released" : "process_vm_readv";
      goto out;
    }
    /* Keep only pages that differ from the base, compacted in place. */
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
      if (memcmp(buf + i * page, cbuf + i * page, page) == 0) continue;
      if (keep != i) memcpy(buf + keep * page, buf + i * page, page);
      w->kept[w->nkept++] = idx[i];
      keep++;
    }
    /* Rewritten compacted, unless every page was kept where it was written. */
    if (keep > 0 && (keep < n || nholes > 0)) {
      err = write_all(w->fd, buf, keep * page, pos);
      if (err != 0) {
        w->err = err, w->syscall = "pwrite";
        goto out;
      }
    }
    if (keep > 0) {
      XXH64_update(&h, buf, keep * page);
      pos += keep * page;
    }
    done += n;
    chunk_done(w, done);
    kick_writeback(w->fd, &kicked, pos, &kick);
  }
  w->hash = XXH64_digest(&h);
out:
  free(buf);
  free(cbuf);
}

/* ---- streams --------------------------------------------------------------
 *
 * A checkpoint stream's header names its data's checksum (and a delta's page
 * list) before the data, so the stream reads the frozen snapshot twice: a
 * scan first (run_scan, one work item: hash, and for a delta the pages that
 * differ from the base), then one work item per chunk the consumer asks for
 * (run_read), so that a paused consumer holds no pool thread. Both read with
 * process_vm_readv: a released mapping is EFAULT, never a fault. Holes of the
 * region's file that were not copied read as zeros without being touched,
 * as in run_full. */

/* Copies pages idx[0..n) (n <= 256) of the source into dst, holes as zeros. */
static int stream_copy(struct ck_work *w, struct holes *holes, const uint32_t *idx, size_t n, uint8_t *dst,
                       size_t *copied_at) {
  uint8_t hole[256];
  size_t page = w->page;
  if (w->pages == NULL) find_holes(holes, idx[0], n, page, hole);
  else memset(hole, 0, n);
  for (size_t i = 0; i < n;) {
    if (hole[i] && !was_copied(w->copied, w->ncopied, copied_at, idx[i])) {
      memset(dst + i * page, 0, page);
      i++;
      continue;
    }
    size_t m = 1;
    while (i + m < n && !(hole[i + m] && !was_copied(w->copied, w->ncopied, copied_at, idx[i + m]))) m++;
    int err = read_pages(w->src, page, idx + i, m, dst + i * page);
    if (err != 0) {
      source_error(w, err, "process_vm_readv");
      return -1;
    }
    i += m;
  }
  return 0;
}

static void run_scan(struct ck_work *w) {
  size_t page = w->page, per = chunk_pages(page), copied_at = 0;
  uint8_t *buf = malloc(per * page), *cbuf = w->cmp ? malloc(per * page) : NULL;
  uint32_t idx[256];
  struct holes holes = {w->holes_fd, 0, 0, 0};
  XXH64_state_t h;
  XXH64_reset(&h, 0);
  if (w->cmp) w->kept = malloc((w->npages ? w->npages : 1) * sizeof *w->kept);
  if (buf == NULL || (w->cmp && (cbuf == NULL || w->kept == NULL))) {
    w->err = ENOMEM, w->syscall = "malloc";
    goto out;
  }
  for (size_t done = 0; done < w->npages;) {
    if (!chunk_start(w)) goto out;
    size_t n = w->npages - done < per ? w->npages - done : per;
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)(done + i);
    if (stream_copy(w, &holes, idx, n, buf, &copied_at) != 0) goto out;
    if (w->cmp) {
      int err = read_pages(w->cmp, page, idx, n, cbuf);
      if (err != 0) {
        w->err = err == EFAULT && !mapping_alive(w->cmp_id) ? ESRCH : err;
        w->syscall = w->err == ESRCH ? "released" : "process_vm_readv";
        goto out;
      }
      for (size_t i = 0; i < n; i++) {
        if (memcmp(buf + i * page, cbuf + i * page, page) == 0) continue;
        w->kept[w->nkept++] = idx[i];
        XXH64_update(&h, buf + i * page, page);
      }
    } else {
      XXH64_update(&h, buf, n * page);
    }
    done += n;
    chunk_done(w, done);
  }
  w->hash = XXH64_digest(&h);
out:
  free(buf);
  free(cbuf);
}

static void run_read(struct ck_work *w) {
  size_t per = chunk_pages(w->page), copied_at = 0;
  uint32_t idx[256];
  struct holes holes = {w->holes_fd, 0, 0, 0};
  for (size_t done = 0; done < w->npages;) {
    if (!chunk_start(w)) return;
    size_t n = w->npages - done < per ? w->npages - done : per;
    for (size_t i = 0; i < n; i++) idx[i] = w->pages ? w->pages[w->first + done + i] : (uint32_t)(w->first + done + i);
    if (stream_copy(w, &holes, idx, n, w->dst + done * w->page, &copied_at) != 0) return;
    done += n;
    chunk_done(w, done);
  }
}

static void run_writer(struct ck_work *w) {
  if (w->mode == 1)
    run_scan(w);
  else if (w->mode == 2)
    run_read(w);
  else if (w->cmp)
    run_delta(w);
  else
    run_full(w);
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
  if (((struct ck_work *)data)->mode == 2) { /* one chunk of a stream: a thread per chunk would cost more than it saves */
    run_writer(data);
    return;
  }
  if (pthread_create(&t, NULL, writer_thread, data) == 0)
    pthread_join(t, NULL);
  else
    run_writer(data);
}

static void ck_free(struct ck_work *w) {
  if (w->holes_fd >= 0) close(w->holes_fd);
  state_unref(w->shared);
  free(w->pages);
  free(w->copied);
  free(w->kept);
  free(w);
}

/* An Error with `code`, or NULL when even that cannot be made. */
static napi_value coded_error(napi_env env, const char *code, const char *message) {
  napi_value msg = NULL, c = NULL, err = NULL;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok || napi_create_error(env, c, msg, &err) != napi_ok)
    return NULL;
  return err;
}

/* [checksum, kept pages or null], or NULL when a Node-API call failed. */
static napi_value ck_result(napi_env env, struct ck_work *w) {
  napi_value result = NULL, kept = NULL, hash = hex64(env, w->hash);
  if (hash == NULL) return NULL;
  if (w->cmp && w->mode != 2) {
    void *out = NULL;
    napi_value ab;
    if (napi_create_arraybuffer(env, w->nkept * sizeof(uint32_t), &out, &ab) != napi_ok ||
        napi_create_typedarray(env, napi_uint32_array, w->nkept, ab, 0, &kept) != napi_ok)
      return NULL;
    if (w->nkept) memcpy(out, w->kept, w->nkept * sizeof(uint32_t));
  } else if (napi_get_null(env, &kept) != napi_ok) {
    return NULL;
  }
  if (napi_create_array_with_length(env, 2, &result) != napi_ok || napi_set_element(env, result, 0, hash) != napi_ok ||
      napi_set_element(env, result, 1, kept) != napi_ok)
    return NULL;
  return result;
}

/* The writer's error, as JS sees it; NULL when a Node-API call failed. */
static napi_value ck_error(napi_env env, napi_status status, struct ck_work *w) {
  if (status == napi_ok && w->err == ECANCELED) return coded_error(env, "ABORT_ERR", "The operation was aborted");
  if (status == napi_ok && w->err == ESRCH && strcmp(w->syscall, "released") == 0)
    return coded_error(env, "ERR_COWSHM_CLOSED",
                       "the mapping being written was released before the checkpoint was complete; "
                       "release a snapshot only after its writeTo() has settled");
  napi_value err = NULL;
  cowshm_throw_errno(env, status != napi_ok ? EIO : w->err, status != napi_ok ? "async work" : w->syscall, NULL);
  if (napi_get_and_clear_last_exception(env, &err) != napi_ok) return NULL;
  return err;
}

/* Settles the promise whatever fails on the way: a promise left pending
 * would keep its writeTo() waiting forever. */
static void ck_complete(napi_env env, napi_status status, void *data) {
  struct ck_work *w = data;
  napi_value value = status == napi_ok && w->err == 0 ? ck_result(env, w) : NULL;
  if (value != NULL) {
    if (napi_resolve_deferred(env, w->deferred, value) != napi_ok) value = NULL;
  }
  if (value == NULL) {
    napi_value err = status == napi_ok && w->err == 0
                         ? coded_error(env, "ERR_COWSHM_INTERNAL", "cowshm internal error: could not return the checkpoint's result")
                         : ck_error(env, status, w);
    napi_value pending;
    napi_get_and_clear_last_exception(env, &pending); /* anything a failed call left */
    if (err == NULL) napi_get_undefined(env, &err);
    napi_reject_deferred(env, w->deferred, err); /* fails only when the environment is going away */
  }
  napi_delete_async_work(env, w->work);
  ck_free(w);
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

/* writePages(fd, fileOffset, srcId, pages: Uint32Array | null, pageCount, cmpId, holesFd, copied)
 *   -> [Promise<[hashHex, keptPages: Uint32Array | null]>, state: Int32Array]
 * Writes the listed pages of mapping srcId (every page in [0, pageCount) when
 * pages is null) back to back from fileOffset. With cmpId >= 0, only pages
 * that differ from the same page of mapping cmpId are written, and the
 * result lists them. With pages null, the pages that are holes of file
 * holesFd (>= 0) and not in the ascending list `copied` (see find_holes) are
 * never read: a full checkpoint skips them, extending the file to its full
 * length first, and a delta compares them as zeros.
 * state[0] = 1 (Atomics.store) cancels; state[1] counts
 * the pages examined so far. The caller keeps both mappings' ArrayBuffers
 * reachable until the promise settles. */
static napi_value queue_pages(napi_env env, napi_value argv[8], int mode, uint64_t first, uint8_t *dst, size_t dst_len) {
  napi_value promise, name, result, ab, arr;
  int32_t holes_fd;
  int32_t fd;
  uint64_t off, count;
  double src_id, cmp_id;
  if (!cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &off) || !cowshm_get_u64(env, argv[4], &count) ||
      !cowshm_get_i32(env, argv[6], &holes_fd))
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
  w->holes_fd = -1;
  w->mode = mode;
  w->first = (size_t)first;
  w->dst = dst;

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
  if (napi_typeof(env, argv[7], &t) != napi_ok) goto napi_fail;
  if (t != napi_null) {
    const uint32_t *list;
    if (!get_u32_array(env, argv[7], &list, &w->ncopied)) goto fail;
    w->copied = malloc((w->ncopied ? w->ncopied : 1) * sizeof *w->copied);
    if (w->copied == NULL) {
      cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
      goto fail;
    }
    if (w->ncopied) memcpy(w->copied, list, w->ncopied * sizeof *w->copied);
    for (size_t i = 1; i < w->ncopied; i++) {
      if (w->copied[i] <= w->copied[i - 1]) {
        cowshm_throw_range(env, "cowshm internal error: copied page list not increasing");
        goto fail;
      }
    }
  }
  /* A descriptor of our own: the region's may be closed, and its number
   * reused, while the writer runs. */
  if (holes_fd >= 0 && (w->holes_fd = fcntl(holes_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
    cowshm_throw_errno(env, errno, "fcntl", NULL);
    goto fail;
  }
  /* A file with every block allocated has no holes: then the writer need not
   * ask (a SEEK_HOLE walks a fully written tmpfs file to its end, some
   * milliseconds per GiB). */
  struct stat hst;
  if (w->holes_fd >= 0 && fstat(w->holes_fd, &hst) == 0 && (uint64_t)hst.st_blocks * 512 >= (uint64_t)hst.st_size) {
    close(w->holes_fd);
    w->holes_fd = -1;
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
  size_t listed = w->npages; /* entries of the list, or pages from `first` */
  if (mode == 2) {
    if (w->pages == NULL) listed = (size_t)first + (size_t)count;
    if ((uint64_t)first + count > listed || dst_len < count * w->page) {
      cowshm_throw_range(env, "cowshm internal error: stream chunk out of range");
      goto fail;
    }
  }
  for (size_t i = 0; i < listed; i++) {
    size_t p = w->pages ? w->pages[i] : i;
    if (p >= limit || (w->pages && i > 0 && w->pages[i] <= w->pages[i - 1])) {
      cowshm_throw_range(env, "cowshm internal error: page list out of range or not increasing");
      goto fail;
    }
  }

  if (mode == 2) w->npages = (size_t)count;
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
  if (w->deferred) {
    /* Never returned, but settled so that nothing waits on it. */
    napi_value err = NULL;
    napi_get_and_clear_last_exception(env, &err);
    if (err == NULL) napi_get_undefined(env, &err);
    napi_reject_deferred(env, w->deferred, err);
    napi_throw(env, err);
  }
  if (w->work) napi_delete_async_work(env, w->work);
  if (w->holes_fd >= 0) close(w->holes_fd);
  if (w->shared) state_unref(w->shared);
  free(w->pages);
  free(w->copied);
  free(w);
  return NULL;
}

static napi_value write_pages_js(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!cowshm_args(env, info, 8, argv)) return NULL;
  return queue_pages(env, argv, 0, 0, NULL, 0);
}

/* streamPages(srcId, pages: Uint32Array | null, first, count, cmpId, holesFd, copied, dst: Uint8Array | null)
 *   -> [Promise<[hashHex, keptPages: Uint32Array | null]>, state: Int32Array]
 * dst null: scans pages [0, count) of srcId (run_scan): their XXH64, or with
 * cmpId >= 0 the XXH64 of the pages that differ from mapping cmpId, listed.
 * dst given: copies pages [first, first + count) of the list (of all pages
 * when it is null) into dst (run_read). Holes as in writePages. The caller
 * keeps the mappings' ArrayBuffers and dst reachable until it settles. */
static napi_value stream_pages_js(napi_env env, napi_callback_info info) {
  napi_value argv[8], wargv[8];
  uint64_t first;
  if (!cowshm_args(env, info, 8, argv) || !cowshm_get_u64(env, argv[2], &first)) return NULL;
  napi_valuetype t;
  NAPI_OK(env, napi_typeof(env, argv[7], &t));
  uint8_t *dst = NULL;
  size_t dst_len = 0;
  if (t != napi_null) {
    napi_typedarray_type type;
    void *data;
    napi_value dab;
    size_t off;
    if (napi_get_typedarray_info(env, argv[7], &type, &dst_len, &data, &dab, &off) != napi_ok || type != napi_uint8_array)
      return cowshm_throw_type(env, "cowshm internal error: expected a Uint8Array");
    dst = data;
  }
  NAPI_OK(env, napi_create_int32(env, -1, &wargv[0]));
  NAPI_OK(env, napi_create_int32(env, 0, &wargv[1]));
  wargv[2] = argv[0], wargv[3] = argv[1], wargv[4] = argv[3], wargv[5] = argv[4], wargv[6] = argv[5], wargv[7] = argv[6];
  return queue_pages(env, wargv, dst ? 2 : 1, first, dst, dst_len);
}

napi_value cowshm_init_checkpoint(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"xxh64", NULL, xxh64_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hashFile", NULL, hash_file_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writePages", NULL, write_pages_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"streamPages", NULL, stream_pages_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xxh64Init", NULL, xxh64_init_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zeroPages", NULL, zero_pages_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xxh64Update", NULL, xxh64_update_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tempCreate", NULL, temp_create_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tempRelease", NULL, temp_release_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
