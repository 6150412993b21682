/* The process-wide registry of cowshm mappings. Static storage, so the signal
 * handlers can search it without allocating or locking. */
#include "cowshm.h"

#include <pthread.h>
#include <string.h>

struct cowshm_slot cowshm_slots[COWSHM_MAX_SLOTS];
_Atomic size_t cowshm_slot_high;

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;

void cowshm_registry_lock(void) { pthread_mutex_lock(&registry_mutex); }
void cowshm_registry_unlock(void) { pthread_mutex_unlock(&registry_mutex); }

/* Ids handed to JS are index + gen * 2^20: exact in a double, and a stale id
 * (its slot reused since) never matches. */
#define INDEX_BITS 20
#define INDEX_SPAN (1u << INDEX_BITS)

/* No slot below this index is free (a hint: the search wraps around, so a
 * stale value costs time, never a slot). Open views hold their slots, so a
 * program that keeps many views open leaves a run of busy slots at the bottom
 * of the table; starting the search above them keeps allocation O(1) while
 * the table stays compact. */
static _Atomic size_t lowest_free;

/* A closed slot owns nothing (its range belongs to the mapping's record); it
 * is kept only to explain a fault in the closed range, and is taken for a new
 * view when no slot is free. */
struct cowshm_slot *cowshm_slot_alloc(void) {
  struct cowshm_slot *s = NULL, *closed = NULL;
  size_t from = atomic_load_explicit(&lowest_free, memory_order_relaxed);
  for (size_t k = 0; k < COWSHM_MAX_SLOTS && s == NULL; k++) {
    size_t i = (from + k) % COWSHM_MAX_SLOTS;
    int state = atomic_load_explicit(&cowshm_slots[i].state, memory_order_relaxed);
    if (state == SLOT_FREE) s = &cowshm_slots[i];
    else if (state == SLOT_CLOSED && closed == NULL) closed = &cowshm_slots[i];
  }
  if (s == NULL) s = closed;
  if (s == NULL) return NULL;
  size_t i = (size_t)(s - cowshm_slots);
  /* BUSY before the generation moves, and the generation before any field:
   * a fault handler that confirms (state MAPPED, gen) after reading fields
   * knows they were not being rewritten (cowshm_slot_holds). */
  atomic_store(&s->state, SLOT_BUSY);
  atomic_store(&s->gen, (atomic_load(&s->gen) + 1) & 0xffffffu);
  s->start = 0;
  s->len = s->byte_length = 0;
  s->file_offset = s->dev = s->ino = 0;
  s->access = ACCESS_READ;
  s->owner = 0;
  s->env = NULL;
  s->ab_ref = NULL;
  s->label[0] = 0;
  s->huge_shift = 0;
  atomic_store(&s->wp, 0);
  s->snap = NULL;
  if (i >= atomic_load(&cowshm_slot_high)) atomic_store(&cowshm_slot_high, i + 1);
  atomic_store_explicit(&lowest_free, i + 1, memory_order_relaxed);
  return s;
}

void cowshm_slot_publish(struct cowshm_slot *s) {
  atomic_store_explicit(&s->state, SLOT_MAPPED, memory_order_release);
}

/* Under the registry lock, like cowshm_slot_alloc. */
void cowshm_slot_free(struct cowshm_slot *s) {
  size_t i = (size_t)(s - cowshm_slots);
  atomic_store_explicit(&s->state, SLOT_FREE, memory_order_release);
  /* Every scan of the table (closeRegion on each Region.close, msyncOwner,
   * the fault handler) stops at the high mark: lower it past the free slots at the top,
   * or a burst of views once open would slow every later close. Readers that
   * loaded the old mark only look at more free slots. */
  size_t high = atomic_load(&cowshm_slot_high);
  if (i + 1 == high) {
    while (high > 0 && atomic_load(&cowshm_slots[high - 1].state) == SLOT_FREE) high--;
    atomic_store(&cowshm_slot_high, high);
  }
  size_t low = atomic_load_explicit(&lowest_free, memory_order_relaxed);
  while (i < low && !atomic_compare_exchange_weak_explicit(&lowest_free, &low, i, memory_order_relaxed,
                                                           memory_order_relaxed)) {
  }
}

double cowshm_slot_id(const struct cowshm_slot *s) {
  return (double)(s - cowshm_slots) + (double)s->gen * (double)INDEX_SPAN;
}

struct cowshm_slot *cowshm_slot_by_id(double id) {
  if (!(id >= 0) || id > 9007199254740991.0) return NULL;
  uint64_t v = (uint64_t)id;
  uint64_t index = v % INDEX_SPAN, gen = v / INDEX_SPAN;
  if (index >= COWSHM_MAX_SLOTS) return NULL;
  struct cowshm_slot *s = &cowshm_slots[index];
  int state = atomic_load(&s->state);
  if ((state != SLOT_MAPPED && state != SLOT_CLOSED) || s->gen != gen) return NULL;
  return s;
}

/* SAFETY (signal context): atomics and plain loads of static storage only.
 * The acquire load of the high mark and of each state pairs with the release
 * stores that publish them; a slot being rewritten meanwhile is BUSY and
 * skipped, or read as a stale range that callers confirm (or only print). */
struct cowshm_slot *cowshm_slot_find(uintptr_t addr) {
  size_t high = atomic_load_explicit(&cowshm_slot_high, memory_order_acquire);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    int state = atomic_load_explicit(&s->state, memory_order_acquire);
    if (state != SLOT_MAPPED && state != SLOT_CLOSED) continue;
    if (addr >= s->start && addr - s->start < s->len) return s;
  }
  return NULL;
}

struct cowshm_slot *cowshm_slot_find_gen(uintptr_t addr, uint32_t *gen) {
  size_t high = atomic_load_explicit(&cowshm_slot_high, memory_order_acquire);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    /* The generation first: if the slot is reused after this load, the
     * confirmation in cowshm_slot_holds() sees a different one. */
    uint32_t g = atomic_load_explicit(&s->gen, memory_order_acquire);
    if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_MAPPED) continue;
    if (addr >= s->start && addr - s->start < s->len) {
      *gen = g;
      return s;
    }
  }
  return NULL;
}

int cowshm_slot_holds(const struct cowshm_slot *s, uint32_t gen, uintptr_t addr) {
  /* SAFETY: the fields are published by the release store of SLOT_MAPPED,
   * and a reuse stores BUSY and then a new generation before rewriting them:
   * seeing MAPPED, then the same generation, means they belong to the
   * mapping that generation names (the 24-bit generation would have to wrap
   * during one fault to be fooled). */
  if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_MAPPED) return 0;
  if (atomic_load_explicit(&s->gen, memory_order_acquire) != gen) return 0;
  return addr >= s->start && addr - s->start < s->len;
}
