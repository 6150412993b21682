/* Mappings as ArrayBuffers.
 *
 * Lifetime rules:
 *  - A view's ArrayBuffer is made when first asked for (viewBuffer): V8
 *    accounts every new external ArrayBuffer as memory it allocated, and one
 *    over 64 MiB starts a garbage collection that costs far more than the
 *    mmap. Until then the JS View owns the mapping: close() or its collection
 *    (releaseView) unmaps it at once, as no pointer to it left the addon.
 *  - Once made, a range lives as long as anything can point at it. Two
 *    finalizers watch the buffer: one runs when V8 frees the backing store,
 *    one when the ArrayBuffer object is collected. The range is unmapped
 *    when both have run, and by nothing else while the backing store lives.
 *  - close() detaches the ArrayBuffer (every TypedArray over it reads as
 *    length 0) and replaces the range with a PROT_NONE reservation instead of
 *    unmapping it: native code that took the pointer before the detach (a
 *    read(2) on the thread pool, say) faults or gets EFAULT, and no later mmap
 *    can land in the range while it may still hold it. Detaching frees the
 *    backing store at once, so the backing-store finalizer alone would drop
 *    the reservation on the next turn of the event loop, while such a read is
 *    still running; Node keeps the ArrayBuffer object alive for as long as an
 *    operation on it is pending, so the object's collection is what ends the
 *    reservation.
 *  - A buffer close() cannot detach still points at the range: one that
 *    ArrayBuffer.prototype.transfer() or postMessage() moved the backing
 *    store out of (Node-API sees only the old, detached object, never the
 *    new one), or one V8 made non-detachable (an asm.js heap). Such a range
 *    is "escaped": close() puts private anonymous zero pages over it, so the
 *    region's memory goes at once, every access keeps working without
 *    reaching any region, and nothing else can be mapped there until the
 *    backing-store finalizer says no buffer points at it any more.
 *  - A closed view gives its registry slot back at once (the registry bounds
 *    open views, not closed ones waiting for GC): the reservation then
 *    belongs to the mapping's record below. The slot is kept, marked closed,
 *    for fault reports until the registry needs it for a new view.
 *  - An environment that ends (a worker exits) unmaps everything it mapped,
 *    except escaped ranges: a moved buffer may live on in another thread,
 *    and once the environment is gone no finalizer will ever say when it
 *    dies. Those ranges keep their zero pages and are never given back
 *    (address space, not memory, until the surviving buffer writes to them).
 *    Node runs the backing-store finalizers itself as the environment ends,
 *    after detaching every buffer it still can, so which ranges escaped must
 *    be decided before it starts. Node cleans external buffers newest first:
 *    after every buffer it makes in a worker, the addon makes a one-byte
 *    "sentinel" external buffer, holds it strongly and drops the one before.
 *    Only teardown can finalize the newest sentinel, and it is finalized
 *    before any of the buffers made before it: teardown_begins() runs there.
 *    The main thread needs none of this: every worker has stopped before its
 *    environment ends, and the process ends with it.
 */
#include "cowshm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

size_t cowshm_page_size;

/* One per ArrayBuffer handed to JS: the finalizers' hint. Every field is
 * read and written under the registry lock. */
struct mapping {
  double id;          /* the slot, while the view is open */
  napi_env env;
  uintptr_t start;
  size_t len;
  int holds;          /* finalizers still to run: the range goes when both have */
  int mapped;         /* [start, start + len) is still ours to unmap: the view, or what replaced it */
  int store_freed;    /* the backing-store finalizer ran: no buffer points at the range */
  int escaped;        /* a buffer close() did not detach may point at the range */
  struct mapping *prev, *next; /* every record, for environment teardown */
};

static struct mapping *records;
/* The record of each open slot, indexed like cowshm_slots. */
static struct mapping *slot_record[COWSHM_MAX_SLOTS];

static void teardown_begins(napi_env env);

static size_t round_up(size_t n) { return (n + cowshm_page_size - 1) & ~(cowshm_page_size - 1); }

static void unlink_record(struct mapping *m) {
  if (m->prev != NULL) m->prev->next = m->next;
  else records = m->next;
  if (m->next != NULL) m->next->prev = m->prev;
  m->prev = m->next = NULL;
}

/* Under the registry lock: unmap an open slot's range and free the slot. A
 * closed slot owns nothing: the range is its record's until the record goes
 * (whoever closed the slot, close_slot or snapshot.c). */
