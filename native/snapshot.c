/* Snapshots: point-in-time copies of a region, paid for page by page.
 *
 * A snapshot is a MAP_PRIVATE mapping of the region's file. Its untouched
 * pages are the region's own page-cache pages, so it costs nothing to make;
 * to freeze it, every write mapping (ACCESS_WRITE slot) of the region in this
 * process is write-protected, and the first write to a page goes through the
 * fault handler below, which makes the kernel copy the page into every live
 * snapshot (MADV_POPULATE_WRITE on the snapshot's private mapping breaks the
 * kernel's own copy-on-write) and then lets the write through.
 *
 * How a range is write-protected is the backend's business (backend.h):
 * userfaultfd (uffd.c; SIGBUS, no VMA splits) or mprotect (backend.c;
 * SIGSEGV, a chunk size chosen per region to stay below vm.max_map_count).
 * Each region with live snapshots (a domain) has one backend and one
 * protection chunk; each snapshot copies at least that chunk, or its own
 * larger one.
 *
 * A copy that fails (ENOMEM in a full memory cgroup) never stops the write: the snapshot records the errno, which is
 * sticky, and from then on is "broken" (Snapshot.exact false; every reader
 * throws ERR_COWSHM_SNAPSHOT_BROKEN, and writeTo() checks it before its
 * rename). The writing thread sees nothing: its write lands in the region.
 *
 * Concurrency. Snapshot creation, release, new mappings and prepareWrite run
 * under cowshm_registry_lock (one writer at a time). The fault handler takes
 * no lock and never allocates: the tables below are static, and what it
 * reads is published with atomics. The ordering that matters is between a
 * handler that un-protects a page and a writer that (re-)protects it:
 *
 *   handler: reads the live snapshots, copies the page into each, un-protects
 *   creator: publishes a new snapshot, then protects every write mapping
 *
 * If a handler read the table before the new snapshot was published and
 * un-protected its page after the creator protected it, the page would be
 * writable without the new snapshot holding a copy. A small grace-period
 * scheme (SRCU-like) rules this out: a handler runs its read-copy-unprotect
 * step inside a reader section counted in gp_readers[epoch & 1]; a writer,
 * after publishing, advances gp_epoch and waits until the readers of the old
 * epoch are gone (synchronize()). Handlers that start after the advance see
 * the new state; those that started before have finished, un-protect
 * included, before the writer protects anything. Releasing a snapshot uses
 * the same wait before its mapping goes, so no handler copies into memory
 * that is being unmapped. The waits are short: readers never block.
 */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define MAX_DOMAINS 64
#define MAX_SNAPSHOTS 256
/* A fault that keeps finding the state changing under it (a slot reused, a
 * new protection) is looked at again this many times, then retried. */
#define MAX_ATTEMPTS 1000

/* A region (dev, ino) with at least one live snapshot. Every field is written
 * under the registry lock before any slot names the domain (wp = index + 1),
 * and stays unchanged while one does. */
struct domain {
  int used;
  uint64_t dev, ino;
  const struct cowshm_backend *ops; /* fixed while used */
  size_t chunk;                     /* protection granularity, power of two >= page */
  int nsnaps;                       /* live snapshots */
};

enum snap_state { SNAP_FREE = 0, SNAP_LIVE = 1, SNAP_GONE = 2 };

struct snapshot {
  _Atomic int state;
  int domain;
  uint64_t off, len;      /* file range covered, page aligned */
  size_t chunk;           /* copy granularity: a power of two >= the domain's chunk */
  uintptr_t addr;         /* the private mapping */
  _Atomic uint64_t *bits; /* one bit per page: set once the page's copy was attempted */
  _Atomic size_t copied;
  _Atomic int error;      /* errno of the first copy that failed: the snapshot is broken */
  struct cowshm_slot *slot;
  /* A snapshot held by another process (xproc.c): no mapping here; a copy is
   * a push, made by this function instead of madvise. Fixed while live. */
  cowshm_push_fn push;
  void *push_ctx;
};

static struct domain domains[MAX_DOMAINS];
static struct snapshot snaps[MAX_SNAPSHOTS];
static _Atomic size_t snap_high;

/* Grace periods (see the top of the file). */
static _Atomic unsigned long gp_epoch;
static _Atomic long gp_readers[2];
/* Advanced before every (re-)protection, so a handler can tell a fresh
 * protection from a fault it cannot resolve (ENOSPC, truncation). */
static _Atomic unsigned long protect_gen;
/* Once protection has been armed, write faults in write mappings may be
 * stale (the protection went away before the handler ran). */
static _Atomic int ever_armed;

static const struct cowshm_backend_choice *choice;
/* COWSHM_FAIL_SNAPSHOT_COPY=N: the Nth copy of a chunk into a snapshot (from
 * the handler or prepareWrite, counted process-wide) fails with ENOMEM, as it
 * does in a full memory cgroup, so tests can break a snapshot on demand
 * without privileges. */
