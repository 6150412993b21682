/* Snapshots that hold against writes from other processes (scope 'processes').
 *
 * Every process that opens a region for writing with `crossProcess: true`
 * takes part: it registers in the region's coordination file and runs one
 * native thread that waits on a futex word there. A reader that takes a
 * snapshot maps the region MAP_PRIVATE, announces it in the file, and hands it
 * out only once every live participant has armed: each one write-protects its
 * write views through the snapshot engine (snapshot.c), with a "remote"
 * snapshot whose copies are pushes, process_vm_writev(2) of the page's old
 * bytes into the reader's private mapping before the write lands.
 *
 * The coordination file is /dev/shm/cowshm-xproc-<dev>-<ino> (hex): named
 * from the region's identity, since a memfd has no place beside it. It has
 * the region's mode; taking part needs write access to it.
 *
 *   page 0   struct xhdr: seq (futex: "look again"), state, gen, the reader's
 *            pid / descriptor / address, the bytes pushed around a first
 *            write (chunk), and one struct xslot per participant
 *   page 1.. one 32-bit claim per region page: (gen << 8) | (slot << 2) | CLAIM_*
 *
 * Liveness never goes through pids: byte READER_LOCK of the file is OFD-locked
 * by the reader for its snapshot's life, byte SLOT_LOCK + i by participant i
 * for as long as it takes part; the kernel drops a lock when its holder dies.
 * INIT_LOCK serializes creating, joining and removing the file.
 *
 * One instant. The reader sets state ARMING, waits until every live slot has
 * acknowledged (or fails after timeoutMs naming the pid of one that did not),
 * then sets ARMED. A participant's first write after it armed faults, and the
 * push waits while the state is ARMING: so every write before the ARMED store
 * is in the snapshot, and none after it, in every process — a consistent cut.
 * A process that joins during a snapshot arms before its open returns.
 *
 * Many writers. A page's claim goes untouched -> COPYING -> COPIED for the
 * snapshot's generation; only the writer that moved it to COPYING pushes, the
 * others wait for COPIED; the claim of one that died (its slot lock is gone)
 * is taken over, and one that stays stopped breaks the snapshot after a
 * bounded wait instead of blocking anyone; a wait ends too when the snapshot
 * is released. Claims of older generations count as untouched, so none is
 * reset between snapshots; a joiner drops the claims a dead holder of its
 * slot left (drop_dead_claims).
 *
 * Trust. Anything in the file may be garbage written by another process
 * (anyone who can write it can write the region too: the file has the
 * region's mode). Before arming, a participant checks that the reader lock is
 * held, that /proc/PID is of this user, that /proc/PID/fd/FD is this
 * coordination file, and that /proc/PID/maps has a private read-write mapping
 * of this region's dev/ino at the address, at least the region's size long;
 * the push then uses only the values it checked, kept in this process. No
 * value read from the file is used as an index without a bound.
 *
 * Two push paths, chosen per pair of processes when a participant arms:
 * "direct" (process_vm_writev, above) where this process may write into the
 * reader, "handshake" where it may not or must not: the reader is another
 * user (pushes never cross users), the kernel refuses (EPERM: Yama
 * ptrace_scope >= 1, an LSM; probed with pidfd_getfd(2), which the kernel
 * checks exactly as it checks process_vm_writev: see choose_path), or COWSHM_XPROC_HANDSHAKE=1
 * in either process's environment asks for it. The reader runs one helper
 * thread per snapshot; a writer posts the page in its slot's mailbox (page 0,
 * from HS_AT) and waits until the helper has run MADV_POPULATE_WRITE on its
 * own private mapping and answered. The claims protocol is the same for both
 * paths. A reader that does not answer (stopped, a debugger) is waited for
 * at most the writer's handshake timeout, then its snapshot is broken
 * (ETIMEDOUT) and the write goes on: a stopped reader never freezes a writer
 * of another user. The helper copies only inside its own mapping, within
 * bounds, whatever the mailbox says; a writer accepts an answer only for the
 * sequence number and the page it asked for.
 *
 * Release. The reader sets IDLE and keeps its mapping until every live
 * participant has acknowledged (a participant acknowledges after the engine
 * has waited out its running handlers): only then can no push still land in
 * that memory. A stopped participant keeps the mapping alive until it runs
 * again or dies; `xprocDrained` says when.
 */

#include "cowshm.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define XMAGIC 0x43575850u /* "PXWC" */
#define XVERSION 2
#define MAX_PARTS 64
#define READER_LOCK 0
#define SLOT_LOCK 1
#define INIT_LOCK 4000
#define MAX_CTX 64
#define MAX_READERS 64
#define MAX_CHUNK (1u << 30)

enum { ST_IDLE = 0, ST_ARMING = 1, ST_ARMED = 2 };
enum { CLAIM_COPYING = 1, CLAIM_COPIED = 2 };

struct xslot {
  _Atomic uint32_t pid;     /* for messages only */
  _Atomic uint32_t armed;   /* gen this participant answered for ... */
  _Atomic uint32_t err;     /* ... with this errno (0: armed) */
  _Atomic uint32_t idle;    /* gen after which it holds no remote snapshot */
};

struct xhdr {
  uint32_t magic, version;
  uint64_t size;
  _Atomic uint32_t seq;
  _Atomic uint32_t state;
  _Atomic uint32_t gen;
  _Atomic uint32_t broken_gen;
  _Atomic uint32_t broken_err;
  _Atomic uint32_t reader_pid;
  _Atomic uint32_t reader_fd;
  _Atomic uint32_t timeout_ms;
  _Atomic uint64_t reader_addr;
  _Atomic uint32_t chunk; /* the snapshot's chunkSize: a power of two, page .. MAX_CHUNK */
  uint32_t pad;
  struct xslot slot[MAX_PARTS];
};

/* A region's coordination file, mapped. */
struct xfile {
  int fd;
  struct xhdr *h;
  _Atomic uint32_t *claims;
  size_t maplen;
  uint64_t dev, ino, size, npages, fdev, fino;
  char path[96];
};

/* What a remote snapshot's push uses: checked values only (see Trust). */
struct pushctx {
  struct xhdr *h;
  _Atomic uint32_t *claims;
  uint64_t dev, ino, npages;
  pid_t pid;
  uint64_t addr;
  uint32_t gen;
  uint32_t timeout_ms;
  int fd;    /* the participant's descriptor of the file: liveness of claimants */
  int slot;  /* ours, recorded in our claims */
  /* The handshake path (see the top of the file). */
  _Atomic int handshake;  /* 1: post pages to the reader's helper (also set on EPERM) */
  uint32_t hs_wait_ms;    /* how long to wait for the helper's answer; HS_FOREVER: as long as the reader lives */
  _Atomic int hs_busy;    /* one request at a time from this process: threads take turns */
  int refuse_direct;      /* COWSHM_XPROC_REFUSE_DIRECT: process_vm_writev fails with EPERM */
};

/* A participant: a region open for writing in this process. */
struct part {
  int used;
  struct xfile f;
  int slot;
  pthread_t thread;
  _Atomic int stop;
  pthread_mutex_t mu;
  void *remote;          /* the engine's snapshot while armed */
  struct pushctx push;   /* fixed while remote != NULL */
  uint32_t tried_gen;
  uint32_t hs_wait_ms;   /* the region's handshakeTimeoutMs */
  int hs_forced;         /* COWSHM_XPROC_HANDSHAKE=1 in this process */
  int refuse;            /* COWSHM_XPROC_REFUSE_DIRECT: 1 probe and pushes, 2 pushes only */
  napi_env env;          /* the environment that joined: it leaves when that one ends */
  pid_t pid;             /* the process that joined (a forked child is not it) */
};

/* A reader: one snapshot of scope 'processes', from arming to drained. */
struct reader {
  int used;
  int disarmed;
  struct xfile f;
  uint32_t gen;
  /* The handshake helper: runs from before arming until disarmed. */
  int helper_on;
  pthread_t helper;
  _Atomic int helper_stop;
  uintptr_t addr;
  /* Its environment, and the snapshot's mapping there (mapping.c's id). */
  napi_env env;
  pid_t pid;
  double map_id;
  /* Parked: its environment ended before it drained. The range is then
   * ours (a PROT_NONE reservation, so that nothing else is mapped where a
   * push may land), unmapped by the reaper once drained. */
  int parked;
  uintptr_t park_start;
  size_t park_len;
};

