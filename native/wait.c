/* waitpid/wait4, and an exit watcher that lets waitAsync sleep in the event
 * loop until the kernel says a process ended: a pidfd (Linux >= 5.3) or a
 * kqueue EVFILT_PROC (macOS/BSD) polled by libuv, else SIGCHLD through a
 * uv_signal handle. No thread, no timer. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
#include <sys/event.h>
#define PD_HAVE_KQUEUE 1
#endif

#include "pd.h"
#include "wrap.h"

static double micros(const struct timeval* tv) {
  return (double)tv->tv_sec * 1e6 + (double)tv->tv_usec;
}

/* obj[key] = a number; false after throwing. */
static bool set_number(napi_env env, napi_value obj, const char* key, double d) {
  return pd_set(env, obj, key, pd_number(env, d));
}

static napi_value rusage_object(napi_env env, const struct rusage* ru) {
  napi_value o;
  PD_CHECK(env, napi_create_object(env, &o));
#ifdef __APPLE__
  double max_rss = (double)ru->ru_maxrss / 1024; /* bytes on macOS */
#else
  double max_rss = (double)ru->ru_maxrss; /* KiB on Linux */
#endif
  if (!set_number(env, o, "userCPUTime", micros(&ru->ru_utime)) ||
      !set_number(env, o, "systemCPUTime", micros(&ru->ru_stime)) ||
      !set_number(env, o, "maxRSS", max_rss) ||
      !set_number(env, o, "sharedMemorySize", (double)ru->ru_ixrss) ||
      !set_number(env, o, "unsharedDataSize", (double)ru->ru_idrss) ||
      !set_number(env, o, "unsharedStackSize", (double)ru->ru_isrss) ||
      !set_number(env, o, "minorPageFault", (double)ru->ru_minflt) ||
      !set_number(env, o, "majorPageFault", (double)ru->ru_majflt) ||
      !set_number(env, o, "swappedOut", (double)ru->ru_nswap) ||
      !set_number(env, o, "fsRead", (double)ru->ru_inblock) ||
      !set_number(env, o, "fsWrite", (double)ru->ru_oublock) ||
      !set_number(env, o, "ipcSent", (double)ru->ru_msgsnd) ||
      !set_number(env, o, "ipcReceived", (double)ru->ru_msgrcv) ||
      !set_number(env, o, "signalsCount", (double)ru->ru_nsignals) ||
      !set_number(env, o, "voluntaryContextSwitches", (double)ru->ru_nvcsw) ||
      !set_number(env, o, "involuntaryContextSwitches", (double)ru->ru_nivcsw)) {
    return NULL;
  }
  return o;
}

/* Decoded with the platform's own W* macros; the TS layer names signals. */
static napi_value wait_result(napi_env env, pid_t pid, int status) {
  napi_value o;
  PD_CHECK(env, napi_create_object(env, &o));
  bool reaped = pid > 0;
  napi_value exit_code =
      reaped && WIFEXITED(status) ? pd_number(env, WEXITSTATUS(status)) : pd_null(env);
#ifdef WCOREDUMP
  bool core = reaped && WIFSIGNALED(status) && WCOREDUMP(status);
#else
  bool core = false;
#endif
  if (!set_number(env, o, "pid", pid) || !set_number(env, o, "status", status) ||
      !pd_set(env, o, "exitCode", exit_code) ||
      !set_number(env, o, "termSignal", reaped && WIFSIGNALED(status) ? WTERMSIG(status) : 0) ||
      !pd_set(env, o, "coreDumped", pd_bool(env, core)) ||
      !set_number(env, o, "stopSignal", reaped && WIFSTOPPED(status) ? WSTOPSIG(status) : 0) ||
      !pd_set(env, o, "continued", pd_bool(env, reaped && WIFCONTINUED(status)))) {
    return NULL;
  }
  return o;
}

#define PD_WAIT_ALLOWED_FLAGS (WNOHANG | WUNTRACED | WCONTINUED)

static napi_value do_wait(napi_env env, napi_callback_info info, bool with_rusage) {
  napi_value argv[2];
  if (!pd_args(env, info, 2, argv, NULL)) return NULL;
  int32_t pid;
  if (!pd_arg_int(env, argv[0], "pid", INT32_MIN + 1, INT32_MAX, &pid)) return NULL;
  int32_t flags = 0;
  if (!pd_is_undefined(env, argv[1]) && !pd_arg_int(env, argv[1], "flags", 0, INT32_MAX, &flags)) {
    return NULL;
  }
  if ((flags & ~PD_WAIT_ALLOWED_FLAGS) != 0) return pd_throw_arg_value(env, "flags", "has unknown bits");
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof(ru));
  pid_t r;
  do {
    r = wait4(pid, &status, flags, with_rusage ? &ru : NULL);
  } while (r == -1 && errno == EINTR);
  if (r == -1) return pd_throw_errno(env, errno, with_rusage ? "wait4" : "waitpid", NULL);
  napi_value o = wait_result(env, r, status);
  if (o == NULL) return NULL;
  if (with_rusage && !pd_set(env, o, "rusage", rusage_object(env, &ru))) return NULL;
  return o;
}