static unsigned long fail_copy_at;
static _Atomic unsigned long copies_tried;

static size_t ps(void) { return cowshm_page_size; }
static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }
static uint64_t align_down(uint64_t v, uint64_t chunk) { return v & ~(chunk - 1); }
static uint64_t align_up(uint64_t v, uint64_t chunk) { return (v + chunk - 1) & ~(chunk - 1); }

/* ---- grace periods ------------------------------------------------------ */

/* SAFETY (signal context): atomics only, and bounded: the loop repeats only
 * while writers advance the epoch, which they do a few times per snapshot. */
static unsigned long reader_enter(void) {
  for (;;) {
    unsigned long e = atomic_load(&gp_epoch);
    atomic_fetch_add(&gp_readers[e & 1], 1);
    if (atomic_load(&gp_epoch) == e) return e;
    atomic_fetch_sub(&gp_readers[e & 1], 1);
  }
}

static void reader_exit(unsigned long e) { atomic_fetch_sub(&gp_readers[e & 1], 1); }

/* Writers only (under the registry lock). Readers never block, so the wait
 * is as long as the longest handler already running. */
static void synchronize(void) {
  unsigned long e = atomic_fetch_add(&gp_epoch, 1);
  while (atomic_load(&gp_readers[e & 1]) != 0) sched_yield();
}

/* ---- helpers ------------------------------------------------------------ */

static int is_write_slot_of(const struct cowshm_slot *s, const struct domain *d) {
  return atomic_load(&s->state) == SLOT_MAPPED && s->access == ACCESS_WRITE && s->dev == d->dev &&
         s->ino == d->ino;
}

static int find_domain(uint64_t dev, uint64_t ino) {
  for (int i = 0; i < MAX_DOMAINS; i++)
    if (domains[i].used && domains[i].dev == dev && domains[i].ino == ino) return i;
  return -1;
}

/* Marks pages [first, first + n) of a snapshot copied; returns how many were new. */
static size_t mark_copied(struct snapshot *sn, size_t first, size_t n) {
  size_t added = 0;
  for (size_t i = first; i < first + n; i++) {
    uint64_t bit = (uint64_t)1 << (i & 63);
    uint64_t old = atomic_fetch_or(&sn->bits[i >> 6], bit);
    if (!(old & bit)) added++;
  }
  if (added) atomic_fetch_add(&sn->copied, added);
  return added;
}

static int all_copied(struct snapshot *sn, size_t first, size_t n) {
  for (size_t i = first; i < first + n; i++)
    if (!(atomic_load_explicit(&sn->bits[i >> 6], memory_order_acquire) & ((uint64_t)1 << (i & 63)))) return 0;
  return 1;
}

/* Copies file range [lo, hi) into every live snapshot of domain d that has
 * not copied it yet (each widens it to its own chunk). Returns how many
 * snapshots needed a copy, failed copies included: a failure breaks that
 * snapshot, and the write goes ahead.
 * SAFETY (signal context): runs inside a reader section (or under the
 * registry lock), so no snapshot it sees LIVE is unmapped or freed before it
 * returns (release waits in synchronize()). The state load is an acquire that
 * pairs with the release store publishing the snapshot: its fields and bits
 * are complete. madvise(2) is a plain system call, and the kernel's COW it
 * forces is idempotent, so two threads copying one page repeat a no-op. */
static int copy_into_snapshots(int d, uint64_t lo, uint64_t hi) {
  int copies = 0;
  size_t high = atomic_load(&snap_high);
  for (size_t i = 0; i < high; i++) {
    struct snapshot *sn = &snaps[i];
    if (atomic_load_explicit(&sn->state, memory_order_acquire) != SNAP_LIVE || sn->domain != d) continue;
    uint64_t a = max64(align_down(lo, sn->chunk), sn->off);
    uint64_t b = min64(align_up(hi, sn->chunk), sn->off + sn->len);
    if (a >= b) continue;
    size_t first = (size_t)((a - sn->off) / ps()), n = (size_t)((b - a) / ps());
    if (all_copied(sn, first, n)) continue;
    int err = 0;
    if (fail_copy_at != 0 && atomic_fetch_add(&copies_tried, 1) + 1 == fail_copy_at)
      err = ENOMEM;
    else if (sn->push != NULL)
      err = sn->push(sn->push_ctx, a, b);
    else if (madvise((void *)(sn->addr + (a - sn->off)), (size_t)(b - a), MADV_POPULATE_WRITE) != 0)
      err = errno;
    if (err != 0) {
      int expected = 0;
      atomic_compare_exchange_strong(&sn->error, &expected, err);
    }
    /* Set only once the copy was made (or failed, which the error records
     * first): "bit set and no error" always means "copy done". */
    mark_copied(sn, first, n);
    copies++;
  }
  return copies;
}

/* ---- the fault handler --------------------------------------------------- */