static void release_locked(struct cowshm_slot *s) {
  size_t i = (size_t)(s - cowshm_slots);
  if (atomic_load(&s->state) == SLOT_MAPPED) {
    cowshm_snapshot_on_unmap(s);
    cowshm_futex_on_unmap(s);
    /* munmap can only fail for arguments we control; there is nothing useful
     * to do with such a failure in a finalizer, so it is deliberately ignored. */
    munmap((void *)s->start, s->len);
    if (slot_record[i] != NULL) slot_record[i]->mapped = 0;
  }
  slot_record[i] = NULL;
  cowshm_slot_free(s);
}

/* What both finalizers do (the backing store was freed, or the ArrayBuffer
 * object was collected): entered with the registry lock held, releases it. */
static void drop_hold_locked(napi_env env, struct mapping *m) {
  napi_ref ref = NULL;
  if (--m->holds > 0) {
    cowshm_registry_unlock();
    return;
  }
  /* The slot still belongs to this record only if the view is open; a stale
   * id (slot released by teardown or reused since) matches nothing. */
  struct cowshm_slot *s = cowshm_slot_by_id(m->id);
  if (s != NULL && s->env == m->env) {
    int state = atomic_load(&s->state);
    if (state == SLOT_MAPPED && slot_record[s - cowshm_slots] == m) {
      ref = s->ab_ref;
      s->ab_ref = NULL;
      release_locked(s); /* unmaps, and clears m->mapped */
    } else if (state == SLOT_CLOSED) {
      release_locked(s); /* its range is about to go: no more reports about it */
    }
  }
  if (m->mapped) munmap((void *)m->start, m->len);
  unlink_record(m);
  cowshm_registry_unlock();
  if (ref != NULL) napi_delete_reference(env, ref);
  free(m);
}

static void object_collected(napi_env env, void *data, void *hint) {
  cowshm_registry_lock();
  drop_hold_locked(env, hint);
}

static void store_freed(napi_env env, void *data, void *hint) {
  struct mapping *m = hint;
  cowshm_registry_lock();
  m->store_freed = 1;
  drop_hold_locked(env, m);
}

/* Private anonymous pages over [start, start + len), readable and writable
 * like any ArrayBuffer: what an escaped range holds after close. MAP_NORESERVE:
 * they cost nothing until written. Returns 0 or an errno. */
static int put_scratch(uintptr_t start, size_t len) {
  void *r = mmap((void *)start, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                 -1, 0);
  return r == MAP_FAILED ? errno : 0;
}

/* Where to ask the kernel to put a large view. Left to itself, it puts every
 * mapping next to the last one, among V8's reservations and the libraries,
 * and unmapping a large range there walks page tables shared with those
 * neighbours (measured from C: munmap of 1 GiB takes 5.6 us there, 3.5 us in
 * an empty part of the address space). Views of 1 GiB or more are placed on
 * 1 GiB boundaries in a part of the address space nothing else uses (below
 * the kernel's mmap area), at a random start so the layout stays unpredictable,
 * with a gap between views so two views of consecutive parts of a region never
 * touch and merge into one mapping. It is only a hint: where it is taken, or
 * on a kernel with a smaller address space, the kernel chooses as usual. */
#define PLACE_MIN ((size_t)1 << 30)
#if UINTPTR_MAX > 0xffffffffu
#define PLACE_LOW ((uintptr_t)0x100000000000) /* 16 TiB */
#define PLACE_HIGH ((uintptr_t)0x500000000000) /* 80 TiB */
static _Atomic uintptr_t place_next;
static void *placement_hint(size_t len) {
  if (len < PLACE_MIN || len > (PLACE_HIGH - PLACE_LOW) / 4) return NULL;
  size_t step = ((len + PLACE_MIN - 1) & ~(PLACE_MIN - 1)) + PLACE_MIN;
  uintptr_t seen = atomic_load(&place_next), at, next;
  do {
    at = seen;
    if (at == 0) {
      /* A random start in the lower half of the range, on a 1 GiB boundary. */
      uint64_t r = 0;
      if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) r = (uint64_t)(uintptr_t)&r ^ (uint64_t)getpid() << 20;
      at = PLACE_LOW + (uintptr_t)(r % ((PLACE_HIGH - PLACE_LOW) / 2 / PLACE_MIN)) * PLACE_MIN;
    }
    next = at + step >= PLACE_HIGH ? PLACE_LOW : at + step;
  } while (!atomic_compare_exchange_weak(&place_next, &seen, next));
  return (void *)at;
}
#else
static void *placement_hint(size_t len) { return NULL; }
#endif

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* `populate` for a private (cow) mapping: every page is mapped, as a read
 * would map it (MADV_POPULATE_READ, Linux 5.14), so the mapping points at the
 * region's own pages and a page is copied only when it is written. MAP_POPULATE
 * on a private writable mapping faults every page in for writing instead,
 * which copies all of them: twice the region's memory, and on hugetlb one
 * pool page per page of the view, which drains the pool (test/map.populate).
 * Best effort, as MAP_POPULATE is: an older kernel (EINVAL) leaves the pages
 * to be faulted in on first touch, and a page that cannot be read (EFAULT: a
 * hugetlb hole with the pool empty, or a file truncated meanwhile) ends it
 * there, without an error, where the touch itself will report it. */
