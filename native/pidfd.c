/* A handle on a process that is not (necessarily) our child: a pidfd.
 *
 * A PID is only a number; once its process is gone and reaped, the kernel
 * may give it to an unrelated process, and kill(pid) would hit that one. A
 * pidfd (Linux >= 5.3) refers to one process for good: pidfd_send_signal()
 * on it fails with ESRCH once that process has ended, and the fd becomes
 * readable when it ends, which libuv can watch (no thread, no timer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "pd.h"
#include "wrap.h"

#if defined(__linux__) && !defined(SYS_pidfd_send_signal)
#define SYS_pidfd_send_signal 424
#endif

/* /proc/self/fdinfo of a pidfd has a "Pid:" line (-1 once the process has
 * been reaped); no other kind of fd has one. */
static bool is_pidfd_of(int fd, pid_t pid) {
#ifdef __linux__
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
  int info = open(path, O_RDONLY | O_CLOEXEC);
  if (info == -1) return false;
  char buf[1024];
  ssize_t n;
  do {
    n = read(info, buf, sizeof(buf) - 1);
  } while (n == -1 && errno == EINTR);
  close(info);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* line = strstr(buf, "\nPid:");
  if (line == NULL) return false;
  long got = strtol(line + 5, NULL, 10);
  return got == pid || got == -1;
#else
  (void)fd;
  (void)pid;
  return false;
#endif
}

typedef struct {
  pd_polled_fd p;  /* first: the poll's owner pointer is both */
  bool watching;
  bool unref;
  napi_ref callback;  /* count 1 while set */
  napi_async_context context;
} process_handle;

static void ph_finalize(napi_env env, void* data, void* hint) {
  process_handle* h = (process_handle*)data;
  pd_polled_shutdown(&h->p);
  if (h->callback != NULL) napi_delete_reference(env, h->callback);
  if (h->context != NULL) napi_async_destroy(env, h->context);
  napi_delete_reference(env, h->p.wrap);
  free(h);
}

/* new ProcessHandle(pid): pidfd_open(pid). Throws ESRCH when there is no
 * such process, ENOSYS (or EPERM under some seccomp profiles) where the
 * kernel has no pidfds: the TS layer falls back to plain kill() then.
 *
 * new ProcessHandle(pid, pidfd): adopts a pidfd (fork()'s, opened by the
 * intermediate while the PID was certainly right). It must be a pidfd of
 * `pid`, or of a process that has already been reaped (which can't be
 * told apart, and can't hurt anyone): EINVAL otherwise, and the fd is
 * left alone. Taken on success only: whenever this throws, the caller
 * still owns it (and closes it). */
static napi_value ph_new(napi_env env, napi_callback_info info) {
  if (!pd_require_new(env, info)) return NULL;
  napi_value argv[2], self;
  if (!pd_args(env, info, 2, argv, &self)) return NULL;
  int32_t pid;
  if (!pd_arg_int(env, argv[0], "pid", 1, INT32_MAX, &pid)) return NULL;
  int fd;
  bool adopted = !pd_is_undefined(env, argv[1]);
  if (adopted) {
    if (!pd_arg_int(env, argv[1], "pidfd", 0, INT32_MAX, &fd)) return NULL;
    if (!is_pidfd_of(fd, pid)) return pd_throw_errno(env, EINVAL, "pidfd_open", NULL);
  } else {
    /* pidfd_open sets O_CLOEXEC itself (the fd is never inherited). */
    fd = pd_pidfd_open(pid);
    if (fd == -1) return pd_throw_errno(env, errno, "pidfd_open", NULL);
  }
  process_handle* h = (process_handle*)calloc(1, sizeof(*h));
  if (h == NULL) {
    if (!adopted) close(fd);
    return pd_throw_errno(env, ENOMEM, "malloc", NULL);
  }
  h->p.env = env;
  h->p.fd = fd;
  /* The reference starts at count 0: weak until watch() pins it. */
  if (napi_wrap(env, self, h, ph_finalize, NULL, &h->p.wrap) != napi_ok) {
    free(h);
    if (!adopted) close(fd);
    return pd_throw_last(env);
  }
  return self;
}

/* kill(signal): true if sent, false if the process has already ended
 * (ESRCH); other errors (EPERM) are thrown. */
static napi_value ph_kill(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 1, argv, NULL);
  if (h == NULL) return NULL;
  int32_t sig;
  if (!pd_arg_int(env, argv[0], "signal", 0, NSIG - 1, &sig)) return NULL;
  if (h->p.fd == -1) return pd_throw_errno(env, EBADF, "pidfd_send_signal", NULL);