/* How much around file offset `at` may be made writable at once: the largest
 * chunk (the domain's at least) that every live snapshot overlapping it
 * copies whole, so that protection is lifted only where every live snapshot
 * has its copy. Chunks are powers of two, aligned, so they nest: the smallest
 * chunk among the snapshots that overlap the candidate decides, and the
 * candidate only shrinks, so the loop ends.
 * SAFETY (signal context): reads the snapshot table as copy_into_snapshots
 * does, inside the same reader section. A snapshot published meanwhile is
 * protected again by its creator after this section ends (synchronize()). */
static size_t lift_size(int d, uint64_t at) {
  size_t high = atomic_load(&snap_high), lift = domains[d].chunk;
  for (size_t i = 0; i < high; i++) {
    const struct snapshot *sn = &snaps[i];
    if (atomic_load_explicit(&sn->state, memory_order_acquire) == SNAP_LIVE && sn->domain == d && sn->chunk > lift)
      lift = sn->chunk;
  }
  for (;;) {
    uint64_t c0 = align_down(at, lift), c1 = c0 + lift;
    size_t next = lift;
    for (size_t i = 0; i < high; i++) {
      const struct snapshot *sn = &snaps[i];
      if (atomic_load_explicit(&sn->state, memory_order_acquire) != SNAP_LIVE || sn->domain != d) continue;
      if (sn->off < c1 && c0 < sn->off + sn->len && sn->chunk < next) next = sn->chunk;
    }
    if (next >= lift) return lift;
    lift = next;
  }
}

/* Copy, then un-protect, the chunk around `page` of write mapping s (see
 * lift_size). Returns how many snapshots needed a copy. Signal context,
 * inside a reader section. */
static int resolve(const struct cowshm_slot *s, int d, uintptr_t page) {
  uint64_t vlo = s->file_offset, vhi = s->file_offset + s->len;
  uint64_t at = vlo + (page - s->start);
  size_t lift = lift_size(d, at);
  uint64_t c0 = align_down(at, lift), c1 = c0 + lift;
  uint64_t lo = max64(c0, vlo), hi = min64(c1, vhi);
  const struct domain *dom = &domains[d];
  int copies = copy_into_snapshots(d, c0, c1);
  if (dom->ops->unprotect(s->start + (uintptr_t)(lo - vlo), (size_t)(hi - lo)) == 0) return copies;
  /* Out of VMAs (mprotect at vm.max_map_count): give the whole mapping its
   * copies now and unprotect it in one piece, which merges its VMAs instead
   * of splitting them. Slow, but exact, and no crash. */
  copy_into_snapshots(d, vlo, vhi);
  dom->ops->unprotect(s->start, s->len);
  return copies;
}

/* Returns 1 when the fault was a write to a protected page of a write mapping
 * and is resolved (the instruction may be retried), 0 when it is not ours.
 * SAFETY (signal context): no locks, no allocation; the tables are static and
 * every shared field is read as argued at each step. */
int cowshm_snapshot_fault(int sig, siginfo_t *si, void *uctx) {
  /* SAFETY: relaxed is enough. ever_armed is stored before anything is
   * protected, and a thread can only fault on a protection once the kernel
   * has changed the page tables, which orders that store before the fault:
   * a 0 here means this fault is not one of ours. */
  if (!atomic_load_explicit(&ever_armed, memory_order_relaxed)) return 0;
  const struct cowshm_backend *b = cowshm_backend_for_signal(sig);
  if (b == NULL || !b->is_write_fault(si, uctx)) return 0;
  uintptr_t addr = (uintptr_t)si->si_addr, page = addr & ~(uintptr_t)(ps() - 1);
  for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    uint32_t gen;
    struct cowshm_slot *s = cowshm_slot_find_gen(addr, &gen);
    if (s == NULL || s->access != ACCESS_WRITE) return 0;
    unsigned long e = reader_enter();
    unsigned long pgen = atomic_load(&protect_gen);
    int wp = atomic_load_explicit(&s->wp, memory_order_acquire);
    /* SAFETY: the slot may have been closed and reused for another mapping
     * between the search and reader_enter(). Unmapping a write mapping sets
     * wp = -1 and then waits for every reader section (on_unmap), and reuse
     * bumps gen: so if, inside the section, the slot is still mapped, has
     * the generation the search saw, contains addr and has wp >= 0, it is
     * the mapping that faulted and stays so until reader_exit(). */
    if (!cowshm_slot_holds(s, gen, addr)) {
      reader_exit(e);
      continue; /* look the address up again */
    }
    if (wp < 0) {
      reader_exit(e); /* the mapping is going away: not ours to fix */
      return 0;
    }
    /* SAFETY: domains[wp - 1] was filled before wp was stored, and changes
     * only after domain_disarm() has reset wp and waited for this section. */
    const struct domain *dom = wp > 0 ? &domains[wp - 1] : NULL;
    if (dom != NULL && dom->ops != b) {
      reader_exit(e); /* a real SIGBUS in an mprotect-protected mapping */
      return 0;
    }
    /* wp == 0: the protection went away between the fault and now (the last
     * snapshot was released); a write mapping is meant to be writable. */
    /* A mapping of hugetlb memory is un-protected and populated in whole
     * huge pages: the kernel refuses a range that splits one. */
    size_t unit = s->huge_shift != 0 ? (size_t)1 << s->huge_shift : ps();
    uintptr_t upage = addr & ~(uintptr_t)(unit - 1);
    int copies = dom != NULL ? resolve(s, wp - 1, page) : (b->unprotect(upage, unit), 0);
    reader_exit(e);
    /* The first write to a chunk after a snapshot copies it: that fault was
     * ours, and the retry succeeds unless the page is beyond the file's end
     * or /dev/shm is full; such a fault comes back with nothing to copy. */
    if (copies > 0) return 1;
    /* Nothing to copy: a write through a second view of a chunk already
     * copied, outside the snapshots' range, or a real fault. If the kernel
     * refuses to make the page writable and nobody protected anything
     * meanwhile, the fault is real. */
    if (madvise((void *)upage, unit, MADV_POPULATE_WRITE) == 0 || errno != EFAULT) return 1;
    if (atomic_load(&protect_gen) == pgen) return 0;
  }
  return 1;
}