static void populate_private(void *addr, size_t len) {
  (void)RETRY(madvise(addr, len, MADV_POPULATE_READ));
}

/* Maps fd and files the range in a published slot, which owns it until an
 * ArrayBuffer is made. Throws and returns NULL on failure. */
static struct cowshm_slot *map_slot(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                    const char *label, double owner, uint64_t dev, uint64_t ino, int map_flags) {
  size_t len = round_up(length);
  int prot = access == ACCESS_READ ? PROT_READ : PROT_READ | PROT_WRITE;
  int flags = (access == ACCESS_COW || access == ACCESS_SNAPSHOT) ? MAP_PRIVATE : MAP_SHARED;
  /* A private writable mapping is populated by populate_private() instead:
   * MAP_POPULATE would fault it in for writing, copying every page. */
  if ((map_flags & MAP_FLAG_POPULATE) && !(flags & MAP_PRIVATE)) flags |= MAP_POPULATE;
  /* See MAP_FLAG_HUGE in cowshm.h. */
  if (MAP_FLAG_HUGE(map_flags) != 0 && (flags & MAP_PRIVATE)) flags |= MAP_NORESERVE;

  cowshm_registry_lock();
  struct cowshm_slot *s = cowshm_slot_alloc();
  /* A reused closed slot may still name the record of the view it held:
   * that record keeps its range, the slot starts afresh. */
  if (s != NULL) slot_record[s - cowshm_slots] = NULL;
  cowshm_registry_unlock();
  if (s == NULL) {
    cowshm_throw_code(env, "EMFILE",
                     "EMFILE: too many cowshm views are open in this process (the limit is 16384); "
                     "close views you no longer need");
    return NULL;
  }
  void *addr = mmap(placement_hint(len), len, prot, flags, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    cowshm_registry_lock();
    cowshm_slot_free(s);
    cowshm_registry_unlock();
    cowshm_throw_errno(env, err, "mmap", label);
    return NULL;
  }
  s->start = (uintptr_t)addr;
  s->len = len;
  s->byte_length = length;
  s->file_offset = offset;
  s->dev = dev;
  s->ino = ino;
  s->access = access;
  s->owner = owner;
  s->env = env;
  s->huge_shift = MAP_FLAG_HUGE(map_flags);
  strncpy(s->label, label, sizeof s->label - 1);
  s->label[sizeof s->label - 1] = 0;

  /* Publish before arming snapshots: the fault handler must find the slot. */
  cowshm_registry_lock();
  cowshm_slot_publish(s);
  const char *syscall = "mprotect";
  int err = cowshm_snapshot_on_map(s, &syscall);
  if (err != 0) {
    release_locked(s);
    cowshm_registry_unlock();
    cowshm_throw_errno(env, err, syscall, label);
    return NULL;
  }
  cowshm_registry_unlock();
  if ((map_flags & MAP_FLAG_POPULATE) && (flags & MAP_PRIVATE)) populate_private(addr, len);
  return s;
}

/* The sentinel (see the top of the file). Its bytes are never read. */
static char sentinel_byte;

static void sentinel_freed(napi_env env, void *data, void *hint) {
  struct cowshm_env *e = cowshm_env_get(env);
  /* An older sentinel, collected after the next one replaced it. */
  if (e == NULL || (uintptr_t)hint != e->sentinel_token) return;
  teardown_begins(env);
}