#ifdef __linux__
  if (syscall(SYS_pidfd_send_signal, h->p.fd, sig, NULL, 0) == -1) {
    if (errno == ESRCH) return pd_bool(env, false);
    return pd_throw_errno(env, errno, "pidfd_send_signal", NULL);
  }
#endif
  return pd_bool(env, true);
}

static void ph_on_event(void* owner) {
  process_handle* h = (process_handle*)owner;
  /* Readable stays readable: stop polling before JS runs. The fd itself
   * stays open until close(), so kill() keeps answering ESRCH rather than
   * hitting a reused PID. */
  if (h->p.poll != NULL) pd_loop_stop(h->p.poll);
  pd_call_from_loop(h->p.env, h->callback, h->context, NULL, NULL);
  /* The pin ends with the one callback, whether or not it threw (then its
   * exception went to the process). Finalizers never run inside the call,
   * so h is still there. */
  pd_polled_unpin(&h->p);
}

/* watch(callback): calls back once, on the loop thread, when the process
 * has ended. Keeps the loop alive until then unless unref()'d. */
static napi_value ph_watch(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 1, argv, NULL);
  if (h == NULL) return NULL;
  napi_valuetype type;
  PD_CHECK(env, napi_typeof(env, argv[0], &type));
  if (type != napi_function) return pd_throw_arg_type(env, "callback", "of type function");
  if (h->p.fd == -1) return pd_throw_errno(env, EBADF, "uv_poll_start", NULL);
  if (h->watching) return pd_throw_arg_value(env, "callback", "is already set");
  napi_ref callback = NULL;
  napi_async_context context = NULL;
  napi_value name = pd_string(env, "posix-daemon:ProcessHandle");
  if (name == NULL) return NULL;
  PD_CHECK(env, napi_create_reference(env, argv[0], 1, &callback));
  if (napi_async_init(env, NULL, name, &context) != napi_ok) {
    napi_delete_reference(env, callback);
    return pd_throw_last(env);
  }
  /* The poll owns the pidfd from here on (closes it with itself, and on
   * failure too); fd stays the number kill() uses until then. */
  int fd = h->p.fd;
  h->p.fd = -1;
  h->p.poll = pd_loop_poll(env, fd, false, ph_on_event, h);
  if (h->p.poll == NULL) {
    napi_async_destroy(env, context);
    napi_delete_reference(env, callback);
    return NULL;
  }
  h->p.fd = fd;
  h->callback = callback;
  h->context = context;
  pd_loop_on_teardown(h->p.poll, pd_polled_on_teardown);
  h->watching = true;
  if (h->unref) pd_loop_set_ref(h->p.poll, false);
  /* Pinned until the callback, ref'd or not: only the callback knows who
   * waits for it (a Promise may outlive the handle), and ref() after
   * unref() must find it still there (issue 16, item 12). */
  if (!pd_polled_pin(&h->p)) return NULL;
  return pd_undefined(env);
}

static napi_value ph_close(napi_env env, napi_callback_info info) {
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 0, NULL, NULL);
  if (h == NULL) return NULL;
  pd_polled_shutdown(&h->p);
  pd_polled_unpin(&h->p);
  return pd_undefined(env);
}

static napi_value ph_ref(napi_env env, napi_callback_info info) {
  napi_value self;
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (h == NULL) return NULL;
  h->unref = false;
  if (h->p.poll != NULL) pd_loop_set_ref(h->p.poll, true);
  return self;
}

static napi_value ph_unref(napi_env env, napi_callback_info info) {
  napi_value self;
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (h == NULL) return NULL;
  h->unref = true;
  if (h->p.poll != NULL) pd_loop_set_ref(h->p.poll, false);
  return self;
}

static napi_value ph_fd(napi_env env, napi_callback_info info) {
  process_handle* h = (process_handle*)pd_unwrap_this(env, info, 0, NULL, NULL);
  if (h == NULL) return NULL;
  return pd_number(env, h->p.fd);
}

bool pd_init_pidfd(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"kill", NULL, ph_kill, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, ph_watch, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, ph_close, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, ph_ref, NULL, NULL, NULL, napi_default, NULL},
      {"unref", NULL, ph_unref, NULL, NULL, NULL, napi_default, NULL},
      {"fd", NULL, NULL, ph_fd, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  PD_CHECK_BOOL(env, napi_define_class(env, "ProcessHandle", NAPI_AUTO_LENGTH, ph_new, NULL,
                                       sizeof(props) / sizeof(props[0]), props, &cls));
  return pd_set(env, exports, "ProcessHandle", cls);
}
