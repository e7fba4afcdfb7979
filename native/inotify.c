/* A minimal inotify watcher on the libuv loop, for autorestart's file
 * watching. Why not fs.watch: libuv maps inotify to 'change'/'rename' and
 * drops IN_CLOSE_WRITE, the one event that says "a writer is done with this
 * file" (and IN_MOVED_TO, "a finished file was renamed into place"). Those
 * let a change settle as soon as the kernel says so, instead of after a
 * blind quiet-time timer.
 *
 * One inotify fd serves any number of watches (the JS side keeps one
 * instance per process and one watch per directory); it is read when libuv
 * says it is readable (uv_poll: no thread, no polling). Events are handed to
 * JS in one flat array per read: [wd, mask, cookie, name, wd, mask, ...].
 */
#define _GNU_SOURCE
#include "pd.h"
#include "wrap.h"

#ifdef __linux__

#include <errno.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

/* What one read() may return at most is not bounded by one event (names
 * vary); 16 KiB holds hundreds of typical ones. */
#define INOTIFY_READ_SIZE 16384

typedef struct {
  napi_env env;
  napi_ref wrap;  /* napi_wrap's reference: count 1 (pinned) while open */
  pd_loop_handle* poll;
  napi_ref callback;
  napi_async_context context;
} inotify_watcher;

static int in_fd(const inotify_watcher* w) { return w->poll == NULL ? -1 : pd_loop_fd(w->poll); }

static void in_shutdown(inotify_watcher* w) {
  if (w->poll == NULL) return;
  pd_loop_close(w->poll); /* closes the inotify fd once libuv is done with it */
  w->poll = NULL;
}

static void in_finalize(napi_env env, void* data, void* hint) {
  inotify_watcher* w = (inotify_watcher*)data;
  in_shutdown(w);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  napi_delete_reference(env, w->wrap);
  free(w);
}

/* The environment ends with the watcher open (an unref'd one, say): the
 * poll is closed for us; the reference keeping the object goes too. */
static void in_on_teardown(void* owner) {
  inotify_watcher* w = (inotify_watcher*)owner;
  w->poll = NULL;
  napi_reference_unref(w->env, w->wrap, NULL);
}

/* Events read from the fd, handed to the array builder. */
typedef struct {
  const char* data;
  size_t size;
} in_events;

static int in_build(napi_env env, void* data, napi_value* argv) {
  const in_events* ev = (const in_events*)data;
  napi_value out;
  if (napi_create_array(env, &out) != napi_ok) return -1;
  uint32_t n = 0;
  for (size_t off = 0; off < ev->size;) {
    const struct inotify_event* e = (const struct inotify_event*)(ev->data + off);
    napi_value v[4];
    v[0] = pd_number(env, e->wd);
    v[1] = pd_number(env, e->mask);
    v[2] = pd_number(env, e->cookie);
    v[3] = e->len > 0 ? pd_string(env, e->name) : pd_null(env);
    for (int i = 0; i < 4; i++) {
      if (v[i] == NULL || napi_set_element(env, out, n++, v[i]) != napi_ok) return -1;
    }
    off += sizeof(struct inotify_event) + e->len;
  }
  argv[0] = out;
  return 1;
}

static void in_on_readable(void* owner) {
  inotify_watcher* w = (inotify_watcher*)owner;
  int fd = in_fd(w);
  char* buf = NULL;
  size_t size = 0, cap = 0;
  for (;;) {
    if (cap - size < INOTIFY_READ_SIZE) {
      /* Out of memory: hand over what was read; the rest stays queued in
       * the kernel, and the fd, still readable, brings us back. */
      char* more = (char*)realloc(buf, cap + INOTIFY_READ_SIZE);
      if (more == NULL) break;
      buf = more;
      cap += INOTIFY_READ_SIZE;
    }
    ssize_t len = read(fd, buf + size, INOTIFY_READ_SIZE);
    if (len < 0 && errno == EINTR) continue;
    if (len <= 0) break; /* EAGAIN: drained */
    size += (size_t)len;
  }
  if (size != 0) {
    in_events ev = {buf, size};
    pd_call_from_loop(w->env, w->callback, w->context, in_build, &ev);
  }
  free(buf);
}

static napi_value in_new(napi_env env, napi_callback_info info) {
  if (!pd_require_new(env, info)) return NULL;
  napi_value argv[1], self;
  if (!pd_args(env, info, 1, argv, &self)) return NULL;
  napi_valuetype type;
  PD_CHECK(env, napi_typeof(env, argv[0], &type));
  if (type != napi_function) return pd_throw_arg_type(env, "callback", "of type function");
  napi_value name = pd_string(env, "PosixDaemonInotify");
  if (name == NULL) return NULL;
  inotify_watcher* w = (inotify_watcher*)calloc(1, sizeof(*w));
  if (w == NULL) return pd_throw_errno(env, ENOMEM, "malloc", NULL);
  w->env = env;
  if (napi_create_reference(env, argv[0], 1, &w->callback) != napi_ok) {
    pd_throw_last(env);
    goto fail;
  }
  if (napi_async_init(env, NULL, name, &w->context) != napi_ok) {
    pd_throw_last(env);
    goto fail;
  }
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    pd_throw_errno(env, errno, "inotify_init1", NULL);
    goto fail;
  }
  w->poll = pd_loop_poll(env, fd, false, in_on_readable, w); /* owns the fd */
  if (w->poll == NULL) goto fail;
  pd_loop_on_teardown(w->poll, in_on_teardown);
  if (napi_wrap(env, self, w, in_finalize, NULL, &w->wrap) != napi_ok) {
    pd_throw_last(env);
    goto fail;
  }
  /* While open, the JS object must outlive any GC: the poll calls back
   * into it. close() drops this reference. Once wrapped, the finalizer
   * owns w: a failure here leaves it to the finalizer. */
  PD_CHECK(env, napi_reference_ref(env, w->wrap, NULL));
  return self;