/* Makes this environment's newest sentinel; 0 (nothing pending) on failure. */
static int watch_teardown(napi_env env) {
  struct cowshm_env *e = cowshm_env_get(env);
  if (e == NULL) return 0;
  if (e->main_thread) return 1;
  uintptr_t token = ++e->sentinels_made; /* never reused, even when this fails */
  napi_value ab;
  napi_ref ref;
  if (napi_create_external_arraybuffer(env, &sentinel_byte, 1, sentinel_freed, (void *)token, &ab) != napi_ok)
    return 0;
  if (napi_create_reference(env, ab, 1, &ref) != napi_ok) return 0; /* collected later, as an older one */
  if (e->sentinel != NULL) napi_delete_reference(env, e->sentinel);
  e->sentinel = ref;
  e->sentinel_token = token;
  return 1;
}

/* Wraps an open slot in an external ArrayBuffer; from then on the buffer's
 * record owns the range. On failure the slot keeps it (the View is still
 * open), and a buffer made before the failure never reaches JS. */
static napi_value slot_buffer(napi_env env, struct cowshm_slot *s) {
  size_t i = (size_t)(s - cowshm_slots);
  struct mapping *m = calloc(1, sizeof *m);
  if (m == NULL) return cowshm_throw_errno(env, ENOMEM, "mmap", s->label);
  m->id = cowshm_slot_id(s);
  m->env = env;
  m->start = s->start;
  m->len = s->len;
  m->holds = 1;
  m->mapped = 1;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, (void *)s->start, s->byte_length, store_freed, m, &ab) != napi_ok) {
    free(m);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) cowshm_throw_code(env, "ERR_OUT_OF_RANGE", "cannot create an ArrayBuffer of this length");
    return NULL;
  }
  cowshm_registry_lock();
  m->holds = 2;
  cowshm_registry_unlock();
  int finalizer = napi_add_finalizer(env, ab, NULL, object_collected, m, NULL) == napi_ok;
  int hooked = finalizer && watch_teardown(env);
  napi_ref ref = NULL;
  int referenced = finalizer && hooked && napi_create_reference(env, ab, 0, &ref) == napi_ok;
  cowshm_registry_lock();
  m->next = records;
  if (records != NULL) records->prev = m;
  records = m;
  if (!referenced) {
    /* The buffer is dropped: its finalizers free the record and release nothing. */
    if (!finalizer) m->holds = 1;
    m->mapped = 0;
    cowshm_registry_unlock();
    cowshm_throw_napi_failure(env, !finalizer ? "napi_add_finalizer" : !hooked ? "napi_create_external_arraybuffer" : "napi_create_reference",
                              __FILE__, __LINE__);
    return NULL;
  }
  slot_record[i] = m;
  s->ab_ref = ref;
  cowshm_registry_unlock();
  return ab;
}

struct cowshm_slot *cowshm_mapping_map(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                       const char *label, double owner, uint64_t dev, uint64_t ino, int flags) {
  return map_slot(env, fd, offset, length, access, label, owner, dev, ino, flags);
}

napi_value cowshm_mapping_create(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                 const char *label, double owner, uint64_t dev, uint64_t ino,
                                 int flags, double *out_id) {
  struct cowshm_slot *s = map_slot(env, fd, offset, length, access, label, owner, dev, ino, flags);
  if (s == NULL) return NULL;
  napi_value ab = slot_buffer(env, s);
  if (ab == NULL) {
    cowshm_registry_lock();
    release_locked(s);
    cowshm_registry_unlock();
    return NULL;
  }
  *out_id = cowshm_slot_id(s);
  return ab;
}

/* Detach the ArrayBuffer and swap the range for a reservation, or for zero
 * pages when a buffer may still point at it. Runs on the owning
 * environment's thread. The detach happens outside the registry lock: it may
 * run the finalizer. Returns 0, or the errno of an mmap that failed (the
 * slot is closed either way; *label then names it). */
