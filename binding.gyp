{
  "targets": [
    {
      "target_name": "posix_daemon",
      "sources": [
        "native/addon.c",
        "native/args.c",
        "native/fds.c",
        "native/loop.c",
        "native/fork/plan.c",
        "native/fork/child.c",
        "native/fork/fork.c",
        "native/exec.c",
        "native/wait.c",
        "native/proc.c",
        "native/init.c",
        "native/pidfd.c",
        "native/files.c",
        "native/notify.c",
        "native/sockets.c",
        "native/inotify.c"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"],
      "xcode_settings": {
        "GCC_C_LANGUAGE_STANDARD": "gnu11",
        "MACOSX_DEPLOYMENT_TARGET": "10.15"
      }
    },
    {
      "target_name": "posix_daemon_init",
      "target_conditions": [["_type=='loadable_module'", {"product_extension": "so"}]],
      "conditions": [
        ["OS=='linux' and (target_arch=='x64' or target_arch=='arm64')", {
          "type": "loadable_module",
          "sources": ["native/init-loop.c"],
          "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-exceptions"],
          "ldflags": ["-Wl,--as-needed", "-Wl,-e,pd_init_start", "-Wl,-z,now"]
        }, {
          "type": "none"
        }]
      ]
    },
    {
      "target_name": "posix_daemon_hold",
      "target_conditions": [["_type=='loadable_module'", {"product_extension": "so"}]],
      "conditions": [
        ["OS=='linux'", {
          "type": "loadable_module",
          "sources": ["native/hold.c"],
          "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-fno-exceptions"],
          "ldflags": ["-Wl,--as-needed", "-Wl,-z,defs"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