/* ---- protecting and unprotecting (under the registry lock) ---------------- */

/* Removes all protection of a domain with no live snapshot left. */
static void domain_disarm(int d) {
  struct domain *dom = &domains[d];
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (atomic_load(&cowshm_slots[i].wp) == d + 1) atomic_store(&cowshm_slots[i].wp, 0);
  synchronize();
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (is_write_slot_of(s, dom)) dom->ops->disarm(s->start, s->len);
  }
  dom->used = 0;
}

static void snapshot_free(struct snapshot *sn) {
  free((void *)sn->bits);
  sn->bits = NULL;
  sn->slot = NULL;
  sn->push = NULL;
  sn->push_ctx = NULL;
  atomic_store(&sn->state, SNAP_FREE);
}

/* Ends a snapshot: handlers stop copying into it before its mapping goes. */
static void snapshot_release_locked(struct snapshot *sn) {
  int d = sn->domain;
  atomic_store(&sn->state, SNAP_GONE);
  if (--domains[d].nsnaps == 0)
    domain_disarm(d); /* synchronizes */
  else
    synchronize();
  if (sn->slot != NULL) sn->slot->snap = NULL;
  snapshot_free(sn);
}

int cowshm_snapshot_on_map(struct cowshm_slot *s, const char **syscall) {
  if (s->access != ACCESS_WRITE) return 0;
  int d = find_domain(s->dev, s->ino);
  if (d < 0 || domains[d].nsnaps == 0) return 0;
  struct domain *dom = &domains[d];
  *syscall = dom->ops->syscall;
  /* Nobody writes through this mapping yet (JS has not seen it), so it can
   * be armed without waiting for handlers. */
  int err = dom->ops->arm(s->start, s->len);
  if (err != 0) return err;
  atomic_store(&s->wp, d + 1);
  atomic_fetch_add(&protect_gen, 1);
  err = dom->ops->protect(s->start, s->len);
  if (err != 0) {
    atomic_store(&s->wp, 0);
    dom->ops->disarm(s->start, s->len);
  }
  return err;
}

void cowshm_snapshot_on_unmap(struct cowshm_slot *s) {
  if (s->access == ACCESS_SNAPSHOT) {
    if (s->snap != NULL) snapshot_release_locked(s->snap);
    return;
  }
  if (s->access != ACCESS_WRITE || !atomic_load(&ever_armed)) return;
  /* No handler may touch the range once the caller replaces it, nor the slot
   * once it is reused (see cowshm_snapshot_fault). */
  atomic_store(&s->wp, -1);
  synchronize();
}

/* ---- creating a snapshot --------------------------------------------------- */

/* Why creating a snapshot failed: errno, the call to name, and a sentence. */
struct failure {
  int err;
  const char *call;
  char detail[256];
};

static int fail(struct failure *f, int err, const char *call, const char *detail) {
  f->err = err;
  f->call = call;
  snprintf(f->detail, sizeof f->detail, "%s", detail ? detail : "");
  return -1;
}

/* Finds the domain of (dev, ino), or makes one: choosing its chunk and
 * arming every write mapping of the region (nothing is protected yet).
 * Returns its index, or -1 with *f filled. */