static struct part parts[MAX_CTX];
static struct reader readers[MAX_READERS];
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static long futex(_Atomic uint32_t *w, int op, uint32_t v, const struct timespec *t) {
  return syscall(SYS_futex, (uint32_t *)w, op, v, t, NULL, 0);
}

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static int lock_byte(int fd, off_t at, off_t len, int type, int wait) {
  struct flock fl = {.l_type = (short)type, .l_whence = SEEK_SET, .l_start = at, .l_len = len};
  if (RETRY(fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl)) == 0) return 0;
  return errno;
}

/* Whether another open file description holds a lock on byte `at`. */
static int held(int fd, off_t at) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return 0;
  return fl.l_type != F_UNLCK;
}

/* ---- the coordination file ----------------------------------------------- */

static void xfile_close(struct xfile *f) {
  if (f->h != NULL) munmap(f->h, f->maplen);
  if (f->fd >= 0) close(f->fd);
  f->h = NULL;
  f->fd = -1;
}

/* Whether no other open file description holds a lock on any byte of the
 * file but INIT_LOCK: taken and dropped at once (dropping this description's
 * own locks too), so call with INIT_LOCK held: nobody can take one meanwhile. */
static int unheld(int fd) {
  if (lock_byte(fd, 0, INIT_LOCK, F_WRLCK, 0) != 0) return 0;
  int free_above = lock_byte(fd, INIT_LOCK + 1, 0, F_WRLCK, 0) == 0;
  lock_byte(fd, 0, INIT_LOCK, F_UNLCK, 0);
  if (free_above) lock_byte(fd, INIT_LOCK + 1, 0, F_UNLCK, 0);
  return free_above;
}

/* The one rule for removing a coordination file, for its last user leaving
 * and for cowshm rm --orphans (xprocReclaim) alike: with INIT_LOCK held
 * through fd, so no process can join, read or remove meanwhile, it goes when
 * no reader or participant holds a lock on it (unheld), and only while its
 * name still leads to the file fd is open on (fdev, fino). A process that
 * opened it before and waits for INIT_LOCK finds the name gone and makes a
 * new one (xfile_open). Returns 0 (removed), EBUSY (held), ESTALE (the name
 * leads to another file now) or the errno of stat or unlink. */
static int remove_if_unheld(int fd, const char *path, uint64_t fdev, uint64_t fino) {
  if (!unheld(fd)) return EBUSY;
  struct stat st;
  if (stat(path, &st) != 0) return errno;
  if (st.st_dev != fdev || st.st_ino != fino) return ESTALE;
  return unlink(path) == 0 ? 0 : errno;
}

/* Removes the file when no reader and no participant is left: for a
 * process that lets go of it, before closing. */
static void xfile_unlink_if_last(struct xfile *f) {
  if (lock_byte(f->fd, INIT_LOCK, 1, F_WRLCK, 1) == 0) remove_if_unheld(f->fd, f->path, f->fdev, f->fino);
}

/* Opens (or creates) the coordination file of (dev, ino) and maps it, with
 * INIT_LOCK held on return. Returns 0 or an errno, with *call and why. */
static int xfile_open(struct xfile *f, uint64_t dev, uint64_t ino, uint64_t size, uint32_t mode, const char **call,
                      char *why, size_t whysize) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  f->dev = dev;
  f->ino = ino;
  f->size = size;
  f->npages = (size + cowshm_page_size - 1) / cowshm_page_size;
  snprintf(f->path, sizeof f->path, "/dev/shm/cowshm-xproc-%llx-%llx", (unsigned long long)dev,
           (unsigned long long)ino);
  snprintf(why, whysize, "%s", f->path);
  size_t want = cowshm_page_size + ((f->npages * 4 + cowshm_page_size - 1) & ~(cowshm_page_size - 1));
  for (int attempt = 0; attempt < 8; attempt++) {
    /* Without O_CREAT first: fs.protected_regular refuses O_CREAT on another
     * user's file in /dev/shm (world-writable, sticky), root's opens included. */
    int fd = RETRY(open(f->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0 && errno == ENOENT) fd = RETRY(open(f->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode & 0666));
    if (fd < 0) {
      int e = errno;
      *call = "open";
      if (e == EACCES)
        snprintf(why, whysize,
                 "%s: taking part in cross-process snapshots needs write access to this file (it has the region's "
                 "mode: give this user write access to the region)",
                 f->path);
      return e;
    }
    f->fd = fd;
    int e = lock_byte(fd, INIT_LOCK, 1, F_WRLCK, 1);
    if (e != 0) {
      *call = "fcntl";
      xfile_close(f);
      return e;
    }
    struct stat st, pst;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      *call = "fstat";
      xfile_close(f);
      return EINVAL;
    }
    /* Removed by its last user between our open and our lock: open again. */
    if (stat(f->path, &pst) != 0 || pst.st_dev != st.st_dev || pst.st_ino != st.st_ino) {
      xfile_close(f);
      continue;
    }
    f->fdev = st.st_dev;
    f->fino = st.st_ino;
    int fresh = st.st_size == 0;
    /* No reader or participant holds a lock, and INIT_LOCK keeps anyone
     * from taking one meanwhile: whatever the file holds was left by
     * processes that died. Start it over (reclaimed at the next open), so a
     * stale size or header is never refused. */
    if (!fresh && unheld(fd)) {
      if (ftruncate(fd, 0) != 0) {
        e = errno;
        *call = "ftruncate";
        xfile_close(f);
        return e;
      }
      fresh = 1;
    }
    if (fresh) {
      /* shm files get the umask: the region's mode is meant exactly. Only
       * the file's owner may change it; a file another user made (and left
       * unheld) already lets us write, since we opened it read-write, and
       * keeps its mode. */
      if (st.st_uid == geteuid() && fchmod(fd, mode & 0666) != 0) {
        e = errno;
        *call = "fchmod";
        xfile_close(f);
        return e;
      }
      if (ftruncate(fd, (off_t)want) != 0) {
        e = errno;
        *call = "ftruncate";
        xfile_close(f);
        return e;
      }
    } else if ((uint64_t)st.st_size != want) {
      *call = "open";
      snprintf(why, whysize, "%s is not a coordination file of a %llu-byte region (size %lld): remove it", f->path,
               (unsigned long long)size, (long long)st.st_size);
      xfile_close(f);
      return EINVAL;
    }
    void *m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      e = errno;
      *call = "mmap";
      xfile_close(f);
      return e;
    }
    f->h = m;
    f->maplen = want;
    f->claims = (_Atomic uint32_t *)((char *)m + cowshm_page_size);
    if (fresh) {
      f->h->size = size;
      f->h->version = XVERSION;
      atomic_thread_fence(memory_order_release);
      f->h->magic = XMAGIC;
    } else if (f->h->magic != XMAGIC || f->h->version != XVERSION || f->h->size != size) {
      *call = "open";
      snprintf(why, whysize, "%s holds garbage (no cowshm coordination header for this region): remove it", f->path);
      xfile_close(f);
      return EINVAL;
    }
    return 0;
  }
  *call = "open";
  return EAGAIN;
}

static void init_unlock(struct xfile *f) { lock_byte(f->fd, INIT_LOCK, 1, F_UNLCK, 0); }

/* ---- the push (signal context) ------------------------------------------- */

static void mark_broken(struct pushctx *c, int err) {
  atomic_store(&c->h->broken_err, (uint32_t)err);
  atomic_store(&c->h->broken_gen, c->gen);
}

/* Test hook, read when a region joins: COWSHM_TEST_XPROC_PUSH_DELAY_US makes
 * a writer sleep that long holding a page's claim before pushing it, so the
 * tests can kill or stop a writer mid-push. Unset (0) in normal use. */
static _Atomic long test_push_delay_us;

static void nap_us(long us) {
  struct timespec t = {0, us * 1000};
  syscall(SYS_nanosleep, &t, NULL);
}

