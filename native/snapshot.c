/* Snapshots: filled in by the snapshot work; these hooks keep the rest of the
 * addon independent of the backend. */
#include "cowshm.h"

int cowshm_snapshot_fault(int sig, siginfo_t *si, void *uctx) { return 0; }
int cowshm_snapshot_on_map(struct cowshm_slot *s) { return 0; }
void cowshm_snapshot_on_unmap(struct cowshm_slot *s) {}
napi_value cowshm_init_snapshot(napi_env env, napi_value exports) { return exports; }