static int domain_get(uint64_t dev, uint64_t ino, const struct cowshm_backend *ops, uint64_t region_size,
                      size_t page, struct failure *f) {
  int d = find_domain(dev, ino);
  if (d >= 0) return d;
  for (int i = 0; i < MAX_DOMAINS && d < 0; i++)
    if (!domains[i].used) d = i;
  if (d < 0) {
    char why[128];
    snprintf(why, sizeof why, "at most %d regions can have live snapshots at once", MAX_DOMAINS);
    return fail(f, EMFILE, "snapshot", why);
  }
  struct domain *dom = &domains[d];
  memset(dom, 0, sizeof *dom);
  dom->dev = dev;
  dom->ino = ino;
  dom->ops = ops;
  /* Views mapped later are likely the size of the region: count one. */
  uint64_t bytes = region_size;
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (is_write_slot_of(&cowshm_slots[i], dom)) bytes += cowshm_slots[i].len;
  char why[256] = "";
  dom->chunk = ops->chunk_size(bytes, why, sizeof why);
  if (dom->chunk == 0) return fail(f, ENOMEM, ops->syscall, why);
  /* hugetlb memory is protected (UFFDIO_WRITEPROTECT, mprotect) and copied
   * in whole huge pages only: the kernel refuses a range that splits one. */
  if (dom->chunk < page) dom->chunk = page;
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (!is_write_slot_of(s, dom)) continue;
    int err = ops->arm(s->start, s->len);
    if (err != 0) {
      for (size_t j = 0; j < i; j++)
        if (is_write_slot_of(&cowshm_slots[j], dom)) ops->disarm(cowshm_slots[j].start, cowshm_slots[j].len);
      return fail(f, err, ops->arm_call, NULL);
    }
  }
  dom->used = 1;
  return d;
}

/* A domain made for a snapshot that could not be taken goes again. */
static void domain_put_unused(int d) {
  struct domain *dom = &domains[d];
  if (dom->nsnaps != 0) return;
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (is_write_slot_of(&cowshm_slots[i], dom)) dom->ops->disarm(cowshm_slots[i].start, cowshm_slots[i].len);
  dom->used = 0;
}

static struct snapshot *snapshot_take_free(void) {
  for (size_t i = 0; i < MAX_SNAPSHOTS; i++) {
    if (atomic_load(&snaps[i].state) != SNAP_FREE) continue;
    if (i >= atomic_load(&snap_high)) atomic_store(&snap_high, i + 1);
    return &snaps[i];
  }
  return NULL;
}

/* Publishes sn and protects every write mapping of its domain: publish, mark
 * the mappings armed, wait out handlers that might not have seen the new
 * snapshot, then protect. On failure the snapshot is released again (which
 * unprotects what was protected). */
static int snapshot_publish(struct snapshot *sn, int d, struct failure *f) {
  struct domain *dom = &domains[d];
  dom->nsnaps++;
  atomic_store(&ever_armed, 1);
  atomic_store_explicit(&sn->state, SNAP_LIVE, memory_order_release);
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (is_write_slot_of(&cowshm_slots[i], dom)) atomic_store(&cowshm_slots[i].wp, d + 1);
  synchronize();
  atomic_fetch_add(&protect_gen, 1);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (!is_write_slot_of(s, dom)) continue;
    int err = dom->ops->protect(s->start, s->len);
    if (err == 0) continue;
    char why[200] = "";
    if (err == ENOMEM && dom->ops->enomem_hint != NULL)
      snprintf(why, sizeof why, "%s %s", dom->ops->enomem_hint, s->label);
    fail(f, err, dom->ops->protect_call, why);
    snapshot_release_locked(sn);
    return -1;
  }
  return 0;
}

/* What snapshotCreate() is asked for. `chunk` is the snapshot's own copy
 * granularity (0: the domain's); `huge_shift` is log2 of the region's hugetlb
 * page size (0: the system page), which is then the least any chunk can be. */
struct create_args {
  int32_t fd;
  uint64_t off, length, dev, ino, region_size;
  double owner;
  size_t chunk;
  int32_t huge_shift;
  char label[256];
};

/* The page of the region a snapshot is asked of: what its chunks start from. */
static size_t region_page(const struct create_args *a) { return a->huge_shift ? (size_t)1 << a->huge_shift : ps(); }

static int create_args_get(napi_env env, napi_callback_info info, struct create_args *a) {
  napi_value argv[10];
  uint64_t chunk;
  memset(a, 0, sizeof *a);
  if (!cowshm_args(env, info, 10, argv) || !cowshm_get_i32(env, argv[0], &a->fd) ||
      !cowshm_get_u64(env, argv[1], &a->off) || !cowshm_get_u64(env, argv[2], &a->length) ||
      !cowshm_get_str(env, argv[3], a->label, sizeof a->label) || !cowshm_get_u64(env, argv[5], &a->dev) ||
      !cowshm_get_u64(env, argv[6], &a->ino) || !cowshm_get_u64(env, argv[7], &a->region_size) ||
      !cowshm_get_u64(env, argv[8], &chunk) || !cowshm_get_i32(env, argv[9], &a->huge_shift))
    return 0;
  a->chunk = (size_t)chunk;
  /* Checked in TypeScript; here only what memory safety needs. */
  if (a->huge_shift < 0 || a->huge_shift > 30 || (a->chunk != 0 && (a->chunk & (a->chunk - 1)) != 0) ||
      (a->chunk != 0 && a->chunk < region_page(a)) || a->chunk > ((size_t)1 << 30)) {
    cowshm_throw_range(env, "cowshm internal error: bad snapshot chunk");
    return 0;
  }
  if (napi_get_value_double(env, argv[4], &a->owner) != napi_ok) {
    cowshm_throw_napi_failure(env, "napi_get_value_double", __FILE__, __LINE__);
    return 0;
  }
  if (a->length == 0 || a->off % region_page(a) != 0 || (a->huge_shift != 0 && a->length % region_page(a) != 0)) {
    cowshm_throw_range(env, "cowshm internal error: bad snapshot range");
    return 0;
  }
  return 1;
}

