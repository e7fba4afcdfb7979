/* Shared declarations of the posix-daemon addon, in C.
 *
 * The addon is plain C over N-API (node_api.h) and libuv: it needs no C++
 * runtime, so one source builds for glibc and musl alike (issue 23), and
 * what runs between fork() and execve() is C by construction.
 *
 * Conventions:
 * - A function that can throw returns NULL (napi_value) or false (bool)
 *   with a JavaScript exception pending; the caller returns NULL at once.
 * - Strings and arrays taken from JavaScript are malloc'd copies, freed by
 *   their owner (pd_strv_free, pd_intv_free, free).
 */
#ifndef POSIX_DAEMON_PD_H
#define POSIX_DAEMON_PD_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors (args.c): each throws in env and returns NULL ---- */

/* A Node-style system error: "ENOENT: no such file or directory, execve '/x'"
 * with code, errno (negative, as in Node), syscall and path (path may be NULL). */
napi_value pd_throw_errno(napi_env env, int err, const char* syscall, const char* path);
/* TypeError, code ERR_INVALID_ARG_TYPE: The "name" argument must be <expected> */
napi_value pd_throw_arg_type(napi_env env, const char* name, const char* expected);
/* TypeError, code ERR_INVALID_ARG_VALUE: The argument 'name' <reason> */
napi_value pd_throw_arg_value(napi_env env, const char* name, const char* reason);
/* RangeError, code ERR_OUT_OF_RANGE, Node's wording for an integer range. */
napi_value pd_throw_out_of_range(napi_env env, const char* name, int64_t min, int64_t max);
/* A plain Error with `message`. */
napi_value pd_throw_error(napi_env env, const char* message);
/* After an N-API call failed: leaves the pending exception, or throws one
 * naming the failure when there is none. Returns NULL. */
napi_value pd_throw_last(napi_env env);

/* Return NULL (or false) when an N-API call fails, an exception pending. */
#define PD_CHECK(env, call)                            \
  do {                                                 \
    if ((call) != napi_ok) return pd_throw_last(env);  \
  } while (0)
#define PD_CHECK_BOOL(env, call)   \
  do {                             \
    if ((call) != napi_ok) {       \
      pd_throw_last(env);          \
      return false;                \
    }                              \
  } while (0)

/* ---- arguments (args.c): the TS layer validates first; these keep a
 * direct call into the raw addon from ever aborting the process. Each
 * returns false with an exception pending. ---- */

/* Up to `n` arguments into argv (missing ones are undefined); `self` may be NULL. */
bool pd_args(napi_env env, napi_callback_info info, size_t n, napi_value* argv, napi_value* self);
/* A string without NUL bytes, as a malloc'd C string. */
bool pd_arg_string(napi_env env, napi_value v, const char* name, char** out);
/* An integer number in [min, max]. */
bool pd_arg_int(napi_env env, napi_value v, const char* name, int64_t min, int64_t max, int32_t* out);
/* obj[key] as a bool, `def` when undefined; the error names it `owner.key`. */
bool pd_opt_bool(napi_env env, napi_value obj, const char* key, const char* owner, bool def, bool* out);
bool pd_is_undefined(napi_env env, napi_value v);

/* A NULL-terminated vector of malloc'd strings (v[n] == NULL). Built before
 * fork() so the child never allocates. */
typedef struct {
  char** v;
  size_t n;
} pd_strv;
bool pd_arg_string_array(napi_env env, napi_value v, const char* name, pd_strv* out);
void pd_strv_free(pd_strv* s);
/* The process environment as "KEY=value" strings (what execve would pass).
 * false (errno ENOMEM) when out of memory; nothing is thrown. */
bool pd_current_environ(pd_strv* out);

typedef struct {
  int* v;
  size_t n;
} pd_intv;
/* An array of fds, each an integer in [min_fd, INT32_MAX]. */
bool pd_arg_fd_array(napi_env env, napi_value v, const char* name, int min_fd, pd_intv* out);
void pd_intv_free(pd_intv* s);

/* ---- values (args.c): NULL after throwing ---- */
napi_value pd_undefined(napi_env env);
napi_value pd_null(napi_env env);
napi_value pd_bool(napi_env env, bool b);
napi_value pd_number(napi_env env, double d);
napi_value pd_string(napi_env env, const char* s);
/* obj[key] = value; false after throwing (value NULL: an exception is pending). */
bool pd_set(napi_env env, napi_value obj, const char* key, napi_value value);
/* exports[name] = a function `name` calling cb. */
bool pd_export_function(napi_env env, napi_value exports, const char* name, napi_callback cb);