static int close_slot(napi_env env, double id, char *label, size_t label_size) {
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->env != env || atomic_load(&s->state) != SLOT_MAPPED) return 0;
  if (slot_record[s - cowshm_slots] == NULL) {
    /* No ArrayBuffer was ever made: no pointer to the range left the addon,
     * so it can go at once, slot and all. */
    cowshm_registry_lock();
    if (atomic_load(&s->state) == SLOT_MAPPED && slot_record[s - cowshm_slots] == NULL) release_locked(s);
    cowshm_registry_unlock();
    return 0;
  }
  /* Whether a buffer close() does not detach may point at the range: the
   * object was detached by someone else (transfer(), postMessage()), cannot
   * be detached (an asm.js heap), or was collected while its backing store,
   * moved into another buffer, lives on. */
  int escaped = 0;
  napi_value ab = NULL;
  if (s->ab_ref != NULL && napi_get_reference_value(env, s->ab_ref, &ab) == napi_ok && ab != NULL) {
    bool detached = false;
    if (napi_is_detached_arraybuffer(env, ab, &detached) != napi_ok || detached ||
        napi_detach_arraybuffer(env, ab) != napi_ok)
      escaped = 1;
  } else {
    escaped = 1; /* checked against store_freed below */
  }
  int err = 0;
  napi_ref ref = NULL;
  cowshm_registry_lock();
  s = cowshm_slot_by_id(id);
  if (s != NULL && atomic_load(&s->state) == SLOT_MAPPED) {
    struct mapping *m = slot_record[s - cowshm_slots];
    if (m == NULL || m->store_freed) escaped = 0;
    /* Handlers stop touching the range before it is replaced. */
    cowshm_snapshot_on_unmap(s);
    cowshm_futex_on_unmap(s);
    if (escaped) {
      m->escaped = 1;
      err = put_scratch(s->start, s->len);
    }
    if (!escaped || err != 0) {
      void *r = mmap((void *)s->start, s->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                     -1, 0);
      if (r == MAP_FAILED) {
        /* Could not reserve (map count limit): unmapping is still safe for
         * JS when the buffer was detached; an escaped buffer would fault
         * either way, and the caller reports err. */
        munmap((void *)s->start, s->len);
        s->len = 0;
        if (m != NULL) m->mapped = 0;
      }
    }
    if (err != 0 && label != NULL) snprintf(label, label_size, "%s", s->label);
    ref = s->ab_ref;
    s->ab_ref = NULL;
    slot_record[s - cowshm_slots] = NULL;
    atomic_store(&s->state, SLOT_CLOSED);
  }
  cowshm_registry_unlock();
  if (ref != NULL) napi_delete_reference(env, ref);
  return err;
}

/* Throws for a close_slot that failed. */
static void throw_close_failure(napi_env env, int err, const char *label) {
  char msg[256];
  snprintf(msg, sizeof msg,
           "%s: the view is closed, but a buffer moved out of it or used as an asm.js heap could not be given "
           "pages of its own, and faults if touched",
           label);
  cowshm_throw_errno(env, err, "mmap", msg);
}

int cowshm_mapping_close(napi_env env, double id) {
  char label[sizeof cowshm_slots[0].label];
  int err = close_slot(env, id, label, sizeof label);
  if (err == 0) return 1;
  throw_close_failure(env, err, label);
  return 0;
}

/* Environment teardown, first step (see the top of the file): decide which
 * ranges escaped while the buffers can still be looked at, and give those
 * zero pages that are never unmapped. */
static void teardown_begins(napi_env env) {
  napi_handle_scope scope = NULL;
  if (napi_open_handle_scope(env, &scope) != napi_ok) scope = NULL;
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    struct mapping *m = slot_record[i];
    if (atomic_load(&s->state) != SLOT_MAPPED || s->env != env || m == NULL || m->store_freed) continue;
    napi_value ab = NULL;
    bool detached = false;
    /* Without a handle scope nothing can be looked at: assume the worst. */
    if (scope == NULL || s->ab_ref == NULL || napi_get_reference_value(env, s->ab_ref, &ab) != napi_ok ||
        ab == NULL || napi_is_detached_arraybuffer(env, ab, &detached) != napi_ok || detached)
      m->escaped = 1;
  }
  if (scope != NULL) napi_close_handle_scope(env, scope);
  cowshm_registry_lock();
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    struct mapping *m = slot_record[i];
    if (atomic_load(&s->state) != SLOT_MAPPED || s->env != env || m == NULL || !m->escaped || m->store_freed) continue;
    cowshm_snapshot_on_unmap(s);
    cowshm_futex_on_unmap(s);
    /* If even this fails the mapping stays as it is: the region's pages
     * remain reachable and allocated, which is better than a fault. */
    put_scratch(s->start, s->len);
    m->mapped = 0;
    slot_record[i] = NULL;
    if (s->ab_ref != NULL) napi_delete_reference(env, s->ab_ref); /* weak, no finalizer: runs no code */
    s->ab_ref = NULL;
    cowshm_slot_free(s);
  }
  for (struct mapping *m = records; m != NULL; m = m->next)
    if (m->env == env && m->escaped && !m->store_freed) m->mapped = 0; /* closed: zero pages already */
  cowshm_registry_unlock();
}