/* This process's write mapping of file page p, or 0.
 * SAFETY: runs inside the engine's reader section, and a write mapping is
 * unmapped only after on_unmap waited for every reader section: a slot seen
 * mapped here with wp >= 0 stays mapped until the push returns. */
static uintptr_t local_page(const struct pushctx *c, uint64_t p) {
  uint64_t off = p * cowshm_page_size;
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_MAPPED || s->access != ACCESS_WRITE ||
        s->dev != c->dev || s->ino != c->ino || atomic_load(&s->wp) < 0)
      continue;
    if (off >= s->file_offset && off + cowshm_page_size <= s->file_offset + s->len)
      return s->start + (uintptr_t)(off - s->file_offset);
  }
  return 0;
}

/* ---- the handshake push (signal context) ---------------------------------- */

/* Page 0 of the file, from HS_AT: one mailbox per slot. Everything in it may
 * be garbage written by another process; see Trust. */
#define HS_AT 1408
#define HS_FOREVER UINT32_MAX
/* A request asks for at most this many pages: a chunk of 1 GiB (a 64 KiB chunk is 16). */
#define HS_MAX_PAGES (1u << 18)
enum { PATH_DIRECT = 1, PATH_HANDSHAKE = 2 };

struct xmail {
  _Atomic uint32_t req;        /* sequence number of the participant's latest request */
  _Atomic uint32_t ack;        /* futex: the sequence number the helper answered last */
  _Atomic uint32_t err;        /* that answer's errno (0: copied) */
  _Atomic uint32_t count;      /* the request: pages first .. first + count */
  _Atomic uint64_t first;
  _Atomic uint64_t done_first; /* what the answer copied: first, count */
  _Atomic uint32_t done_count;
  _Atomic uint32_t path;       /* (gen << 8) | PATH_*: the path this slot pushes on, for reports */
};

struct xhs {
  _Atomic uint32_t bell;       /* futex: a request was posted */
  _Atomic uint32_t force_gen;  /* the reader's COWSHM_XPROC_HANDSHAKE=1: every push of this gen by handshake */
  uint32_t spare[6];
  struct xmail mail[MAX_PARTS];
};

_Static_assert(sizeof(struct xhdr) <= HS_AT, "the header runs into the mailboxes");
_Static_assert(HS_AT + sizeof(struct xhs) <= 4096, "the mailboxes must fit in page 0");

static struct xhs *hs_of(struct xhdr *h) { return (struct xhs *)((char *)h + HS_AT); }

static void hs_report(struct xhdr *h, int slot, uint32_t gen, int path) {
  atomic_store(&hs_of(h)->mail[slot].path, ((gen & 0xffffff) << 8) | (uint32_t)path);
}

/* Whether a waiting writer should stop waiting for the helper: -1 to go on,
 * else what to return. ESRCH: nobody holds this snapshot any more (released,
 * replaced, or its reader died: its lock is gone), nothing to push into. */
static int hs_stop_waiting(struct pushctx *c, uint64_t start, int check_lock) {
  if (atomic_load(&c->h->state) != ST_ARMED || atomic_load(&c->h->gen) != c->gen) return ESRCH;
  if (atomic_load(&c->h->broken_gen) == c->gen) return 0; /* broken already: no copy helps */
  if (check_lock && !held(c->fd, READER_LOCK)) return ESRCH;
  if (c->hs_wait_ms != HS_FOREVER && now_ms() - start >= c->hs_wait_ms) return ETIMEDOUT;
  return -1;
}

/* Asks the reader's helper to copy pages [p, p + n) into its snapshot, and
 * waits for its answer. Returns 0 (copied, or nothing to copy into any more: ESRCH) or
 * an errno: ETIMEDOUT when the helper did not answer within hs_wait_ms.
 * SAFETY (signal context): atomics on the file's mapping (live while the
 * remote snapshot is), futex, nanosleep, clock_gettime and fcntl are system
 * calls; hs_busy is this process's own memory. Every wait is bounded, or
 * (HS_FOREVER) ends when the reader releases the snapshot or dies. */
static int hs_push(struct pushctx *c, uint64_t p, uint32_t n) {
  struct xhs *hs = hs_of(c->h);
  struct xmail *m = &hs->mail[c->slot];
  uint64_t start = now_ms();
  int stop, zero = 0;
  /* Broken already (a stalled reader, say): no copy helps, and no wait. */
  if (atomic_load(&c->h->broken_gen) == c->gen) return 0;
  while (!atomic_compare_exchange_weak(&c->hs_busy, &zero, 1)) {
    zero = 0;
    if ((stop = hs_stop_waiting(c, start, 1)) >= 0) return stop;
    nap_us(20);
  }
  int result = -1;
  for (int attempt = 0; result < 0; attempt++) {
    /* A sequence number the mailbox has not answered yet (a helper serving a
     * stale request answers with its own first page, which we reject). */
    uint32_t q = atomic_load(&m->ack) + 1;
    if (q == 0) q = 1;
    atomic_store(&m->first, p);
    atomic_store(&m->count, n);
    atomic_store_explicit(&m->req, q, memory_order_release);
    atomic_fetch_add(&hs->bell, 1);
    futex(&hs->bell, FUTEX_WAKE, 1, NULL);
    for (int spin = 0;; spin++) {
      uint32_t a = atomic_load_explicit(&m->ack, memory_order_acquire);
      if (a == q) {
        if (atomic_load(&m->done_first) == p && atomic_load(&m->done_count) == n)
          result = (int)atomic_load(&m->err);
        else if (attempt >= 8)
          result = EPROTO; /* answers that keep not being ours: garbage */
        break;             /* someone else's answer under our number: ask again */
      }
      if (spin < 200) continue; /* the helper usually answers within microseconds */
      if ((stop = hs_stop_waiting(c, start, (spin & 15) == 0)) >= 0) {
        result = stop;
        break;
      }
      struct timespec t = {0, 1000000};
      futex(&m->ack, FUTEX_WAIT, a, &t);
    }
  }
  atomic_store(&c->hs_busy, 0);
  /* ECANCELED: the helper saw the snapshot released meanwhile. */
  if (result == ECANCELED && hs_stop_waiting(c, start, 0) == ESRCH) result = ESRCH;
  if (result < 0 || result > 4095) result = EPROTO;
  return result;
}

/* The direct push was refused (EPERM: Yama, an LSM): this pair uses the
 * handshake from now on. */
static int hs_fallback(struct pushctx *c, uint64_t p, uint32_t n) {
  atomic_store(&c->handshake, 1);
  hs_report(c->h, c->slot, c->gen, PATH_HANDSHAKE);
  return hs_push(c, p, n);
}

/* ---- the reader's helper thread -------------------------------------------- */

/* Answers the mailboxes: copies the requested pages into this reader's own
 * private mapping. What a mailbox asks is checked against the snapshot's
 * bounds; a request while the header does not say this snapshot is armed is
 * answered ECANCELED without copying (a copy made before the snapshot's
 * instant could hold bytes older than a write that came before it). */
static void *helper_thread(void *arg) {
  struct reader *r = arg;
  struct xhs *hs = hs_of(r->f.h);
  uint64_t npages = r->f.npages;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  while (!atomic_load(&r->helper_stop)) {
    uint32_t bell = atomic_load(&hs->bell);
    int served = 0;
    for (int i = 0; i < MAX_PARTS; i++) {
      struct xmail *m = &hs->mail[i];
      uint32_t q = atomic_load_explicit(&m->req, memory_order_acquire);
      if (q == atomic_load(&m->ack)) continue;
      uint64_t first = atomic_load(&m->first);
      uint32_t n = atomic_load(&m->count);
      int err = 0;
      if (atomic_load(&r->f.h->state) != ST_ARMED || atomic_load(&r->f.h->gen) != r->gen)
        err = ECANCELED;
      else if (n == 0 || n > HS_MAX_PAGES || first >= npages || n > npages - first)
        err = EINVAL;
      else if (madvise((void *)(r->addr + first * cowshm_page_size), (size_t)n * cowshm_page_size,
                       MADV_POPULATE_WRITE) != 0)
        err = errno;
      atomic_store(&m->err, (uint32_t)err);
      atomic_store(&m->done_first, first);
      atomic_store(&m->done_count, n);
      atomic_store_explicit(&m->ack, q, memory_order_release);
      futex(&m->ack, FUTEX_WAKE, INT_MAX, NULL);
      served++;
    }
    if (served) continue;
    /* Spin a little before sleeping: a writer is often about to post again. */
    int spin = 0;
    while (spin++ < 2000 && atomic_load(&hs->bell) == bell && !atomic_load(&r->helper_stop)) {
    }
    if (atomic_load(&hs->bell) != bell) continue;
    struct timespec t = {0, 50000000};
    futex(&hs->bell, FUTEX_WAIT, bell, &t);
  }
  return NULL;
}