/* Files a snapshot of the mapping in slot into the tables and protects the
 * region's write mappings. Takes ownership of bits. */
static struct snapshot *snapshot_install(const struct create_args *a, const struct cowshm_backend *ops,
                                         struct cowshm_slot *slot, _Atomic uint64_t *bits, struct failure *f) {
  cowshm_registry_lock();
  struct snapshot *sn = NULL;
  int d = domain_get(a->dev, a->ino, ops, a->region_size, region_page(a), f);
  if (d >= 0 && a->chunk != 0 && a->chunk < domains[d].chunk) {
    /* Protection is lifted a domain chunk at a time once every live snapshot
     * has copied it, so no snapshot can copy less. */
    snprintf(f->detail, sizeof f->detail,
             "The \"chunkSize\" option must be a power of two of at least %zu (the %s backend's protection chunk for "
             "this region). Received %zu",
             domains[d].chunk, domains[d].ops->name, a->chunk);
    f->err = -1; /* a RangeError, not a system error */
    domain_put_unused(d);
    d = -1;
  }
  if (d >= 0 && (sn = snapshot_take_free()) == NULL) {
    char why[128];
    snprintf(why, sizeof why, "at most %d snapshots can be live at once; release some", MAX_SNAPSHOTS);
    fail(f, EMFILE, "snapshot", why);
    domain_put_unused(d);
  }
  if (sn != NULL) {
    const struct domain *dom = &domains[d];
    sn->domain = d;
    sn->off = a->off;
    sn->len = slot->len;
    /* Each live snapshot copies its own chunk around a write, the domain's
     * at least; a write mapping's protection is lifted one domain chunk at a
     * time, which every live snapshot has then copied. */
    sn->chunk = a->chunk > dom->chunk ? a->chunk : dom->chunk;
    sn->addr = slot->start;
    sn->bits = bits;
    bits = NULL;
    atomic_store(&sn->copied, 0);
    atomic_store(&sn->error, 0);
    sn->slot = slot;
    slot->snap = sn;
    if (snapshot_publish(sn, d, f) != 0) sn = NULL;
  }
  cowshm_registry_unlock();
  free((void *)bits);
  return sn;
}

/* ---- snapshots held by other processes (xproc.c) ------------------------- */

void *cowshm_snapshot_remote_create(uint64_t dev, uint64_t ino, uint64_t size, size_t chunk, cowshm_push_fn push,
                                    void *ctx, int *err, const char **call) {
  if (choice->error != 0) {
    *err = choice->error;
    *call = "userfaultfd";
    return NULL;
  }
  cowshm_signals_ensure();
  struct failure f = {0, "snapshot", ""};
  _Atomic uint64_t *bits = calloc((size / ps() + 63) / 64, sizeof *bits);
  if (bits == NULL) {
    *err = ENOMEM;
    *call = "malloc";
    return NULL;
  }
  cowshm_registry_lock();
  struct snapshot *sn = NULL;
  int d = domain_get(dev, ino, choice->ops, size, ps(), &f);
  if (d >= 0 && (sn = snapshot_take_free()) == NULL) {
    fail(&f, EMFILE, "snapshot", NULL);
    domain_put_unused(d);
  }
  if (sn != NULL) {
    sn->domain = d;
    sn->off = 0;
    sn->len = size;
    sn->chunk = chunk > domains[d].chunk ? chunk : domains[d].chunk;
    sn->addr = 0;
    sn->bits = bits;
    bits = NULL;
    atomic_store(&sn->copied, 0);
    atomic_store(&sn->error, 0);
    sn->slot = NULL;
    sn->push = push;
    sn->push_ctx = ctx;
    if (snapshot_publish(sn, d, &f) != 0) sn = NULL;
  }
  cowshm_registry_unlock();
  free((void *)bits);
  if (sn == NULL) {
    *err = f.err;
    *call = f.call;
  }
  return sn;
}

void cowshm_snapshot_remote_release(void *handle) {
  cowshm_registry_lock();
  snapshot_release_locked(handle); /* synchronizes: no push runs after this */
  cowshm_registry_unlock();
}