/* ---- calling JavaScript from libuv callbacks ----
 * A poll handle can still fire once while Node tears the environment down
 * at exit, when every N-API call fails: the event is then dropped. An
 * exception the JS callback throws goes to the process (napi_fatal_exception),
 * as for any event-loop callback. `build` (may be NULL) fills up to 4
 * arguments inside the handle scope and returns their count, or -1 to drop
 * the call. */
typedef int (*pd_build_args)(napi_env env, void* data, napi_value* argv);
void pd_call_from_loop(napi_env env, napi_ref callback, napi_async_context context, pd_build_args build,
                       void* data);

/* ---- fds (fds.c) ---- */
void pd_record_stdio_flags(void);
/* Was fd 0..2 non-blocking when the addon was loaded? */
bool pd_stdio_was_nonblocking(int fd);
/* Highest fd worth probing one by one (see fds.c). */
int pd_scan_fd_limit(void);
/* Open fds ascending, from /proc/self/fd (Linux) or /dev/fd (macOS), else a
 * probe loop. false (errno set) when out of memory. */
bool pd_open_fds(pd_intv* out);
bool pd_fd_is_open(int fd);
/* Async-signal-safe from here on: usable between fork() and execve(). */
/* Every fd >= 3 close-on-exec except `keep` (sorted ascending), whose
 * close-on-exec is cleared. Returns 0 or errno. */
int pd_cloexec_all_except(const int* keep, size_t nkeep, int fd_limit);
/* pidfd_open(2), close-on-exec; -1 with errno (ENOSYS elsewhere). */
int pd_pidfd_open(pid_t pid);
/* pipe(2) with both ends close-on-exec; -1 with errno. */
int pd_pipe_cloexec(int fds[2]);
/* Sets or clears O_NONBLOCK; the previous status flags, or -1 with errno. */
int pd_set_nonblocking(int fd, bool on);
/* write(2) all of data across EINTR and short writes; 0 or errno. */
int pd_write_all(int fd, const void* data, size_t size);

/* ---- signals (fork/child.c) ----
 * Async-signal-safe: every catchable signal back to SIG_DFL. */
void pd_reset_signal_dispositions(void);

/* ---- libuv handles owned by the addon (loop.c) ----
 * A uv_poll_t on an fd, or a uv_signal_t, used by a JS object:
 * - allocated apart from that object: libuv owns it from init until its
 *   close callback, which may come after the object was collected;
 * - the fd it polls is its own and is closed in that close callback;
 * - when its environment ends (a worker finishes or is terminated) with
 *   the handle still open, an async cleanup hook closes it and holds the
 *   teardown until every close callback of the environment's handles has
 *   run. Only then may Node unload the addon (issue 16, item 1). */
typedef struct pd_loop_handle pd_loop_handle;
typedef void (*pd_loop_callback)(void* owner);
/* Per-environment bookkeeping; called first by the addon's init. */
bool pd_loop_init(napi_env env);
/* Polls fd for readability (or writability). Takes the fd: closed on
 * failure too. NULL after throwing. */
pd_loop_handle* pd_loop_poll(napi_env env, int fd, bool writable, pd_loop_callback on_event, void* owner);
/* Watches signum through libuv's signal handling. NULL after throwing. */
pd_loop_handle* pd_loop_signal(napi_env env, int signum, pd_loop_callback on_event, void* owner);
/* Called instead of any further event when the environment ends with the
 * handle open: the hook closes the handle itself; the owner must forget it
 * and drop what keeps its JS object alive. No JavaScript may run. */
void pd_loop_on_teardown(pd_loop_handle* h, pd_loop_callback cb);
void pd_loop_stop(pd_loop_handle* h);              /* no more events; stays open */
void pd_loop_set_ref(pd_loop_handle* h, bool on);  /* uv_ref / uv_unref */
int pd_loop_fd(const pd_loop_handle* h);
/* No callback after this; libuv's close callback closes the fd and frees
 * the handle. The pointer must not be used again. */
void pd_loop_close(pd_loop_handle* h);

/* ---- module parts: each adds its bindings to exports; false after throwing ---- */
bool pd_init_fork(napi_env env, napi_value exports);
bool pd_init_exec(napi_env env, napi_value exports);
bool pd_init_wait(napi_env env, napi_value exports);
bool pd_init_proc(napi_env env, napi_value exports);
bool pd_init_init(napi_env env, napi_value exports);
bool pd_init_pidfd(napi_env env, napi_value exports);
bool pd_init_files(napi_env env, napi_value exports);
bool pd_init_notify(napi_env env, napi_value exports);
bool pd_init_sockets(napi_env env, napi_value exports);
bool pd_init_inotify(napi_env env, napi_value exports);

#ifdef __cplusplus
}
#endif

#endif /* POSIX_DAEMON_PD_H */