/* Starts the helper before arming: a participant may choose the handshake
 * (or fall back to it) at any moment while the snapshot lives. */
static int helper_start(struct reader *r, uintptr_t addr) {
  struct xhs *hs = hs_of(r->f.h);
  /* Requests nobody waits for any more (a reader that died, garbage). */
  for (int i = 0; i < MAX_PARTS; i++) atomic_store(&hs->mail[i].ack, atomic_load(&hs->mail[i].req));
  r->addr = addr;
  atomic_store(&r->helper_stop, 0);
  pthread_attr_t at;
  int err = pthread_attr_init(&at);
  if (err != 0) return err;
  pthread_attr_setstacksize(&at, 64 << 10);
  err = pthread_create(&r->helper, &at, helper_thread, r);
  pthread_attr_destroy(&at);
  if (err == 0) r->helper_on = 1;
  return err;
}

static void helper_stop(struct reader *r) {
  if (!r->helper_on) return;
  atomic_store(&r->helper_stop, 1);
  struct xhs *hs = hs_of(r->f.h);
  atomic_fetch_add(&hs->bell, 1);
  futex(&hs->bell, FUTEX_WAKE, INT_MAX, NULL);
  pthread_join(r->helper, NULL);
  r->helper_on = 0;
}

/* Pushes pages [first, first + n) of the region (claimed by us, contiguous in
 * this process's mapping from src) into the reader with one
 * process_vm_writev (or one handshake request), then marks them copied. Returns 0 or the errno. */
static int push_run(struct pushctx *c, uint64_t first, uint64_t n, uintptr_t src, uint32_t done) {
  int err = 0;
  if (atomic_load(&c->handshake))
    err = hs_push(c, first, (uint32_t)n); /* the reader copies from the file: src not needed */
  else if (src == 0)
    err = EFAULT;
  else {
    size_t len = (size_t)(n * cowshm_page_size);
    struct iovec l = {(void *)src, len};
    struct iovec r = {(void *)(uintptr_t)(c->addr + first * cowshm_page_size), len};
    ssize_t got = c->refuse_direct ? (errno = EPERM, -1) : syscall(SYS_process_vm_writev, c->pid, &l, 1, &r, 1, 0);
    if (got != (ssize_t)len) err = got < 0 ? errno : EIO;
    if (err == EPERM) err = hs_fallback(c, first, (uint32_t)n);
  }
  /* The reader died (ESRCH): nobody can read the snapshot, nothing breaks. */
  if (err == ESRCH) err = 0;
  if (err != 0) mark_broken(c, err);
  for (uint64_t p = first; p < first + n; p++) atomic_store(&c->claims[p], done);
  return err;
}

/* SAFETY (signal context): futex, nanosleep, clock_gettime and
 * process_vm_writev are system calls; everything else is atomics on the
 * coordination file's mapping (live while the remote snapshot is) and on
 * fields of c that do not change while it is. Every wait is bounded.
 *
 * [lo, hi) is a chunk around the write (the snapshot's chunkSize). Its pages
 * are claimed in address order; runs of pages we claimed go in one
 * process_vm_writev each; then we wait for the pages other writers claimed
 * to be copied (nothing is held while waiting, so no two writers wait on
 * each other), and only then may the write land. */
static int push(void *ctxp, uint64_t lo, uint64_t hi) {
  struct pushctx *c = ctxp;
  uint64_t bound = (uint64_t)c->timeout_ms + 1000, start = now_ms();
  /* One instant: no write lands while arming is in progress. */
  while (atomic_load(&c->h->state) == ST_ARMING && atomic_load(&c->h->gen) == c->gen) {
    if (now_ms() - start > bound) {
      mark_broken(c, ETIMEDOUT);
      return 0;
    }
    struct timespec t = {0, 2000000};
    futex(&c->h->state, FUTEX_WAIT, ST_ARMING, &t);
  }
  /* Released or replaced: nobody holds this snapshot any more. */
  if (atomic_load(&c->h->state) != ST_ARMED || atomic_load(&c->h->gen) != c->gen) return 0;
  /* A claim: (generation << 8) | (slot << 2) | state. */
  uint32_t tag = (c->gen & 0xffffff) << 8;
  uint32_t mine = tag | ((uint32_t)c->slot << 2) | CLAIM_COPYING, done = tag | CLAIM_COPIED;
  uint64_t p0 = lo / cowshm_page_size, p1 = hi / cowshm_page_size;
  if (p1 > c->npages) p1 = c->npages;
  int result = 0, others = 0;
  /* The run of pages claimed and not pushed yet: [run, run + runlen) from runsrc. */
  uint64_t run = 0, runlen = 0;
  uintptr_t runsrc = 0;
  for (uint64_t p = p0; p < p1; p++) {
    _Atomic uint32_t *w = &c->claims[p];
    uint32_t v = atomic_load(w);
    int ours = 0;
    for (;;) {
      if (v == done) break;
      if ((v & ~0xffu) == tag && (v & 3) == CLAIM_COPYING) {
        /* Another writer is pushing this page (waited for below). One that
         * died (its slot lock is gone) never let its write through (a write
         * lands only after the push is done), so its claim is taken over.
         * (A claim of our own slot is another thread of this process.) */
        int claimant = (int)((v >> 2) & 63);
        if (claimant != c->slot && !held(c->fd, SLOT_LOCK + claimant) && atomic_compare_exchange_strong(w, &v, mine))
          ours = 1;
        else
          others = 1;
        break;
      }
      /* Untouched: a claim of another generation, or garbage. */
      if (atomic_compare_exchange_weak(w, &v, mine)) {
        ours = 1;
        break;
      }
    }
    uintptr_t src = ours ? local_page(c, p) : 0;
    if (runlen != 0 && (!ours || src == 0 || src != runsrc + runlen * cowshm_page_size)) {
      int err = push_run(c, run, runlen, runsrc, done);
      if (err != 0) result = err;
      runlen = 0;
    }
    if (!ours) continue;
    /* Ours: we moved it from untouched to COPYING. (Tests: hold the claim a while.) */
    if (atomic_load_explicit(&test_push_delay_us, memory_order_relaxed) > 0)
      nap_us(atomic_load_explicit(&test_push_delay_us, memory_order_relaxed));
    if (src == 0) {
      int err = push_run(c, p, 1, 0, done); /* no mapping of ours holds it: breaks the snapshot */
      if (err != 0) result = err;
      continue;
    }
    if (runlen == 0) {
      run = p;
      runsrc = src;
    }
    runlen++;
  }
  if (runlen != 0) {
    int err = push_run(c, run, runlen, runsrc, done);
    if (err != 0) result = err;
  }
  if (!others) return result;
  /* Pages that other writers are pushing: copied before our write lands. */
  for (uint64_t p = p0; p < p1; p++) {
    _Atomic uint32_t *w = &c->claims[p];
    uint64_t t0 = now_ms();
    for (uint32_t v = atomic_load(w); v != done; v = atomic_load(w)) {
      /* Released or replaced meanwhile: nobody needs the copy any more, and
       * waiting on would hold this thread (and, behind the engine's
       * handlers, this process's arming for the next snapshot). */
      if (atomic_load(&c->h->state) != ST_ARMED || atomic_load(&c->h->gen) != c->gen) return result;
      int copying = (v & ~0xffu) == tag && (v & 3) == CLAIM_COPYING;
      int claimant = (int)((v >> 2) & 63);
      /* Untouched again (a claim a joiner dropped: see drop_dead_claims, or
       * garbage), or the claim of a writer that died: ours to push. */
      if ((!copying || (claimant != c->slot && !held(c->fd, SLOT_LOCK + claimant))) &&
          atomic_compare_exchange_strong(w, &v, mine)) {
        int err = push_run(c, p, 1, local_page(c, p), done);
        if (err != 0) result = err;
        break;
      }
      if (now_ms() - t0 > bound) {
        mark_broken(c, ETIMEDOUT);
        result = ETIMEDOUT;
        break;
      }
      nap_us(20);
    }
  }
  return result;
}