/* snapshotCreate(fd, offset, length, label, owner, dev, ino, regionSize, chunk, hugeShift)
 *   -> [id, chunkSize, backend]. The snapshot's ArrayBuffer is made when JS
 * first asks for it (viewBuffer): V8 counts every new external ArrayBuffer
 * as memory it allocated and may start a garbage collection for a large one,
 * which would cost more than the snapshot itself. */
static napi_value create_js(napi_env env, napi_callback_info info) {
  struct create_args a;
  if (!create_args_get(env, info, &a)) return NULL;
  if (choice->error != 0) return cowshm_throw_errno(env, choice->error, "userfaultfd", choice->reason);
  /* A handler installed over ours since (process.on('SIGBUS'), an addon)
   * would leave every protected write spinning or fatal. */
  cowshm_signals_ensure();
  const struct cowshm_backend *ops = choice->ops;
  int usable;
  while ((usable = ops->usable_for(a.fd)) == 0 && ops->fallback != NULL) ops = ops->fallback;
  if (usable < 0) return cowshm_throw_errno(env, -usable, "fstatfs", a.label);

  /* A private mapping of a hugetlb file is made with MAP_NORESERVE (see
   * MAP_FLAG_HUGE): the snapshot needs no second pool, and a copy that finds
   * the pool empty fails in the handler, breaking only this snapshot. */
  struct cowshm_slot *slot = cowshm_mapping_map(env, a.fd, a.off, (size_t)a.length, ACCESS_SNAPSHOT, a.label, a.owner,
                                                a.dev, a.ino, a.huge_shift << MAP_FLAG_HUGE_SHIFT);
  if (slot == NULL) return NULL;
  double id = cowshm_slot_id(slot);
  struct failure f = {0, "snapshot", ""};
  _Atomic uint64_t *bits = calloc((slot->len / ps() + 63) / 64, sizeof *bits);
  struct snapshot *sn = bits == NULL ? (fail(&f, ENOMEM, "snapshot", NULL), NULL)
                                     : snapshot_install(&a, ops, slot, bits, &f);
  if (sn == NULL) {
    /* The snapshot's (unreturned) buffer is closed like any view: now, not
     * at the next GC. */
    cowshm_mapping_close(env, id);
    if (f.err == -1) return cowshm_throw_range(env, f.detail);
    char msg[sizeof a.label + sizeof f.detail + 2];
    snprintf(msg, sizeof msg, "%s%s%s", a.label, f.detail[0] ? ": " : "", f.detail);
    return cowshm_throw_errno(env, f.err, f.call, msg);
  }
  napi_value arr, name;
  NAPI_OK(env, napi_create_array_with_length(env, 3, &arr));
  NAPI_OK(env, napi_set_element(env, arr, 0, cowshm_num(env, id)));
  NAPI_OK(env, napi_set_element(env, arr, 1, cowshm_num(env, (double)sn->chunk)));
  NAPI_OK(env, napi_create_string_utf8(env, domains[sn->domain].ops->name, NAPI_AUTO_LENGTH, &name));
  NAPI_OK(env, napi_set_element(env, arr, 2, name));
  return arr;
}

/* ---- queries ------------------------------------------------------------- */

static struct snapshot *snap_of(napi_env env, napi_value idv) {
  double id;
  if (napi_get_value_double(env, idv, &id) != napi_ok) return NULL;
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->access != ACCESS_SNAPSHOT || s->snap == NULL) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the snapshot is released");
    return NULL;
  }
  return s->snap;
}

/* snapshotStats(id) -> [copiedPages, error errno or 0] */
static napi_value stats_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  cowshm_registry_lock();
  struct snapshot *sn = snap_of(env, argv[0]);
  size_t copied = sn ? atomic_load(&sn->copied) : 0;
  int error = sn ? atomic_load(&sn->error) : 0;
  cowshm_registry_unlock();
  if (sn == NULL) return NULL;
  NAPI_OK(env, napi_create_array_with_length(env, 2, &arr));
  NAPI_OK(env, napi_set_element(env, arr, 0, cowshm_num(env, (double)copied)));
  NAPI_OK(env, napi_set_element(env, arr, 1, cowshm_num(env, (double)error)));
  return arr;
}

