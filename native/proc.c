/* Process facts and small process-level calls: sessions, groups, _exit,
 * child subreaper, children of a process (macOS; Linux reads /proc in TS),
 * and fd flags, pipe and dup. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef __APPLE__
#include <libproc.h>
#endif

#include "pd.h"

/* An optional pid argument: 0 (this process) when undefined. */
static bool opt_pid(napi_env env, napi_value v, int32_t* out) {
  *out = 0;
  return pd_is_undefined(env, v) || pd_arg_int(env, v, "pid", 0, INT32_MAX, out);
}

/* A boolean argument; the error names it as the C++ version did. */
static bool arg_bool(napi_env env, napi_value v, const char* name, bool* out) {
  napi_valuetype type;
  PD_CHECK_BOOL(env, napi_typeof(env, v, &type));
  if (type != napi_boolean) {
    pd_throw_arg_type(env, name, "of type boolean");
    return false;
  }
  PD_CHECK_BOOL(env, napi_get_value_bool(env, v, out));
  return true;
}

static napi_value js_setsid(napi_env env, napi_callback_info info) {
  (void)info;
  pid_t sid = setsid();
  if (sid == -1) return pd_throw_errno(env, errno, "setsid", NULL);
  return pd_number(env, sid);
}

static napi_value js_getsid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (!pd_args(env, info, 1, argv, NULL) || !opt_pid(env, argv[0], &pid)) return NULL;
  pid_t sid = getsid(pid);
  if (sid == -1) return pd_throw_errno(env, errno, "getsid", NULL);
  return pd_number(env, sid);
}

static napi_value js_getpgid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (!pd_args(env, info, 1, argv, NULL) || !opt_pid(env, argv[0], &pid)) return NULL;
  pid_t pgid = getpgid(pid);
  if (pgid == -1) return pd_throw_errno(env, errno, "getpgid", NULL);
  return pd_number(env, pgid);
}

static napi_value js_exit(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t code = 0;
  if (!pd_args(env, info, 1, argv, NULL)) return NULL;
  if (!pd_is_undefined(env, argv[0]) && !pd_arg_int(env, argv[0], "code", INT32_MIN, INT32_MAX, &code)) {
    return NULL;
  }
  _exit(code & 0xff);
}

/* PR_SET_CHILD_SUBREAPER: orphans below us are re-parented to us instead of
 * init, so a double-forked daemon can still be waited on. Returns false
 * where the platform has no such thing. */
static napi_value js_set_child_subreaper(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool on;
  if (!pd_args(env, info, 1, argv, NULL) || !arg_bool(env, argv[0], "on", &on)) return NULL;
#ifdef __linux__
  if (prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) == -1) return pd_throw_errno(env, errno, "prctl", NULL);
  return pd_bool(env, true);
#else
  (void)on;
  return pd_bool(env, false);
#endif
}

static napi_value js_is_child_subreaper(napi_env env, napi_callback_info info) {
  (void)info;
#ifdef __linux__
  int on = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &on, 0, 0, 0) == -1) return pd_throw_errno(env, errno, "prctl", NULL);
  return pd_bool(env, on != 0);
#else
  return pd_bool(env, false);
#endif
}

static napi_value js_child_pids(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (!pd_args(env, info, 1, argv, NULL) || !pd_arg_int(env, argv[0], "pid", 1, INT32_MAX, &pid)) return NULL;
#ifdef __APPLE__
  napi_value out;
  PD_CHECK(env, napi_create_array(env, &out));
  size_t cap = 256;
  pid_t* buf = NULL;
  for (;;) {
    pid_t* grown = realloc(buf, cap * sizeof(pid_t));
    if (grown == NULL) {
      free(buf);
      return pd_throw_errno(env, ENOMEM, "malloc", NULL);
    }
    buf = grown;
    int n = proc_listchildpids(pid, buf, (int)(cap * sizeof(pid_t)));
    if (n < 0) {
      int err = errno;
      free(buf);
      return pd_throw_errno(env, err, "proc_listchildpids", NULL);
    }
    /* Depending on the macOS version n is a count or a byte size. */
    size_t count = (size_t)n > cap ? (size_t)n / sizeof(pid_t) : (size_t)n;
    if (count < cap) {
      for (size_t i = 0; i < count; i++) {
        napi_value v = pd_number(env, buf[i]);
        if (v == NULL || napi_set_element(env, out, (uint32_t)i, v) != napi_ok) {
          free(buf);
          return pd_throw_last(env);
        }
      }
      free(buf);
      return out;
    }
    cap *= 2;
  }
#else
  (void)pid;
  return pd_throw_errno(env, ENOSYS, "childPids", NULL);
#endif
}