/* ---- participants --------------------------------------------------------- */

/* Claims name their writer by slot, and a slot is reused by the next process
 * to join. A writer that died mid-push leaves claims in COPYING under its
 * slot; once a newcomer holds that slot, the others would take those claims
 * for the newcomer's and wait for them. So a joiner, holding its slot lock,
 * drops every COPYING claim of its slot back to untouched (0: no generation
 * is 0): nothing of its own is in flight yet, and a writer waiting on such a
 * claim then claims and pushes the page itself. Only the claims area's data
 * is read (SEEK_DATA: pages of the file never written stay unallocated), and
 * only while a snapshot is live: claims of an earlier generation count as
 * untouched anyway. */
static void drop_dead_claims(struct xfile *f, int slot) {
  uint32_t st = atomic_load(&f->h->state);
  if (st != ST_ARMING && st != ST_ARMED) return;
  off_t base = (off_t)cowshm_page_size, end = base + (off_t)(f->npages * 4);
  for (off_t at = base; at < end;) {
    off_t data = lseek(f->fd, at, SEEK_DATA), hole;
    if (data < 0 && errno == ENXIO) break; /* no data past `at` */
    if (data < 0) data = at, hole = end;   /* no SEEK_DATA here: read it all */
    else if ((hole = lseek(f->fd, data, SEEK_HOLE)) < 0 || hole > end) hole = end;
    for (uint64_t i = (uint64_t)(data - base) / 4; i < (uint64_t)(hole - base + 3) / 4 && i < f->npages; i++) {
      uint32_t v = atomic_load(&f->claims[i]);
      if ((v & 3) == CLAIM_COPYING && (int)((v >> 2) & 63) == slot) atomic_compare_exchange_strong(&f->claims[i], &v, 0);
    }
    at = hole;
  }
}

/* The checks of Trust, for the reader announced in f's header. */
static int verify_reader(struct xfile *f, pid_t pid, int rfd, uint64_t addr) {
  if (!held(f->fd, READER_LOCK)) return ESRCH;
  if (pid <= 0 || rfd < 0 || addr == 0 || addr % cowshm_page_size != 0) return EPROTO;
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%d", (int)pid);
  if (stat(path, &st) != 0) return ESRCH;
  if (st.st_uid != geteuid()) return EPERM; /* never push across users */
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, rfd);
  if (stat(path, &st) != 0 || st.st_dev != f->fdev || st.st_ino != f->fino) return ESRCH;
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *m = fopen(path, "re");
  if (m == NULL) return ESRCH;
  char line[512];
  int ok = 0;
  while (!ok && fgets(line, sizeof line, m) != NULL) {
    unsigned long long s, e, off, ino;
    unsigned maj, min;
    char perms[8];
    if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &s, &e, perms, &off, &maj, &min, &ino) != 7) continue;
    ok = s == addr && e - s >= f->size && off == 0 && strcmp(perms, "rw-p") == 0 && ino == f->ino &&
         maj == major(f->dev) && min == minor(f->dev);
  }
  fclose(m);
  return ok ? 0 : EPROTO;
}

/* The push path for this pair (see the top of the file), given what
 * verify_reader said: a reader of another user (EPERM) gets the handshake,
 * which needs no trust in it, and so does one the kernel will not let us
 * write into. */
static int choose_path(struct part *p, int *err, pid_t pid, int rfd, uint64_t addr, uint32_t gen) {
  if (*err == EPERM) {
    *err = 0;
    return PATH_HANDSHAKE;
  }
  if (*err != 0) return 0;
  if (p->hs_forced || atomic_load(&hs_of(p->f.h)->force_gen) == gen) return PATH_HANDSHAKE;
  if (p->refuse == 1) return PATH_HANDSHAKE; /* the probe, refused as under Yama */
  /* The probe: pidfd_getfd(2) of the reader's descriptor of the coordination
   * file (verify_reader checked it is that file) asks the kernel exactly what
   * process_vm_writev will (PTRACE_MODE_ATTACH_REALCREDS, Yama and LSMs
   * included) and touches nothing in the reader. A 1-byte process_vm_readv of
   * the snapshot would ask the same, but its fault maps the pages around the
   * address into the snapshot (fault-around), which smaps then counts as the
   * snapshot's private memory. The duplicate is closed at once: the reader's
   * OFD locks belong to its open file description, not to descriptors. */
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pfd >= 0) {
    int dup = (int)syscall(SYS_pidfd_getfd, pfd, rfd, 0);
    int e = errno;
    close(pfd);
    if (dup >= 0) {
      close(dup);
      return PATH_DIRECT;
    }
    if (e == EPERM) return PATH_HANDSHAKE;
    if (e != ENOSYS) return PATH_DIRECT; /* EBADF and the like: the push itself will tell */
  }
  /* Before Linux 5.6 (no pidfd_getfd): the read probe. */
  char b;
  struct iovec l = {&b, 1}, r = {(void *)(uintptr_t)addr, 1};
  if (syscall(SYS_process_vm_readv, pid, &l, 1, &r, 1, 0) < 0 && errno == EPERM) return PATH_HANDSHAKE;
  return PATH_DIRECT;
}

/* Arms for, or disarms from, what the header asks. Under p->mu. */
static void part_step(struct part *p) {
  struct xhdr *h = p->f.h;
  struct xslot *sl = &h->slot[p->slot];
  uint32_t st = atomic_load(&h->state), gen = atomic_load(&h->gen);
  int want = (st == ST_ARMING || st == ST_ARMED) && held(p->f.fd, READER_LOCK);
  if (p->remote != NULL && (!want || gen != p->push.gen)) {
    cowshm_snapshot_remote_release(p->remote);
    p->remote = NULL;
  }
  if (want && p->remote == NULL && p->tried_gen != gen) {
    p->tried_gen = gen;
    pid_t pid = (pid_t)atomic_load(&h->reader_pid);
    int rfd = (int)atomic_load(&h->reader_fd);
    uint64_t addr = atomic_load(&h->reader_addr);
    uint32_t tmo = atomic_load(&h->timeout_ms), chunk = atomic_load(&h->chunk);
    int err = verify_reader(&p->f, pid, rfd, addr);
    if (err == 0 && (chunk < cowshm_page_size || chunk > MAX_CHUNK || (chunk & (chunk - 1)) != 0)) err = EPROTO;
    int path = choose_path(p, &err, pid, rfd, addr, gen);
    if (err == 0) {
      p->push = (struct pushctx){h, p->f.claims, p->f.dev, p->f.ino, p->f.npages, pid, addr, gen,
                                 tmo > 600000 ? 600000 : tmo, p->f.fd, p->slot,
                                 .handshake = path == PATH_HANDSHAKE, .hs_wait_ms = p->hs_wait_ms,
                                 .refuse_direct = p->refuse != 0};
      hs_report(h, p->slot, gen, path);
      const char *call;
      p->remote = cowshm_snapshot_remote_create(p->f.dev, p->f.ino, p->f.size, chunk, push, &p->push, &err, &call);
    }
    atomic_store(&sl->err, (uint32_t)err);
    atomic_store(&sl->armed, gen);
    futex(&sl->armed, FUTEX_WAKE, INT_MAX, NULL);
  }
  if (p->remote == NULL) {
    atomic_store(&sl->idle, gen);
    futex(&sl->idle, FUTEX_WAKE, INT_MAX, NULL);
  }
}

