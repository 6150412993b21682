/* Mappings as ArrayBuffers.
 *
 * Lifetime rules:
 *  - A view's ArrayBuffer is made when first asked for (viewBuffer). Until
 *    then the JS View owns the mapping: close() or its collection
 *    (releaseView) unmaps it at once.
 *  - Once made, the mapping lives as long as its ArrayBuffer: when V8
 *    collects the buffer, its finalizer unmaps the range.
 *  - close() detaches the ArrayBuffer (every TypedArray over it reads as
 *    length 0) and replaces the range with a PROT_NONE reservation instead of
 *    unmapping it: native code that took the pointer before the detach (a
 *    read(2) on the thread pool, say) faults or gets EFAULT, and no later mmap
 *    can land in the range while it may still hold it. The reservation goes
 *    when the finalizer runs.
 *  - An environment that ends (a worker exits) unmaps everything it mapped.
 */
#include "cowshm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

size_t cowshm_page_size;

static size_t round_up(size_t n) { return (n + cowshm_page_size - 1) & ~(cowshm_page_size - 1); }

/* Under the registry lock: unmap a slot's range and free the slot. */
static void release_locked(struct cowshm_slot *s) {
  int state = atomic_load(&s->state);
  if (state == SLOT_MAPPED) cowshm_snapshot_on_unmap(s);
  /* munmap can only fail for arguments we control; there is nothing useful to
   * do with such a failure in a finalizer, so it is deliberately ignored. */
  if (state == SLOT_MAPPED || state == SLOT_CLOSED) munmap((void *)s->start, s->len);
  cowshm_slot_free(s);
}

static void ab_finalize(napi_env env, void *data, void *hint) {
  double id = (double)(uintptr_t)hint;
  cowshm_registry_lock();
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  napi_ref ref = NULL;
  if (s != NULL && s->env == env) {
    ref = s->ab_ref;
    release_locked(s);
  }
  cowshm_registry_unlock();
  if (ref != NULL) napi_delete_reference(env, ref);
}

/* Maps fd and files the range in a published slot. Throws and returns NULL on
 * failure. */
static struct cowshm_slot *map_slot(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                    const char *label, double owner, uint64_t dev, uint64_t ino, int populate) {
  size_t len = round_up(length);
  int prot = access == ACCESS_READ ? PROT_READ : PROT_READ | PROT_WRITE;
  int flags = (access == ACCESS_COW || access == ACCESS_SNAPSHOT) ? MAP_PRIVATE : MAP_SHARED;
  if (populate) flags |= MAP_POPULATE;

  cowshm_registry_lock();
  struct cowshm_slot *s = cowshm_slot_alloc();
  cowshm_registry_unlock();
  if (s == NULL) {
    napi_throw_error(env, "EMFILE",
                     "EMFILE: too many cowshm views are open in this process (the limit is 16384); "
                     "close views you no longer need");
    return NULL;
  }
  void *addr = mmap(NULL, len, prot, flags, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    cowshm_slot_free(s);
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
  strncpy(s->label, label, sizeof s->label - 1);
  s->label[sizeof s->label - 1] = 0;

  /* Publish before arming snapshots: the fault handler must find the slot. */
  cowshm_registry_lock();
  cowshm_slot_publish(s);
  int err = cowshm_snapshot_on_map(s);
  if (err != 0) {
    release_locked(s);
    cowshm_registry_unlock();
    cowshm_throw_errno(env, err, "userfaultfd", label);
    return NULL;
  }
  cowshm_registry_unlock();
  return s;
}

/* Wraps a mapped slot in an external ArrayBuffer whose finalizer unmaps the
 * range; from then on the buffer owns the mapping. */
static napi_value slot_buffer(napi_env env, struct cowshm_slot *s) {
  double id = cowshm_slot_id(s);
  napi_value ab;
  if (napi_create_external_arraybuffer(env, (void *)s->start, s->byte_length, ab_finalize, (void *)(uintptr_t)id,
                                       &ab) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "cannot create an ArrayBuffer of this length");
    return NULL;
  }
  NAPI_OK(env, napi_create_reference(env, ab, 0, &s->ab_ref));
  return ab;
}

napi_value cowshm_mapping_create(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                 const char *label, double owner, uint64_t dev, uint64_t ino,
                                 int populate, double *out_id) {
  struct cowshm_slot *s = map_slot(env, fd, offset, length, access, label, owner, dev, ino, populate);
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

/* Detach the ArrayBuffer and swap the range for a reservation. Runs on the
 * owning environment's thread. The detach happens outside the registry lock:
 * it may run the finalizer. */
static void close_slot(napi_env env, double id) {
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->env != env || atomic_load(&s->state) != SLOT_MAPPED) return;
  if (s->ab_ref == NULL) {
    /* No ArrayBuffer was ever made: no pointer to the range left the addon,
     * so it can go at once, slot and all. */
    cowshm_registry_lock();
    if (atomic_load(&s->state) == SLOT_MAPPED && s->ab_ref == NULL) release_locked(s);
    cowshm_registry_unlock();
    return;
  }
  napi_value ab = NULL;
  if (s->ab_ref != NULL && napi_get_reference_value(env, s->ab_ref, &ab) == napi_ok && ab != NULL) {
    bool detached = false;
    napi_is_detached_arraybuffer(env, ab, &detached);
    if (!detached) napi_detach_arraybuffer(env, ab);
  }
  cowshm_registry_lock();
  s = cowshm_slot_by_id(id);
  if (s != NULL && atomic_load(&s->state) == SLOT_MAPPED) {
    cowshm_snapshot_on_unmap(s);
    void *r = mmap((void *)s->start, s->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                   -1, 0);
    if (r == MAP_FAILED) {
      /* Could not reserve (map count limit): unmapping is still safe for JS,
       * which can no longer reach the range. */
      munmap((void *)s->start, s->len);
      atomic_store(&s->state, SLOT_CLOSED);
      s->len = 0;
    } else {
      atomic_store(&s->state, SLOT_CLOSED);
    }
  }
  cowshm_registry_unlock();
}