/* snapshotChanged(id) -> Uint32Array of page indexes copied so far */
static napi_value changed_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  cowshm_registry_lock();
  struct snapshot *sn = snap_of(env, argv[0]);
  if (sn == NULL) {
    cowshm_registry_unlock();
    return NULL;
  }
  size_t npages = (size_t)(sn->len / ps());
  size_t count = 0;
  for (size_t w = 0; w < (npages + 63) / 64; w++) count += (size_t)__builtin_popcountll(atomic_load(&sn->bits[w]));
  /* Pages copied while we scan are left out, never half-counted. */
  uint32_t *tmp = malloc((count ? count : 1) * sizeof *tmp);
  size_t n = 0;
  for (size_t w = 0; tmp != NULL && w < (npages + 63) / 64; w++) {
    uint64_t v = atomic_load(&sn->bits[w]);
    while (v != 0 && n < count) {
      tmp[n++] = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(v));
      v &= v - 1;
    }
  }
  cowshm_registry_unlock();
  if (tmp == NULL) return cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
  napi_value ab, arr;
  void *data = NULL;
  if (napi_create_arraybuffer(env, n * sizeof(uint32_t), &data, &ab) != napi_ok) {
    free(tmp);
    cowshm_throw_napi_failure(env, "napi_create_arraybuffer", __FILE__, __LINE__);
    return NULL;
  }
  if (n) memcpy(data, tmp, n * sizeof(uint32_t));
  free(tmp);
  NAPI_OK(env, napi_create_typedarray(env, napi_uint32_array, n, ab, 0, &arr));
  return arr;
}

/* prepareWrite(dev, ino, offset, length): copy the range into every live
 * snapshot of the region and un-protect it in every write mapping, so the
 * kernel itself (read(2) into a view) can write there. */
static napi_value prepare_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint64_t dev, ino, off, len;
  if (!cowshm_args(env, info, 4, argv) || !cowshm_get_u64(env, argv[0], &dev) ||
      !cowshm_get_u64(env, argv[1], &ino) || !cowshm_get_u64(env, argv[2], &off) ||
      !cowshm_get_u64(env, argv[3], &len))
    return NULL;
  if (len == 0) return cowshm_undefined(env);
  cowshm_registry_lock();
  int d = find_domain(dev, ino);
  if (d < 0 || domains[d].nsnaps == 0) {
    cowshm_registry_unlock();
    return cowshm_undefined(env);
  }
  struct domain *dom = &domains[d];
  uint64_t lo = align_down(off, dom->chunk), hi = align_up(off + len, dom->chunk);
  /* Under the lock no snapshot can appear or go, so no reader section is
   * needed against writers; handlers racing us only repeat idempotent work. */
  copy_into_snapshots(d, lo, hi);
  int err = 0;
  const char *label = "";
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high && err == 0; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (!is_write_slot_of(s, dom) || atomic_load(&s->wp) != d + 1) continue;
    uint64_t vlo = s->file_offset, vhi = s->file_offset + s->len;
    uint64_t a = max64(lo, vlo), b = min64(hi, vhi);
    if (a >= b) continue;
    err = dom->ops->unprotect(s->start + (uintptr_t)(a - vlo), (size_t)(b - a));
    if (err != 0) label = s->label;
  }
  const char *call = dom->ops->syscall;
  cowshm_registry_unlock();
  if (err != 0) return cowshm_throw_errno(env, err, call, label);
  return cowshm_undefined(env);
}

/* snapshotInfo() -> { backend, reason, forced, userfaultfd, userfaultfdReason,
 *                     wpShmem, wpUnpopulated, error } */
static napi_value info_js(napi_env env, napi_callback_info info) {
  napi_value o, v;
  NAPI_OK(env, napi_create_object(env, &o));
#define SET_STR(key, str)                                                          \
  NAPI_OK(env, napi_create_string_utf8(env, (str), NAPI_AUTO_LENGTH, &v));         \
  NAPI_OK(env, napi_set_named_property(env, o, key, v))
#define SET_BOOL(key, b)                                                           \
  NAPI_OK(env, napi_get_boolean(env, (b) ? true : false, &v));                     \
  NAPI_OK(env, napi_set_named_property(env, o, key, v))
  SET_STR("backend", choice->ops->name);
  SET_STR("reason", choice->reason);
  SET_STR("forced", choice->forced);
  SET_BOOL("userfaultfd", choice->uffd.ok);
  SET_STR("userfaultfdReason", choice->uffd.reason);
  SET_BOOL("wpShmem", choice->uffd.ok);
  SET_BOOL("wpUnpopulated", choice->uffd.wp_unpopulated);
  NAPI_OK(env, napi_set_named_property(env, o, "error", cowshm_num(env, choice->error)));
#undef SET_STR
#undef SET_BOOL
  return o;
}

/* signalsEnsure() -> how many handlers were re-installed */
static napi_value signals_ensure_js(napi_env env, napi_callback_info info) {
  return cowshm_num(env, (double)cowshm_signals_ensure());
}

napi_value cowshm_init_snapshot(napi_env env, napi_value exports) {
  choice = cowshm_backend_choose();
  const char *fail_at = getenv("COWSHM_FAIL_SNAPSHOT_COPY");
  if (fail_at != NULL) fail_copy_at = strtoul(fail_at, NULL, 10);
  napi_property_descriptor props[] = {
      {"snapshotCreate", NULL, create_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotStats", NULL, stats_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotChanged", NULL, changed_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"prepareWrite", NULL, prepare_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotInfo", NULL, info_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"signalsEnsure", NULL, signals_ensure_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