static void *part_thread(void *arg) {
  struct part *p = arg;
  /* Faults of this thread are never ours, and no signal needs it. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    /* seq before stop: leave() stores stop, then bumps seq. If this load
     * sees the bump, the load of stop below sees stop; if not, the wait
     * below returns at once. Either way no wake-up is lost. */
    uint32_t s = atomic_load(&p->f.h->seq);
    if (atomic_load(&p->stop)) break;
    pthread_mutex_lock(&p->mu);
    part_step(p);
    int armed = p->remote != NULL;
    pthread_mutex_unlock(&p->mu);
    /* Armed, the slice is short: a dead reader (its lock gone, nobody to
     * bump seq) is noticed within it. Idle, only a reader's bump of seq (or
     * leave's) gives this thread anything to do, so it sleeps long: an idle
     * writer costs a wake-up a second. */
    struct timespec t = {armed ? 0 : 1, armed ? 50000000 : 0};
    futex(&p->f.h->seq, FUTEX_WAIT, s, &t);
  }
  return NULL;
}

/* xprocJoin(dev, ino, size, mode, handshakeWaitMs, forceHandshake) -> participant id
 * handshakeWaitMs: -1 waits for a stalled reader as long as it lives. */
static napi_value join_js(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint64_t dev, ino, size, mode;
  int32_t hs_wait, hs_forced;
  if (!cowshm_args(env, info, 6, argv) || !cowshm_get_u64(env, argv[0], &dev) ||
      !cowshm_get_u64(env, argv[1], &ino) || !cowshm_get_u64(env, argv[2], &size) ||
      !cowshm_get_u64(env, argv[3], &mode) || !cowshm_get_i32(env, argv[4], &hs_wait) ||
      !cowshm_get_i32(env, argv[5], &hs_forced))
    return NULL;
  pthread_mutex_lock(&table_mu);
  int id = -1;
  for (int i = 0; i < MAX_CTX && id < 0; i++)
    if (!parts[i].used) id = i;
  if (id < 0) {
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, EMFILE, "xprocJoin", "at most 64 regions per process take part in cross-process snapshots");
  }
  struct part *p = &parts[id];
  memset(p, 0, sizeof *p);
  p->hs_wait_ms = hs_wait < 0 ? HS_FOREVER : (uint32_t)hs_wait;
  p->hs_forced = hs_forced != 0;
  /* Tests: COWSHM_XPROC_REFUSE_DIRECT=1 refuses process_vm_readv/writev into
   * readers as Yama ptrace_scope >= 1 does (EPERM), =push only the pushes
   * (so a refusal while a snapshot is live is seen), as a machine without
   * Yama cannot. */
  const char *refuse = getenv("COWSHM_XPROC_REFUSE_DIRECT");
  p->refuse = refuse == NULL ? 0 : strcmp(refuse, "1") == 0 ? 1 : strcmp(refuse, "push") == 0 ? 2 : 0;
  const char *delay = getenv("COWSHM_TEST_XPROC_PUSH_DELAY_US");
  long us = delay == NULL ? 0 : strtol(delay, NULL, 10);
  atomic_store(&test_push_delay_us, us < 0 ? 0 : us > 999999 ? 999999 : us);
  const char *call = "open";
  char why[320];
  int err = xfile_open(&p->f, dev, ino, size, (uint32_t)mode, &call, why, sizeof why);
  if (err != 0) {
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, err, call, why);
  }
  p->slot = -1;
  for (int i = 0; i < MAX_PARTS && p->slot < 0; i++)
    if (lock_byte(p->f.fd, SLOT_LOCK + i, 1, F_WRLCK, 0) == 0) p->slot = i;
  if (p->slot < 0) {
    init_unlock(&p->f);
    xfile_close(&p->f);
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, EUSERS, "fcntl", "at most 64 processes take part in one region's snapshots");
  }
  drop_dead_claims(&p->f, p->slot);
  struct xslot *sl = &p->f.h->slot[p->slot];
  atomic_store(&sl->pid, (uint32_t)getpid());
  atomic_store(&sl->armed, 0);
  atomic_store(&sl->idle, 0);
  pthread_mutex_init(&p->mu, NULL);
  /* Pairs with the reader's fence between storing ARMING and scanning the
   * slot locks: either it sees our lock, or we see its state. */
  atomic_thread_fence(memory_order_seq_cst);
  part_step(p); /* a snapshot in progress: arm before any write of ours */
  init_unlock(&p->f);
  if ((err = pthread_create(&p->thread, NULL, part_thread, p)) != 0) {
    if (p->remote != NULL) cowshm_snapshot_remote_release(p->remote);
    xfile_close(&p->f);
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, err, "pthread_create", why);
  }
  p->env = env;
  p->pid = getpid();
  p->used = 1;
  pthread_mutex_unlock(&table_mu);
  return cowshm_num(env, id);
}

static void part_leave(struct part *p);

/* xprocLeave(id) */
static napi_value leave_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t id;
  if (!cowshm_args(env, info, 1, argv) || !cowshm_get_i32(env, argv[0], &id)) return NULL;
  pthread_mutex_lock(&table_mu);
  if (id < 0 || id >= MAX_CTX || !parts[id].used) {
    pthread_mutex_unlock(&table_mu);
    return cowshm_undefined(env);
  }
  part_leave(&parts[id]);
  pthread_mutex_unlock(&table_mu);
  return cowshm_undefined(env);
}

/* Leaves: no arming, no pushes from this process for p any more; the file
 * goes if nobody else holds it. Under table_mu. */
static void part_leave(struct part *p) {
  atomic_store(&p->stop, 1);
  /* A bump, not only a wake: a thread between its load of seq and its wait
   * would sleep through a bare wake (the others just look again). */
  atomic_fetch_add(&p->f.h->seq, 1);
  futex(&p->f.h->seq, FUTEX_WAKE, INT_MAX, NULL);
  pthread_join(p->thread, NULL);
  if (p->remote != NULL) cowshm_snapshot_remote_release(p->remote);
  p->remote = NULL;
  /* Nothing of ours can push any more: say so to a reader waiting to unmap. */
  atomic_store(&p->f.h->slot[p->slot].idle, atomic_load(&p->f.h->gen));
  futex(&p->f.h->slot[p->slot].idle, FUTEX_WAKE, INT_MAX, NULL);
  xfile_unlink_if_last(&p->f);
  xfile_close(&p->f);
  pthread_mutex_destroy(&p->mu);
  p->used = 0;
}

/* ---- readers --------------------------------------------------------------- */

/* Whether no live participant may still push into a disarmed reader's
 * mapping: only one that armed for its generation pushes into it, until it
 * says it is idle for that generation (or dies: its slot lock goes). */
static int reader_drained(struct reader *r) {
  struct xhdr *h = r->f.h;
  for (int i = 0; i < MAX_PARTS; i++) {
    if (!held(r->f.fd, SLOT_LOCK + i)) continue;
    struct xslot *sl = &h->slot[i];
    if (atomic_load(&sl->armed) == r->gen && atomic_load(&sl->err) == 0 && atomic_load(&sl->idle) != r->gen) return 0;
  }
  return 1;
}

/* A drained reader's end: the file goes if nobody else holds it. Under table_mu. */
static void reader_finish(struct reader *r) {
  xfile_unlink_if_last(&r->f);
  xfile_close(&r->f);
  r->used = 0;
}

static void reader_disarm(struct reader *r) {
  struct xhdr *h = r->f.h;
  /* Once: after the reader lock goes, the header may be another reader's. */
  if (r->disarmed) return;
  r->disarmed = 1;
  atomic_store(&h->state, ST_IDLE);
  atomic_fetch_add(&h->seq, 1);
  futex(&h->state, FUTEX_WAKE, INT_MAX, NULL);
  futex(&h->seq, FUTEX_WAKE, INT_MAX, NULL);
  /* Writers waiting for an answer see IDLE and go on; nothing copies into
   * the mapping once the helper is joined. */
  helper_stop(r);
  lock_byte(r->f.fd, READER_LOCK, 1, F_UNLCK, 0);
}

static void reap_parked(void);