/* map(fd, offset, length, access, label, owner, dev, ino, populate) -> [ArrayBuffer, id] */
static napi_value map_js(napi_env env, napi_callback_info info) {
  napi_value argv[9], arr;
  int32_t fd, access, populate;
  uint64_t offset, length, dev, ino;
  double owner;
  char label[256];
  if (!cowshm_args(env, info, 9, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &offset) || !cowshm_get_u64(env, argv[2], &length) ||
      !cowshm_get_i32(env, argv[3], &access) || !cowshm_get_str(env, argv[4], label, sizeof label) ||
      !cowshm_get_u64(env, argv[6], &dev) || !cowshm_get_u64(env, argv[7], &ino) ||
      !cowshm_get_i32(env, argv[8], &populate))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[5], &owner));
  if (length == 0 || offset % cowshm_page_size != 0 || access < ACCESS_READ || access > ACCESS_COW)
    return cowshm_throw_range(env, "cowshm internal error: bad mapping arguments");
  double id;
  napi_value ab = cowshm_mapping_create(env, fd, offset, length, access, label, owner, dev, ino, populate, &id);
  if (ab == NULL) return NULL;
  NAPI_OK(env, napi_create_array_with_length(env, 2, &arr));
  NAPI_OK(env, napi_set_element(env, arr, 0, ab));
  NAPI_OK(env, napi_set_element(env, arr, 1, cowshm_num(env, id)));
  return arr;
}

/* mapView(fd, offset, length, access, label, owner, dev, ino, populate) -> id.
 * The ArrayBuffer comes later, from viewBuffer(id), when it is first asked
 * for: V8 treats every new external ArrayBuffer as memory it must account
 * for, and one over 64 MiB starts a garbage collection, which costs far more
 * than the mmap itself. A view used through native code or only closed again
 * never pays for it. */
static napi_value map_view_js(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int32_t fd, access, populate;
  uint64_t offset, length, dev, ino;
  double owner;
  char label[256];
  if (!cowshm_args(env, info, 9, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &offset) || !cowshm_get_u64(env, argv[2], &length) ||
      !cowshm_get_i32(env, argv[3], &access) || !cowshm_get_str(env, argv[4], label, sizeof label) ||
      !cowshm_get_u64(env, argv[6], &dev) || !cowshm_get_u64(env, argv[7], &ino) ||
      !cowshm_get_i32(env, argv[8], &populate))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[5], &owner));
  if (length == 0 || offset % cowshm_page_size != 0 || access < ACCESS_READ || access > ACCESS_COW)
    return cowshm_throw_range(env, "cowshm internal error: bad mapping arguments");
  struct cowshm_slot *s = map_slot(env, fd, offset, length, access, label, owner, dev, ino, populate);
  if (s == NULL) return NULL;
  return cowshm_num(env, cowshm_slot_id(s));
}

/* viewBuffer(id) -> the view's ArrayBuffer, made on the first call. The
 * caller keeps it: a buffer that was collected cannot be made again, as its
 * finalizer unmaps the range. */
static napi_value view_buffer_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &id));
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->env != env || atomic_load(&s->state) != SLOT_MAPPED) {
    napi_throw_error(env, "ERR_COWSHM_CLOSED", "the view is closed");
    return NULL;
  }
  if (s->ab_ref == NULL) return slot_buffer(env, s);
  napi_value ab = NULL;
  NAPI_OK(env, napi_get_reference_value(env, s->ab_ref, &ab));
  if (ab == NULL) {
    napi_throw_error(env, "ERR_COWSHM_CLOSED", "the view's buffer was garbage-collected");
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
  if (s != NULL && s->env == env && s->ab_ref == NULL) close_slot(env, id);
  return cowshm_undefined(env);
}

static napi_value unmap_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &id));
  close_slot(env, id);
  return cowshm_undefined(env);
}

/* unmapOwner(owner): close every mapping a Region made in this environment. */
static napi_value unmap_owner_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double owner;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[0], &owner));
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (atomic_load(&s->state) == SLOT_MAPPED && s->env == env && s->owner == owner)
      close_slot(env, cowshm_slot_id(s));
  }
  return cowshm_undefined(env);
}

static struct cowshm_slot *live_slot(napi_env env, napi_value idv, uint64_t off, uint64_t len) {
  double id;
  if (napi_get_value_double(env, idv, &id) != napi_ok) return NULL;
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || atomic_load(&s->state) != SLOT_MAPPED) {
    napi_throw_error(env, "ERR_COWSHM_CLOSED", "the view is closed");
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
  cowshm_registry_unlock();
}

napi_value cowshm_init_mapping(napi_env env, napi_value exports) {
  cowshm_page_size = (size_t)sysconf(_SC_PAGESIZE);
  napi_property_descriptor props[] = {
      {"map", NULL, map_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapView", NULL, map_view_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"viewBuffer", NULL, view_buffer_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"releaseView", NULL, release_view_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmap", NULL, unmap_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmapOwner", NULL, unmap_owner_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"madvise", NULL, madvise_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"msync", NULL, msync_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"msyncOwner", NULL, msync_owner_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"address", NULL, address_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pageSize", NULL, NULL, NULL, NULL, cowshm_num(env, (double)cowshm_page_size), napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