static int get_label(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) {
    cowshm_throw_type(env, "cowshm internal error: expected a string");
    return 0;
  }
  return 1;
}

/* mapView(fd, offset, length, access, label, owner, dev, ino, flags) -> id.
 * flags: MAP_FLAG_POPULATE and the huge page shift (cowshm.h).
 * The ArrayBuffer comes later, from viewBuffer(id), when it is first asked
 * for: a view used through native code or only closed again never pays for
 * the garbage collection a new large external ArrayBuffer starts. */
static napi_value map_view_js(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int32_t fd, access, map_flags;
  uint64_t offset, length, dev, ino;
  double owner;
  char label[sizeof cowshm_slots[0].label];
  if (!cowshm_args(env, info, 9, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &offset) || !cowshm_get_u64(env, argv[2], &length) ||
      !cowshm_get_i32(env, argv[3], &access) || !get_label(env, argv[4], label, sizeof label) ||
      !cowshm_get_u64(env, argv[6], &dev) || !cowshm_get_u64(env, argv[7], &ino) ||
      !cowshm_get_i32(env, argv[8], &map_flags))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[5], &owner));
  if (length == 0 || offset % cowshm_page_size != 0 || access < ACCESS_READ || access > ACCESS_COW)
    return cowshm_throw_range(env, "cowshm internal error: bad mapping arguments");
  struct cowshm_slot *s = map_slot(env, fd, offset, length, access, label, owner, dev, ino, map_flags);
  if (s == NULL) return NULL;
  return cowshm_num(env, cowshm_slot_id(s));
}

/* viewBuffer(id) -> the view's ArrayBuffer, made on the first call. The
 * caller keeps it: once made, the buffer owns the range. */
static napi_value view_buffer_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &id));
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->env != env || atomic_load(&s->state) != SLOT_MAPPED) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the view is closed");
    return NULL;
  }
  if (slot_record[s - cowshm_slots] == NULL) return slot_buffer(env, s);
  napi_value ab = NULL;
  if (s->ab_ref == NULL || napi_get_reference_value(env, s->ab_ref, &ab) != napi_ok || ab == NULL) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the view's buffer was garbage-collected");
    return NULL;
  }
  return ab;
}

/* releaseView(id): a View collected without close(). Its mapping goes unless
 * an ArrayBuffer was made, which then owns it (and may outlive the View). */
static napi_value release_view_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &id));
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  /* Without a buffer, close_slot only unmaps: it cannot fail. */
  if (s != NULL && s->env == env && slot_record[s - cowshm_slots] == NULL) close_slot(env, id, NULL, 0);
  return cowshm_undefined(env);
}

static napi_value unmap_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &id));
  if (!cowshm_mapping_close(env, id)) return NULL;
  return cowshm_undefined(env);
}

/* closeRegion(owner, fd): Region.close in one call. Every mapping the
 * Region made in this environment is closed, then the descriptor, whatever
 * happened to the mappings: a close that fails never leaves the descriptor
 * behind. The first failure is thrown after that. */
static napi_value close_region_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double owner;
  int32_t fd;
  if (!cowshm_args(env, info, 2, argv) || !cowshm_get_i32(env, argv[1], &fd)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &owner));
  int first = 0;
  char label[sizeof cowshm_slots[0].label] = "";
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (atomic_load(&s->state) != SLOT_MAPPED || s->env != env || s->owner != owner) continue;
    int err = close_slot(env, cowshm_slot_id(s), first == 0 ? label : NULL, sizeof label);
    if (first == 0) first = err;
  }
  napi_value r = cowshm_close_fd(env, fd);
  if (r == NULL || first == 0) return r;
  throw_close_failure(env, first, label);
  return NULL;
}

static struct cowshm_slot *live_slot(napi_env env, napi_value idv, uint64_t off, uint64_t len) {
  double id;
  NAPI_OK(env, napi_get_value_double(env, idv, &id));
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || atomic_load(&s->state) != SLOT_MAPPED) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the view is closed");
    return NULL;
  }
  if (off > s->len || len > s->len - off) {
    cowshm_throw_range(env, "cowshm internal error: range outside the mapping");
    return NULL;
  }
  return s;
}