/* xprocArm(dev, ino, size, mode, mapping, timeoutMs, chunk, forceHandshake) -> reader id
 * mapping: the id of this environment's private mapping of the whole region
 * (mapView), which the reader's environment must not unmap before it drained.
 * Throws ETIMEDOUT naming the pid of a participant that did not answer. */
static napi_value arm_js(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  uint64_t dev, ino, size, mode, tmo, chunk;
  double map_id;
  int32_t hs_forced;
  if (!cowshm_args(env, info, 8, argv) || !cowshm_get_u64(env, argv[0], &dev) ||
      !cowshm_get_u64(env, argv[1], &ino) || !cowshm_get_u64(env, argv[2], &size) ||
      !cowshm_get_u64(env, argv[3], &mode) || !cowshm_get_u64(env, argv[5], &tmo) ||
      !cowshm_get_u64(env, argv[6], &chunk) || !cowshm_get_i32(env, argv[7], &hs_forced))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[4], &map_id));
  /* Checked in TypeScript; here what the participants will check. */
  if (chunk < cowshm_page_size || chunk > MAX_CHUNK || (chunk & (chunk - 1)) != 0)
    return cowshm_throw_range(env, "cowshm internal error: bad snapshot chunk");
  struct cowshm_slot *ms = cowshm_slot_by_id(map_id);
  if (ms == NULL || ms->env != env || atomic_load(&ms->state) != SLOT_MAPPED || ms->len < size)
    return cowshm_throw_range(env, "cowshm internal error: no mapping of the region for the snapshot");
  uint64_t addr = ms->start;
  pthread_mutex_lock(&table_mu);
  reap_parked();
  int id = -1;
  for (int i = 0; i < MAX_READERS && id < 0; i++)
    if (!readers[i].used) id = i;
  if (id < 0) {
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, EMFILE, "snapshot", "at most 64 cross-process snapshots per process");
  }
  struct reader *r = &readers[id];
  memset(r, 0, sizeof *r);
  const char *call = "open";
  char why[320];
  int err = xfile_open(&r->f, dev, ino, size, (uint32_t)mode, &call, why, sizeof why);
  if (err != 0) {
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, err, call, why);
  }
  r->env = env;
  r->pid = getpid();
  r->map_id = map_id;
  r->used = 1;
  pthread_mutex_unlock(&table_mu);
  if (lock_byte(r->f.fd, READER_LOCK, 1, F_WRLCK, 0) != 0) {
    init_unlock(&r->f);
    xfile_close(&r->f);
    pthread_mutex_lock(&table_mu);
    r->used = 0;
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, EBUSY, "snapshot",
                              "another cross-process snapshot of this region is live: one at a time per region");
  }
  init_unlock(&r->f);
  struct xhdr *h = r->f.h;
  atomic_store(&h->reader_pid, (uint32_t)getpid());
  atomic_store(&h->reader_fd, (uint32_t)r->f.fd);
  atomic_store(&h->reader_addr, addr);
  atomic_store(&h->timeout_ms, (uint32_t)(tmo > 600000 ? 600000 : tmo));
  atomic_store(&h->chunk, (uint32_t)chunk);
  /* Generation 0 would match unset slots; skip it (and keep 24 bits for claims). */
  uint32_t gen = (atomic_load(&h->gen) + 1) & 0xffffff;
  if (gen == 0) gen = 1;
  r->gen = gen;
  if ((err = helper_start(r, (uintptr_t)addr)) != 0) {
    lock_byte(r->f.fd, READER_LOCK, 1, F_UNLCK, 0);
    /* Nothing was armed: the file goes if nobody else is using it. */
    pthread_mutex_lock(&table_mu);
    reader_finish(r);
    pthread_mutex_unlock(&table_mu);
    return cowshm_throw_errno(env, err, "pthread_create", "the helper thread of a cross-process snapshot");
  }
  atomic_store(&hs_of(h)->force_gen, hs_forced ? gen : 0);
  atomic_store(&h->gen, gen);
  atomic_store(&h->state, ST_ARMING);
  atomic_fetch_add(&h->seq, 1);
  atomic_thread_fence(memory_order_seq_cst);
  futex(&h->seq, FUTEX_WAKE, INT_MAX, NULL);
  uint64_t deadline = now_ms() + tmo;
  for (int i = 0; i < MAX_PARTS && err == 0; i++) {
    struct xslot *sl = &h->slot[i];
    for (;;) {
      if (!held(r->f.fd, SLOT_LOCK + i)) break; /* no participant, or it died */
      uint32_t a = atomic_load(&sl->armed);
      if (a == gen) {
        err = (int)atomic_load(&sl->err);
        if (err != 0)
          snprintf(why, sizeof why, "process %u could not arm for this snapshot of %s", atomic_load(&sl->pid), r->f.path);
        break;
      }
      uint64_t t = now_ms();
      if (t >= deadline) {
        err = ETIMEDOUT;
        snprintf(why, sizeof why,
                 "process %u, which writes this region, did not arm within %llu ms (stopped, or a debugger holds it)",
                 atomic_load(&sl->pid), (unsigned long long)tmo);
        break;
      }
      struct timespec ts = {0, 1000000};
      futex(&sl->armed, FUTEX_WAIT, a, &ts);
    }
  }
  if (err == 0 && atomic_load(&h->broken_gen) == gen) err = (int)atomic_load(&h->broken_err);
  if (err < 0 || err > 4095) err = EPROTO; /* garbage in a slot: say so, never a made-up errno */
  if (err != 0) {
    reader_disarm(r);
    /* Keep the mapping until everyone armed has let go: xprocDrained. */
    napi_value e = cowshm_throw_errno(env, err, "snapshot", why);
    (void)e;
    napi_value ex;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending && napi_get_and_clear_last_exception(env, &ex) == napi_ok) {
      napi_value idv = cowshm_num(env, id);
      napi_set_named_property(env, ex, "readerId", idv);
      napi_throw(env, ex);
    }
    return NULL;
  }
  atomic_store(&h->state, ST_ARMED);
  futex(&h->state, FUTEX_WAKE, INT_MAX, NULL);
  return cowshm_num(env, id);
}

static struct reader *reader_of(napi_env env, napi_value v) {
  int32_t id;
  if (!cowshm_get_i32(env, v, &id)) return NULL;
  if (id < 0 || id >= MAX_READERS || !readers[id].used) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the cross-process snapshot is released");
    return NULL;
  }
  return &readers[id];
}

/* xprocBroken(id) -> errno of a push that failed, or 0 */
static napi_value broken_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  struct reader *r = reader_of(env, argv[0]);
  if (r == NULL) return NULL;
  struct xhdr *h = r->f.h;
  int err = atomic_load(&h->broken_gen) == r->gen ? (int)atomic_load(&h->broken_err) : 0;
  /* Someone else's generation in the header while we hold the reader lock:
   * garbage, and our snapshot's pushes may have stopped. */
  if (atomic_load(&h->gen) != r->gen || atomic_load(&h->state) != ST_ARMED) err = err ? err : EPROTO;
  if (err < 0 || err > 4095) err = EPROTO;
  return cowshm_num(env, err);
}

/* xprocWriters(id) -> [pid, path, pid, path, ...]: the live participants
 * armed for this snapshot and the push path each uses (1 direct, 2
 * handshake), as their slots say (a report: nothing here is trusted). */
static napi_value writers_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  struct reader *r = reader_of(env, argv[0]);
  if (r == NULL) return NULL;
  struct xhdr *h = r->f.h;
  napi_value out;
  NAPI_OK(env, napi_create_array(env, &out));
  uint32_t n = 0;
  for (int i = 0; i < MAX_PARTS; i++) {
    struct xslot *sl = &h->slot[i];
    if (atomic_load(&sl->armed) != r->gen || atomic_load(&sl->err) != 0 || !held(r->f.fd, SLOT_LOCK + i)) continue;
    uint32_t path = atomic_load(&hs_of(h)->mail[i].path);
    if (path >> 8 != (r->gen & 0xffffff) || ((path & 0xff) != PATH_DIRECT && (path & 0xff) != PATH_HANDSHAKE)) continue;
    NAPI_OK(env, napi_set_element(env, out, n++, cowshm_num(env, atomic_load(&sl->pid))));
    NAPI_OK(env, napi_set_element(env, out, n++, cowshm_num(env, path & 0xff)));
  }
  return out;
}

