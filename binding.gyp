{
  "targets": [
    {
      "target_name": "posix_daemon",
      "sources": [
        "native/addon.cc",
        "native/napi-args.cc",
        "native/args.c",
        "native/fds.c",
        "native/fork.cc",
        "native/exec.cc",
        "native/wait.c",
        "native/proc.c",
        "native/init.cc",
        "native/pidfd.cc",
        "native/files.cc",
        "native/notify.cc",
        "native/sockets.cc",
        "native/inotify.cc",
        "native/loop.c"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"
      ],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
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
