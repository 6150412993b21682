/* Module entry: per-environment state first (env.c), then every part of the
 * addon adds its functions to the exports. */
#include "cowshm.h"

NAPI_MODULE_INIT() {
  if (!cowshm_env_init(env)) return NULL;
  cowshm_signals_install();

  napi_value fn;
  NAPI_OK(env, napi_create_function(env, "init", NAPI_AUTO_LENGTH, cowshm_init_js, NULL, &fn));
  NAPI_OK(env, napi_set_named_property(env, exports, "init", fn));
  if (cowshm_init_fd(env, exports) == NULL) return NULL;
  if (cowshm_init_locks(env, exports) == NULL) return NULL;
  if (cowshm_init_mapping(env, exports) == NULL) return NULL;
  if (cowshm_init_kernels(env, exports) == NULL) return NULL;
  if (cowshm_init_snapshot(env, exports) == NULL) return NULL;
  if (cowshm_init_checkpoint(env, exports) == NULL) return NULL;
  if (cowshm_init_xproc(env, exports) == NULL) return NULL;
  if (cowshm_init_futex(env, exports) == NULL) return NULL;
  return exports;
}