/* xprocRelease(id): no participant arms for this snapshot any more. */
static napi_value release_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  struct reader *r = reader_of(env, argv[0]);
  if (r == NULL) return NULL;
  reader_disarm(r);
  return cowshm_undefined(env);
}

/* xprocDrained(id) -> whether no live participant may still push into the
 * snapshot's mapping; when true, the reader is gone and the mapping may go. */
static napi_value drained_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  struct reader *r = reader_of(env, argv[0]);
  if (r == NULL) return NULL;
  pthread_mutex_lock(&table_mu);
  int drained = reader_drained(r);
  if (drained) reader_finish(r);
  pthread_mutex_unlock(&table_mu);
  napi_value b;
  NAPI_OK(env, napi_get_boolean(env, drained, &b));
  return b;
}

/* ---- the end of an environment, or of the process ------------------------ */

/* Whatever a program does not release or close goes when its environment
 * ends (a worker that exits or is terminated, the main thread's event loop
 * running out: env_ended) or when the process exits (process.exit(), an
 * uncaught exception: process_exits, from atexit, which Node reaches without
 * running the main environment's cleanup hooks). A reader is disarmed first,
 * so that a participant of this same environment that then leaves has
 * nothing left to push; then every participant leaves; then each reader
 * ends if it drained, and the file goes with the last of its users, under
 * remove_if_unheld's rule. Writers in other processes see the reader gone as
 * they see a released one (state IDLE, its lock dropped) and go on.
 *
 * A reader that has not drained (a writer elsewhere has not acknowledged
 * yet, or is stopped) may still be pushed into, by address. Its mapping is
 * taken from the environment (cowshm_mapping_take: a PROT_NONE reservation,
 * so no later mapping can land where a push would) and the reaper unmaps it
 * once it drained. The file is not ours to remove meanwhile: that writer
 * holds its slot lock, and removes the file when it leaves. At process exit
 * nothing waits: the kernel takes the mapping with the process, and a push
 * into a process that is gone fails with ESRCH, which a writer takes for a
 * dead reader.
 *
 * Order with the addon's other cleanup hooks: Node runs them newest first.
 * The buffers' own hooks (made later) have detached every buffer already;
 * this one is added in cowshm_init_xproc, after env.c's, so it runs before
 * env.c's hook unmaps the environment's mappings (registry and views are
 * still there for a participant to release its write protection, and for
 * cowshm_mapping_take). futex.c's hook (added after) runs before this one and
 * touches nothing here. A forked child inherits the tables and the open file
 * descriptions, whose locks are the parent's: only the process that joined
 * or armed (pid) lets go of anything. */
static int reaper_on;

/* Ends the parked readers that drained. Under table_mu; returns how many are still parked. */
static int reap_locked(void) {
  int left = 0;
  for (int i = 0; i < MAX_READERS; i++) {
    struct reader *r = &readers[i];
    if (!r->used || !r->parked) continue;
    if (!reader_drained(r)) {
      left++;
      continue;
    }
    if (r->park_len != 0) munmap((void *)r->park_start, r->park_len);
    reader_finish(r);
  }
  return left;
}

static void reap_parked(void) { (void)reap_locked(); }

/* Runs while readers are parked, every 10 ms (a writer acknowledges within
 * one turn of its arming thread), and ends when none is. */
static void *reaper(void *arg) {
  (void)arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    nap_us(10000);
    pthread_mutex_lock(&table_mu);
    int left = reap_locked();
    if (left == 0) reaper_on = 0;
    pthread_mutex_unlock(&table_mu);
    if (left == 0) return NULL;
  }
}

/* Under table_mu, for a reader of env that has not drained. */
static void reader_park(napi_env env, struct reader *r) {
  r->parked = 1;
  r->env = NULL;
  if (!cowshm_mapping_take(env, r->map_id, &r->park_start, &r->park_len)) r->park_len = 0;
  if (reaper_on) return;
  pthread_t t;
  pthread_attr_t at;
  if (pthread_attr_init(&at) != 0) return;
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, 64 << 10);
  /* Without a reaper (no thread to be had), the next xprocArm of any
   * environment reaps: reap_parked. */
  if (pthread_create(&t, &at, reaper, NULL) == 0) reaper_on = 1;
  pthread_attr_destroy(&at);
}

/* env: the environment that ends; NULL: the process exits (everything of this process). */
static void end_all(napi_env env) {
  pid_t self = getpid();
  pthread_mutex_lock(&table_mu);
#define OURS(x) ((x)->used && (x)->pid == self && (env == NULL || (x)->env == env))
  for (int i = 0; i < MAX_READERS; i++)
    if (OURS(&readers[i]) && !readers[i].parked) reader_disarm(&readers[i]);
  for (int i = 0; i < MAX_CTX; i++)
    if (OURS(&parts[i])) part_leave(&parts[i]);
  for (int i = 0; i < MAX_READERS; i++) {
    struct reader *r = &readers[i];
    if (!OURS(r) || r->parked) continue;
    if (reader_drained(r)) reader_finish(r);
    else if (env != NULL) reader_park(env, r);
  }
#undef OURS
  pthread_mutex_unlock(&table_mu);
}

static void env_ended(void *arg) { end_all(arg); }
static void process_exits(void) { end_all(NULL); }
static void at_exit_once(void) { atexit(process_exits); }

/* xprocReclaim(fd, path, waitMs) -> 0 removed, 1 held (a reader or a
 * participant holds a lock), 2 replaced (the name leads to another file
 * now), 3 busy (a process creating, joining or removing it held INIT_LOCK
 * for waitMs). fd: the file, opened read-write. cowshm rm --orphans: the
 * rule is remove_if_unheld's, the one a last user leaving applies. */
static napi_value reclaim_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, wait_ms;
  char path[sizeof ((struct xfile *)0)->path];
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_str(env, argv[1], path, sizeof path) || !cowshm_get_i32(env, argv[2], &wait_ms))
    return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return cowshm_throw_errno(env, errno, "fstat", path);
  uint64_t deadline = now_ms() + (uint64_t)(wait_ms < 0 ? 0 : wait_ms);
  int e;
  while ((e = lock_byte(fd, INIT_LOCK, 1, F_WRLCK, 0)) != 0) {
    if (e != EAGAIN && e != EACCES) return cowshm_throw_errno(env, e, "fcntl", path);
    if (now_ms() >= deadline) return cowshm_num(env, 3);
    nap_us(2000);
  }
  e = remove_if_unheld(fd, path, st.st_dev, st.st_ino);
  lock_byte(fd, INIT_LOCK, 1, F_UNLCK, 0);
  if (e == 0 || e == EBUSY || e == ESTALE) return cowshm_num(env, e == 0 ? 0 : e == EBUSY ? 1 : 2);
  return cowshm_throw_errno(env, e, "unlink", path);
}

napi_value cowshm_init_xproc(napi_env env, napi_value exports) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, at_exit_once);
  NAPI_OK(env, napi_add_env_cleanup_hook(env, env_ended, env));
  napi_property_descriptor props[] = {
      {"xprocJoin", NULL, join_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocLeave", NULL, leave_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocArm", NULL, arm_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocBroken", NULL, broken_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocWriters", NULL, writers_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocRelease", NULL, release_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocDrained", NULL, drained_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xprocReclaim", NULL, reclaim_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  /* The file's layout, for cowshm ls / rm --orphans (src/coordination.ts). */
  napi_value layout;
  NAPI_OK(env, napi_create_object(env, &layout));
  const struct { const char *name; double v; } fields[] = {
      {"readerLock", READER_LOCK}, {"slotLock", SLOT_LOCK}, {"maxParticipants", MAX_PARTS},
      {"initLock", INIT_LOCK},     {"magic", XMAGIC},       {"version", XVERSION},
  };
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
    NAPI_OK(env, napi_set_named_property(env, layout, fields[i].name, cowshm_num(env, fields[i].v)));
  NAPI_OK(env, napi_set_named_property(env, exports, "xprocLayout", layout));
  return exports;
}