static napi_value js_set_cloexec(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (!pd_args(env, info, 2, argv, NULL) || !pd_arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd) ||
      !arg_bool(env, argv[1], "on", &on)) {
    return NULL;
  }
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return pd_throw_errno(env, errno, "fcntl", NULL);
  int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) == -1) return pd_throw_errno(env, errno, "fcntl", NULL);
  return pd_undefined(env);
}

static napi_value js_get_fd_flags(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!pd_args(env, info, 1, argv, NULL) || !pd_arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  int fdflags = fcntl(fd, F_GETFD);
  if (fdflags == -1) return pd_throw_errno(env, errno, "fcntl", NULL);
  int fl = fcntl(fd, F_GETFL);
  napi_value o;
  PD_CHECK(env, napi_create_object(env, &o));
  if (!pd_set(env, o, "cloexec", pd_bool(env, (fdflags & FD_CLOEXEC) != 0)) ||
      !pd_set(env, o, "nonblocking", pd_bool(env, fl != -1 && (fl & O_NONBLOCK) != 0))) {
    return NULL;
  }
  return o;
}

/* pipe(2), both ends close-on-exec: whoever hands an end to a child says so
 * explicitly (keepFds), so no other program inherits it by accident. */
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (pd_pipe_cloexec(fds) == -1) return pd_throw_errno(env, errno, "pipe", NULL);
  napi_value out, r, w;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok || (r = pd_number(env, fds[0])) == NULL ||
      (w = pd_number(env, fds[1])) == NULL || napi_set_element(env, out, 0, r) != napi_ok ||
      napi_set_element(env, out, 1, w) != napi_ok) {
    /* Nobody would ever learn their numbers: not left open. */
    close(fds[0]);
    close(fds[1]);
    return pd_throw_last(env);
  }
  return out;
}

/* fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate at the lowest free fd
 * >= minFd. Keeps a listening socket open while its server object lets go. */
static napi_value js_dup(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, min_fd = 0;
  if (!pd_args(env, info, 2, argv, NULL) || !pd_arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  if (!pd_is_undefined(env, argv[1]) && !pd_arg_int(env, argv[1], "minFd", 0, INT32_MAX, &min_fd)) return NULL;
  int r = fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
  if (r == -1) return pd_throw_errno(env, errno, "fcntl", NULL);
  napi_value v = pd_number(env, r);
  if (v == NULL) close(r); /* not handed out: not left open */
  return v;
}

bool pd_init_proc(napi_env env, napi_value exports) {
  return pd_export_function(env, exports, "setsid", js_setsid) &&
         pd_export_function(env, exports, "getsid", js_getsid) &&
         pd_export_function(env, exports, "getpgid", js_getpgid) &&
         pd_export_function(env, exports, "exit", js_exit) &&
         pd_export_function(env, exports, "setChildSubreaper", js_set_child_subreaper) &&
         pd_export_function(env, exports, "isChildSubreaper", js_is_child_subreaper) &&
         pd_export_function(env, exports, "childPids", js_child_pids) &&
         pd_export_function(env, exports, "setCloexec", js_set_cloexec) &&
         pd_export_function(env, exports, "dup", js_dup) &&
         pd_export_function(env, exports, "pipe", js_pipe) &&
         pd_export_function(env, exports, "getFdFlags", js_get_fd_flags);
}
