/* The libuv handles of the addon, and their end with the environment that
 * owns them (see pd.h).
 *
 * Why an async cleanup hook: when a worker's environment is freed, Node runs
 * its cleanup hooks, then frees the environment and unloads the addons only
 * it loaded. A handle closed from a plain cleanup hook gets its close
 * callback on a later loop turn, after the unload: SIGSEGV. An async hook is
 * waited for: Node keeps turning the loop until the hook says it is done,
 * which is when the last close callback of this environment has run. The
 * addon is then never pinned in memory (no RTLD_NODELETE): nothing of it
 * runs after that point. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "pd.h"

/* Per environment: its loop, the handles still open (an intrusive list)
 * and how many closes are pending. */
typedef struct loop_state {
  uv_loop_t* loop;
  pd_loop_handle* open;
  size_t closing; /* uv_close()d, close callback still to come */
  /* Set while the environment ends and closes are pending: removed (the
   * teardown goes on) by the last close callback. */
  napi_async_cleanup_hook_handle hook;
  /* The instance data was finalized while closes were pending (not
   * expected: the hook holds the environment until they are done): the
   * last close callback frees the state then. */
  bool orphaned;
} loop_state;

struct pd_loop_handle {
  union {
    uv_handle_t handle;
    uv_poll_t poll;
    uv_signal_t signal;
  } uv;
  bool poll;
  int fd;
  pd_loop_callback on_event;
  pd_loop_callback on_teardown;
  void* owner;
  loop_state* state;
  pd_loop_handle* prev;
  pd_loop_handle* next;
};

static void unlink_handle(pd_loop_handle* h) {
  if (h->prev != NULL) h->prev->next = h->next;
  else if (h->state->open == h) h->state->open = h->next;
  if (h->next != NULL) h->next->prev = h->prev;
  h->prev = h->next = NULL;
}

static void close_done(loop_state* state) {
  if (--state->closing != 0) return;
  if (state->hook != NULL) {
    napi_async_cleanup_hook_handle hook = state->hook;
    state->hook = NULL;
    napi_remove_async_cleanup_hook(hook);
  }
  if (state->orphaned) free(state);
}

static void on_closed(uv_handle_t* uh) {
  pd_loop_handle* h = (pd_loop_handle*)uh->data;
  loop_state* state = h->state;
  if (h->fd != -1) close(h->fd);
  free(h);
  close_done(state);
}

static void on_poll(uv_poll_t* p, int status, int events) {
  /* An error status (the fd went bad) is reported as an event too: the
   * owner checks what happened with a syscall of its own. */
  (void)status;
  (void)events;
  pd_loop_handle* h = (pd_loop_handle*)p->data;
  if (h->owner != NULL) h->on_event(h->owner);
}

static void on_signal(uv_signal_t* s, int signum) {
  (void)signum;
  pd_loop_handle* h = (pd_loop_handle*)s->data;
  if (h->owner != NULL) h->on_event(h->owner);
}

void pd_loop_close(pd_loop_handle* h) {
  h->owner = NULL;
  unlink_handle(h);
  h->state->closing++;
  uv_close(&h->uv.handle, on_closed);
}

static pd_loop_handle* open_handle(napi_env env, int fd, int signum, int events, pd_loop_callback on_event,
                                   void* owner) {
  loop_state* state = NULL;
  const bool poll = fd != -1;
  if (napi_get_instance_data(env, (void**)&state) != napi_ok || state == NULL || state->loop == NULL) {
    if (fd != -1) close(fd);
    return pd_throw_error(env, "no event loop"), NULL;
  }
  pd_loop_handle* h = (pd_loop_handle*)calloc(1, sizeof(*h));
  if (h == NULL) {
    if (fd != -1) close(fd);
    return pd_throw_errno(env, ENOMEM, "malloc", NULL), NULL;
  }
  h->poll = poll;
  h->fd = fd;
  h->on_event = on_event;
  h->owner = owner;
  h->state = state;
  h->uv.handle.data = h;
  int r = poll ? uv_poll_init(state->loop, &h->uv.poll, fd) : uv_signal_init(state->loop, &h->uv.signal);
  if (r != 0) {
    /* Not registered with the loop: ours to free now. */
    free(h);
    if (fd != -1) close(fd);
    return pd_throw_errno(env, -r, poll ? "uv_poll_init" : "uv_signal_init", NULL), NULL;
  }
  h->next = state->open;
  if (state->open != NULL) state->open->prev = h;
  state->open = h;
  r = poll ? uv_poll_start(&h->uv.poll, events, on_poll) : uv_signal_start(&h->uv.signal, on_signal, signum);
  if (r != 0) {
    pd_loop_close(h); /* registered: only libuv's close callback may free it */
    return pd_throw_errno(env, -r, poll ? "uv_poll_start" : "uv_signal_start", NULL), NULL;
  }
  return h;
}

pd_loop_handle* pd_loop_poll(napi_env env, int fd, bool writable, pd_loop_callback on_event, void* owner) {
  return open_handle(env, fd, 0, writable ? UV_WRITABLE : UV_READABLE, on_event, owner);
}

pd_loop_handle* pd_loop_signal(napi_env env, int signum, pd_loop_callback on_event, void* owner) {
  return open_handle(env, -1, signum, 0, on_event, owner);
}

void pd_loop_on_teardown(pd_loop_handle* h, pd_loop_callback cb) { h->on_teardown = cb; }

void pd_loop_stop(pd_loop_handle* h) {
  if (h->poll) uv_poll_stop(&h->uv.poll);
  else uv_signal_stop(&h->uv.signal);
}

void pd_loop_set_ref(pd_loop_handle* h, bool on) {
  if (on) uv_ref(&h->uv.handle);
  else uv_unref(&h->uv.handle);
}

int pd_loop_fd(const pd_loop_handle* h) { return h->fd; }

/* The environment ends: every handle still open is closed (its owner told
 * first, so it forgets the pointer), and the teardown waits for the close
 * callbacks. */
static void tear_down(napi_async_cleanup_hook_handle hook, void* arg) {
  loop_state* state = (loop_state*)arg;
  /* pd_loop_close() takes each handle out of the list, so this ends. */
  while (state->open != NULL) {
    pd_loop_handle* h = state->open;
    if (h->on_teardown != NULL && h->owner != NULL) h->on_teardown(h->owner);
    if (state->open == h) pd_loop_close(h); /* unless its owner closed it */
  }
  if (state->closing == 0) {
    napi_remove_async_cleanup_hook(hook);
  } else {
    state->hook = hook;
  }
}

static void finalize_state(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  loop_state* state = (loop_state*)data;
  if (state->closing == 0) free(state);
  else state->orphaned = true;
}

bool pd_loop_init(napi_env env) {
  loop_state* state = (loop_state*)calloc(1, sizeof(*state));
  if (state == NULL) return pd_throw_errno(env, ENOMEM, "malloc", NULL), false;
  if (napi_get_uv_event_loop(env, &state->loop) != napi_ok) state->loop = NULL;
  if (napi_set_instance_data(env, state, finalize_state, NULL) != napi_ok) {
    free(state);
    pd_throw_error(env, "cannot set the addon's instance data");
    return false;
  }
  napi_async_cleanup_hook_handle hook = NULL;
  if (napi_add_async_cleanup_hook(env, tear_down, state, &hook) != napi_ok) {
    pd_throw_error(env, "cannot add the addon's cleanup hook");
    return false;
  }
  return true;
}
