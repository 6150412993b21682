{
  "targets": [
    {
      "target_name": "cowshm",
      "sources": [
        "native/addon.c",
        "native/env.c",
        "native/errors.c",
        "native/fd.c",
        "native/locks.c",
        "native/futex.c",
        "native/uring.c",
        "native/registry.c",
        "native/mapping.c",
        "native/signals.c",
        "native/kernels.c",
        "native/uffd.c",
        "native/backend.c",
        "native/snapshot.c",
        "native/checkpoint.c",
        "native/xproc.c"
      ],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "libraries": ["-lrt", "-lpthread", "-ldl"]
    }
  ]
}