static napi_value js_waitpid(napi_env env, napi_callback_info info) { return do_wait(env, info, false); }
static napi_value js_wait4(napi_env env, napi_callback_info info) { return do_wait(env, info, true); }

/* ---------------------------------------------------------------------------
 * ExitWatcher: calls back (on the loop thread) when `pid` may have exited.
 * The callback re-checks with wait4(WNOHANG); with the SIGCHLD fallback it
 * can fire for other children too.
 *
 * The native struct lives until the JS object is collected (the wrap's
 * finalizer frees it). While it waits, it pins its own JS object (a count
 * on the wrap's reference): the object must outlive the wait even if the
 * caller drops it. */

typedef struct {
  napi_env env;
  napi_ref self;     /* the wrap's reference: count 1 while pinned */
  napi_ref callback; /* count 1, deleted by the finalizer */
  napi_async_context context;
  pid_t pid;
  bool pinned;
  bool using_signal;
  const char* kind;
  pd_loop_handle* handle;
} exit_watcher;

static void watcher_unpin(exit_watcher* w) {
  if (!w->pinned) return;
  w->pinned = false;
  uint32_t count;
  napi_reference_unref(w->env, w->self, &count);
}

static void watcher_shutdown(exit_watcher* w) {
  if (w->handle == NULL) return;
  pd_loop_close(w->handle);
  w->handle = NULL;
}

static void watcher_fire(void* owner) {
  exit_watcher* w = owner;
  /* A pidfd/kqueue only becomes readable once: stop polling (a readable
   * fd would otherwise spin the loop) before handing over to JS. */
  if (!w->using_signal) watcher_shutdown(w);
  pd_call_from_loop(w->env, w->callback, w->context, NULL, NULL);
  /* The watch is over (the callback may also have closed it): nothing
   * keeps the object alive any more but the caller. Unpinned after a
   * callback that threw too, which the C++ version leaked. */
  if (w->handle == NULL) watcher_unpin(w);
}

/* The environment ends with the watch open: the handle is being closed
 * for us; nothing else may keep the JS object alive. */
static void watcher_on_teardown(void* owner) {
  exit_watcher* w = owner;
  w->handle = NULL;
  watcher_unpin(w);
}

/* Frees what the struct holds and the struct; the handle must be gone. */
static void watcher_free(napi_env env, exit_watcher* w) {
  if (w->callback != NULL) napi_delete_reference(env, w->callback);
  if (w->context != NULL) napi_async_destroy(env, w->context);
  free(w);
}

static void watcher_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  exit_watcher* w = data;
  w->pinned = false; /* the reference is gone with the object */
  watcher_shutdown(w);
  if (w->self != NULL) napi_delete_reference(env, w->self);
  watcher_free(env, w);
}

/* Opens the kernel notification and starts its loop handle (which owns
 * the fd from then on, and frees it on every failure). NULL after
 * throwing: ESRCH for a PID that is gone, a libuv error. */