fail:
  in_shutdown(w);
  if (w->context != NULL) napi_async_destroy(env, w->context);
  if (w->callback != NULL) napi_delete_reference(env, w->callback);
  free(w);
  return NULL;
}

/* add(path, mask) -> wd. The kernel returns the same wd for a path (inode)
 * already watched; IN_MASK_ADD in `mask` merges masks. */
static napi_value in_add(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 2, argv, NULL);
  if (w == NULL) return NULL;
  char* path = NULL;
  if (!pd_arg_string(env, argv[0], "path", &path)) return NULL;
  napi_value result = NULL;
  int32_t mask;
  if (!pd_arg_int(env, argv[1], "mask", 1, INT32_MAX, &mask)) goto done;
  if (in_fd(w) < 0) {
    pd_throw_errno(env, EBADF, "inotify_add_watch", path);
    goto done;
  }
  int wd = inotify_add_watch(in_fd(w), path, (uint32_t)mask);
  if (wd < 0) {
    pd_throw_errno(env, errno, "inotify_add_watch", path);
    goto done;
  }
  result = pd_number(env, wd);
done:
  free(path);
  return result;
}

static napi_value in_remove(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 1, argv, NULL);
  if (w == NULL) return NULL;
  int32_t wd;
  if (!pd_arg_int(env, argv[0], "wd", 0, INT32_MAX, &wd)) return NULL;
  /* EINVAL: the watch is already gone (its directory was deleted): fine. */
  if (in_fd(w) >= 0) inotify_rm_watch(in_fd(w), wd);
  return pd_undefined(env);
}

static napi_value in_close(napi_env env, napi_callback_info info) {
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 0, NULL, NULL);
  if (w == NULL) return NULL;
  if (w->poll != NULL) {
    in_shutdown(w);
    napi_reference_unref(env, w->wrap, NULL);
  }
  return pd_undefined(env);
}

static napi_value in_ref(napi_env env, napi_callback_info info) {
  napi_value self;
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (w == NULL) return NULL;
  if (w->poll != NULL) pd_loop_set_ref(w->poll, true);
  return self;
}

static napi_value in_unref(napi_env env, napi_callback_info info) {
  napi_value self;
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 0, NULL, &self);
  if (w == NULL) return NULL;
  if (w->poll != NULL) pd_loop_set_ref(w->poll, false);
  return self;
}

static napi_value in_get_fd(napi_env env, napi_callback_info info) {
  inotify_watcher* w = (inotify_watcher*)pd_unwrap_this(env, info, 0, NULL, NULL);
  if (w == NULL) return NULL;
  return pd_number(env, in_fd(w));
}

static bool set_constant(napi_env env, napi_value obj, const char* name, uint32_t value) {
  return pd_set(env, obj, name, pd_number(env, value));
}

bool pd_init_inotify(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"add", NULL, in_add, NULL, NULL, NULL, napi_default, NULL},
      {"remove", NULL, in_remove, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, in_close, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, in_ref, NULL, NULL, NULL, napi_default, NULL},
      {"unref", NULL, in_unref, NULL, NULL, NULL, napi_default, NULL},
      {"fd", NULL, NULL, in_get_fd, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  PD_CHECK_BOOL(env, napi_define_class(env, "Inotify", NAPI_AUTO_LENGTH, in_new, NULL,
                                       sizeof(props) / sizeof(props[0]), props, &cls));
  if (!pd_set(env, exports, "Inotify", cls)) return false;
  napi_value c;
  PD_CHECK_BOOL(env, napi_create_object(env, &c));
#define PD_IN_CONSTANT(name) \
  if (!set_constant(env, c, #name, name)) return false;
  PD_IN_CONSTANT(IN_MODIFY)
  PD_IN_CONSTANT(IN_ATTRIB)
  PD_IN_CONSTANT(IN_CLOSE_WRITE)
  PD_IN_CONSTANT(IN_MOVED_FROM)
  PD_IN_CONSTANT(IN_MOVED_TO)
  PD_IN_CONSTANT(IN_CREATE)
  PD_IN_CONSTANT(IN_DELETE)
  PD_IN_CONSTANT(IN_DELETE_SELF)
  PD_IN_CONSTANT(IN_MOVE_SELF)
  PD_IN_CONSTANT(IN_Q_OVERFLOW)
  PD_IN_CONSTANT(IN_IGNORED)
  PD_IN_CONSTANT(IN_ONLYDIR)
  PD_IN_CONSTANT(IN_EXCL_UNLINK)
#undef PD_IN_CONSTANT
  return pd_set(env, exports, "inotifyConstants", c);
}

#else /* !__linux__ */

/* No inotify: the JS side falls back to fs.watch with the quiet-time timer. */
bool pd_init_inotify(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
  return true;
}

#endif
