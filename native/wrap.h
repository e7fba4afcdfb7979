/* Helpers for the addon's classes (napi_define_class + napi_wrap), the
 * parts of node-addon-api's ObjectWrap the JS side could tell apart.
 *
 * The state a JS object keeps for an fd of its own that a pd_loop_handle
 * polls (ProcessHandle's pidfd, NotifySocket's socket): the fd, its poll,
 * and whether the object pins itself while it waits.
 *
 * The pin is napi_wrap's reference: created with count 0 (weak: the object
 * can be collected and finalized), raised to 1 while something only the
 * poll knows about waits on the object. The owning struct must start with
 * a pd_polled_fd, so that the owner pointer given to the poll is both.
 */
#ifndef POSIX_DAEMON_WRAP_H
#define POSIX_DAEMON_WRAP_H

#include <unistd.h>

#include "pd.h"

/* A class made by napi_define_class is a plain function: called without
 * `new`, `this` would be the receiver (an exports object, say). Throws as
 * an ES class would, and as ObjectWrap did. false after throwing. */
static inline bool pd_require_new(napi_env env, napi_callback_info info) {
  napi_value target = NULL;
  if (napi_get_new_target(env, info, &target) != napi_ok) {
    pd_throw_last(env);
    return false;
  }
  if (target != NULL) return true;
  napi_throw_type_error(env, NULL, "Class constructors cannot be invoked without 'new'");
  return false;
}

/* The native struct behind `this` (after up to n arguments into argv;
 * `self` may be NULL), or NULL after throwing: `this` is not one of ours
 * (a method called on a stranger). */
static inline void* pd_unwrap_this(napi_env env, napi_callback_info info, size_t n, napi_value* argv,
                                   napi_value* self) {
  napi_value this_arg;
  if (!pd_args(env, info, n, argv, &this_arg)) return NULL;
  void* data = NULL;
  if (napi_unwrap(env, this_arg, &data) != napi_ok || data == NULL) {
    pd_throw_last(env);
    return NULL;
  }
  if (self != NULL) *self = this_arg;
  return data;
}

typedef struct {
  napi_env env;
  napi_ref wrap;  /* napi_wrap's reference; deleted in the finalizer only */
  int fd;         /* -1 once closed */
  pd_loop_handle* poll;
  bool pinned;
} pd_polled_fd;

/* Keeps the JS object alive (and with it the callback) until unpinned.
 * false after throwing. */
static inline bool pd_polled_pin(pd_polled_fd* p) {
  if (p->pinned) return true;
  if (napi_reference_ref(p->env, p->wrap, NULL) != napi_ok) {
    pd_throw_last(p->env);
    return false;
  }
  p->pinned = true;
  return true;
}

/* No JavaScript runs here: safe from a teardown callback and a finalizer. */
static inline void pd_polled_unpin(pd_polled_fd* p) {
  if (!p->pinned) return;
  p->pinned = false;
  napi_reference_unref(p->env, p->wrap, NULL);
}

/* Closes the fd: through its poll when there is one (libuv closes it once
 * done with it), else directly. */
static inline void pd_polled_shutdown(pd_polled_fd* p) {
  if (p->poll != NULL) {
    pd_loop_close(p->poll);
    p->poll = NULL;
  } else if (p->fd != -1) {
    close(p->fd);
  }
  p->fd = -1;
}

/* The environment ended with the poll open: it closed the poll and the fd. */
static inline void pd_polled_on_teardown(void* owner) {
  pd_polled_fd* p = (pd_polled_fd*)owner;
  p->poll = NULL;
  p->fd = -1;
  pd_polled_unpin(p);
}

#endif /* POSIX_DAEMON_WRAP_H */