/* madvise(id, offset, length, advice) */
static napi_value madvise_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint64_t off, len;
  int32_t advice;
  if (!cowshm_args(env, info, 4, argv) || !cowshm_get_u64(env, argv[1], &off) ||
      !cowshm_get_u64(env, argv[2], &len) || !cowshm_get_i32(env, argv[3], &advice))
    return NULL;
  struct cowshm_slot *s = live_slot(env, argv[0], off, len);
  if (s == NULL) return NULL;
  if (len == 0) return cowshm_undefined(env);
  if (madvise((void *)(s->start + off), round_up(len), advice) != 0)
    return cowshm_throw_errno(env, errno, "madvise", s->label);
  return cowshm_undefined(env);
}

/* msync(id, offset, length): MS_SYNC, for file-backed regions. */
static napi_value msync_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint64_t off, len;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_u64(env, argv[1], &off) ||
      !cowshm_get_u64(env, argv[2], &len))
    return NULL;
  struct cowshm_slot *s = live_slot(env, argv[0], off, len);
  if (s == NULL) return NULL;
  if (len == 0) return cowshm_undefined(env);
  if (msync((void *)(s->start + off), round_up(len), MS_SYNC) != 0)
    return cowshm_throw_errno(env, errno, "msync", s->label);
  return cowshm_undefined(env);
}

/* msyncOwner(owner): msync every live mapping a Region made in this environment. */
static napi_value msync_owner_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double owner;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &owner));
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (atomic_load(&s->state) != SLOT_MAPPED || s->env != env || s->owner != owner) continue;
    if (s->access != ACCESS_WRITE) continue; /* only shared write mappings can dirty the file */
    if (msync((void *)s->start, s->len, MS_SYNC) != 0) return cowshm_throw_errno(env, errno, "msync", s->label);
  }
  return cowshm_undefined(env);
}

/* address(id) -> the mapping's start address (below 2^47, exact in a double). */
static napi_value address_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  struct cowshm_slot *s = live_slot(env, argv[0], 0, 0);
  if (s == NULL) return NULL;
  return cowshm_num(env, (double)s->start);
}

void cowshm_mapping_release_all(napi_env env) {
  cowshm_registry_lock();
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    int state = atomic_load(&s->state);
    if ((state == SLOT_MAPPED || state == SLOT_CLOSED) && s->env == env) release_locked(s);
  }
  /* Reservations of closed views. The records stay: their finalizers may
   * still run during teardown, and free them. */
  for (struct mapping *m = records; m != NULL; m = m->next) {
    if (m->env == env && m->mapped) {
      munmap((void *)m->start, m->len);
      m->mapped = 0;
    }
  }
  cowshm_registry_unlock();
}

int cowshm_mapping_take(napi_env env, double id, uintptr_t *start, size_t *len) {
  int taken = 0;
  cowshm_registry_lock();
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s != NULL && s->env == env && atomic_load(&s->state) == SLOT_MAPPED) {
    size_t i = (size_t)(s - cowshm_slots);
    cowshm_snapshot_on_unmap(s);
    cowshm_futex_on_unmap(s);
    /* The memory goes at once; the addresses stay taken. If the reservation
     * cannot be made (map count limit), the mapping stays as it is, the
     * caller's all the same. */
    mmap((void *)s->start, s->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    *start = s->start;
    *len = s->len;
    taken = 1;
    if (slot_record[i] != NULL) slot_record[i]->mapped = 0; /* its finalizers unmap nothing now */
    slot_record[i] = NULL;
    if (s->ab_ref != NULL) napi_delete_reference(env, s->ab_ref); /* weak, no finalizer: runs no code */
    s->ab_ref = NULL;
    cowshm_slot_free(s);
  }
  cowshm_registry_unlock();
  return taken;
}

napi_value cowshm_init_mapping(napi_env env, napi_value exports) {
  cowshm_page_size = (size_t)sysconf(_SC_PAGESIZE);
  napi_property_descriptor props[] = {
      {"mapView", NULL, map_view_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"viewBuffer", NULL, view_buffer_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"releaseView", NULL, release_view_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmap", NULL, unmap_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeRegion", NULL, close_region_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"madvise", NULL, madvise_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"msync", NULL, msync_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"msyncOwner", NULL, msync_owner_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"address", NULL, address_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pageSize", NULL, NULL, NULL, NULL, cowshm_num(env, (double)cowshm_page_size), napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