static pd_loop_handle* watcher_start(napi_env env, exit_watcher* w) {
  int fd = -1;
  int err = 0;
#ifdef __linux__
  fd = pd_pidfd_open(w->pid);
  if (fd == -1) err = errno;
  if (fd != -1) w->kind = "pidfd";
#elif defined(PD_HAVE_KQUEUE)
  fd = kqueue();
  if (fd == -1) {
    err = errno;
  } else {
    struct kevent ev;
    EV_SET(&ev, w->pid, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
    if (kevent(fd, &ev, 1, NULL, 0, NULL) == -1) {
      err = errno;
      close(fd);
      fd = -1;
      /* ESRCH: it is already gone (a zombie): the caller's own wait4 check
       * finds it; watch SIGCHLD so the callback still comes. */
      if (err == ESRCH) err = ENOSYS;
    } else {
      w->kind = "kqueue";
    }
  }
#else
  err = ENOSYS;
#endif
  if (fd != -1) return pd_loop_poll(env, fd, false, watcher_fire, w);
  if (err == ESRCH) {
    pd_throw_errno(env, ESRCH, "pidfd_open", NULL);
    return NULL;
  }
  /* No pidfd (old kernel, seccomp): SIGCHLD is the kernel's notification. */
  w->kind = "sigchld";
  w->using_signal = true;
  return pd_loop_signal(env, SIGCHLD, watcher_fire, w);
}

static napi_value watcher_construct(napi_env env, napi_callback_info info) {
  napi_value target;
  PD_CHECK(env, napi_get_new_target(env, info, &target));
  if (target == NULL) {
    napi_throw_type_error(env, NULL, "Class constructors cannot be invoked without 'new'");
    return NULL;
  }
  napi_value argv[2], self;
  if (!pd_args(env, info, 2, argv, &self)) return NULL;
  int32_t pid;
  if (!pd_arg_int(env, argv[0], "pid", 1, INT32_MAX, &pid)) return NULL;
  napi_valuetype type;
  PD_CHECK(env, napi_typeof(env, argv[1], &type));
  if (type != napi_function) return pd_throw_arg_type(env, "callback", "of type function");

  exit_watcher* w = calloc(1, sizeof(*w));
  if (w == NULL) return pd_throw_errno(env, ENOMEM, "malloc", NULL);
  w->env = env;
  w->pid = pid;
  w->kind = "none";
  napi_value resource, name;
  if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
      napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "posix-daemon:ExitWatcher", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &w->context) != napi_ok) {
    pd_throw_last(env);
    watcher_free(env, w);
    return NULL;
  }
  w->handle = watcher_start(env, w);
  if (w->handle == NULL) {
    watcher_free(env, w);
    return NULL;
  }
  pd_loop_on_teardown(w->handle, watcher_on_teardown);
  /* Wrapped last, once nothing else can fail: the finalizer then owns all
   * of it. The reference starts at 0 (weak); the pin takes it to 1. */
  if (napi_wrap(env, self, w, watcher_finalize, NULL, &w->self) != napi_ok) {
    pd_throw_last(env);
    watcher_shutdown(w);
    watcher_free(env, w);
    return NULL;
  }
  uint32_t count;
  if (napi_reference_ref(env, w->self, &count) != napi_ok) {
    /* Left to the finalizer: the wrap owns the struct now. */
    watcher_shutdown(w);
    return pd_throw_last(env);
  }
  w->pinned = true;
  return self;
}

static napi_value watcher_close(napi_env env, napi_callback_info info) {
  napi_value self;
  exit_watcher* w = (exit_watcher*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (w == NULL) return NULL;
  watcher_shutdown(w);
  watcher_unpin(w);
  return pd_undefined(env);
}

static napi_value watcher_set_ref(napi_env env, napi_callback_info info, bool on) {
  napi_value self;
  exit_watcher* w = (exit_watcher*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (w == NULL) return NULL;
  if (w->handle != NULL) pd_loop_set_ref(w->handle, on);
  return self;
}

static napi_value watcher_ref(napi_env env, napi_callback_info info) { return watcher_set_ref(env, info, true); }
static napi_value watcher_unref(napi_env env, napi_callback_info info) {
  return watcher_set_ref(env, info, false);
}

static napi_value watcher_kind(napi_env env, napi_callback_info info) {
  napi_value self;
  exit_watcher* w = (exit_watcher*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (w == NULL) return NULL;
  return pd_string(env, w->kind);
}

bool pd_init_wait(napi_env env, napi_value exports) {
  if (!pd_export_function(env, exports, "waitpid", js_waitpid) ||
      !pd_export_function(env, exports, "wait4", js_wait4)) {
    return false;
  }
  const napi_property_descriptor props[] = {
      {"close", NULL, watcher_close, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, watcher_ref, NULL, NULL, NULL, napi_default, NULL},
      {"unref", NULL, watcher_unref, NULL, NULL, NULL, napi_default, NULL},
      {"kind", NULL, NULL, watcher_kind, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  PD_CHECK_BOOL(env, napi_define_class(env, "ExitWatcher", NAPI_AUTO_LENGTH, watcher_construct, NULL,
                                       sizeof(props) / sizeof(props[0]), props, &cls));
  if (!pd_set(env, exports, "ExitWatcher", cls)) return false;
  napi_value c;
  PD_CHECK_BOOL(env, napi_create_object(env, &c));
  if (!set_number(env, c, "WNOHANG", WNOHANG) || !set_number(env, c, "WUNTRACED", WUNTRACED) ||
      !set_number(env, c, "WCONTINUED", WCONTINUED)) {
    return false;
  }
  return pd_set(env, exports, "constants", c);
}
