/* sd_notify(3) without libsystemd: one datagram over an AF_UNIX SOCK_DGRAM
 * socket to $NOTIFY_SOCKET, sent by the calling process itself (systemd
 * takes the sender's PID from the kernel's SCM_CREDENTIALS and drops
 * messages from processes it does not expect). Plus CLOCK_MONOTONIC in
 * microseconds, which RELOADING=1 must carry as MONOTONIC_USEC=.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pd.h"
#include "wrap.h"

/* SCM_MAX_FD: the kernel refuses more in one message. */
#define NOTIFY_MAX_FDS 253

/* Builds the address: "/path" or "@abstract" (the leading '@' stands for
 * the NUL byte of the abstract namespace, as in systemd). Returns 0 or
 * errno. */
static int notify_address(const char* address, struct sockaddr_un* sa, socklen_t* len) {
  size_t size = strlen(address);
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (size < 2 || (address[0] != '/' && address[0] != '@')) return EAFNOSUPPORT;
  if (size > sizeof(sa->sun_path) - (address[0] == '/' ? 1 : 0)) return ENAMETOOLONG;
  memcpy(sa->sun_path, address, size);
  if (address[0] == '@') {
    sa->sun_path[0] = '\0';
    /* Abstract names are counted, not NUL-terminated. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + size);
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + size + 1);
  }
  return 0;
}

/* A connected, non-blocking AF_UNIX datagram socket to the manager.
 *
 * send() never waits: when the manager's queue is full it says so (false),
 * and the caller keeps the message. watch() then has libuv tell it when
 * the socket is writable again: a connected unix datagram socket polls
 * writable once the peer's queue has room, so the kernel wakes us; no
 * timer, no blocking (issue 22, item 14: a 2 ms budget lost READY=1 to a
 * manager 20 ms late). The socket belongs to this object, and to the poll
 * handle once watched (closed with it). */
typedef struct {
  pd_polled_fd p;  /* first: the poll's owner pointer is both */
  char* address;
  napi_ref callback;  /* count 1 while set */
  napi_async_context context;
} notify_socket;

static void ns_finalize(napi_env env, void* data, void* hint) {
  notify_socket* s = (notify_socket*)data;
  pd_polled_shutdown(&s->p);
  if (s->callback != NULL) napi_delete_reference(env, s->callback);
  if (s->context != NULL) napi_async_destroy(env, s->context);
  napi_delete_reference(env, s->p.wrap);
  free(s->address);
  free(s);
}

/* new NotifySocket(address): "/path" or "@abstract". Throws a Node-style
 * error (connect, socket) when the manager cannot be reached. */
static napi_value ns_new(napi_env env, napi_callback_info info) {
  if (!pd_require_new(env, info)) return NULL;
  napi_value argv[1], self;
  if (!pd_args(env, info, 1, argv, &self)) return NULL;
  char* address = NULL;
  if (!pd_arg_string(env, argv[0], "address", &address)) return NULL;
  napi_value result = NULL;
  notify_socket* s = NULL;
  int fd = -1;
  struct sockaddr_un sa;
  socklen_t salen = 0;
  int err = notify_address(address, &sa, &salen);
  if (err != 0) {
    pd_throw_errno(env, err, "connect", address);
    goto done;
  }
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
  fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd != -1) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
#endif
  if (fd == -1) {
    pd_throw_errno(env, errno, "socket", NULL);
    goto done;
  }
  int r;
  do {
    r = connect(fd, (struct sockaddr*)&sa, salen);
  } while (r == -1 && errno == EINTR);
  if (r == -1) {
    pd_throw_errno(env, errno, "connect", address);
    goto done;
  }
  s = (notify_socket*)calloc(1, sizeof(*s));
  if (s == NULL) {
    pd_throw_errno(env, ENOMEM, "malloc", NULL);
    goto done;
  }
  s->p.env = env;
  s->p.fd = fd;
  s->address = address;
  /* The reference starts at count 0: weak until watch() pins it. */
  if (napi_wrap(env, self, s, ns_finalize, NULL, &s->p.wrap) != napi_ok) {
    pd_throw_last(env);
    goto done;
  }
  /* The object owns them now. */
  fd = -1;
  address = NULL;
  s = NULL;
  result = self;
done:
  free(s);
  if (fd != -1) close(fd);
  free(address);
  return result;
}

/* send(message, fds?): true once queued with the manager, false while its
 * queue is full (EAGAIN: nothing was sent, try again when writable). Other
 * failures throw (send/sendmsg, with the address as path). */
static napi_value ns_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  notify_socket* s = (notify_socket*)pd_unwrap_this(env, info, 2, argv, NULL);
  if (s == NULL) return NULL;
  char* message = NULL;
  if (!pd_arg_string(env, argv[0], "message", &message)) return NULL;
  napi_value result = NULL;
  pd_intv fds = {NULL, 0};
  size_t size = strlen(message);
  if (size == 0) {
    pd_throw_arg_value(env, "message", "must not be empty");
    goto done;
  }
  if (!pd_is_undefined(env, argv[1])) {
    if (!pd_arg_fd_array(env, argv[1], "fds", 0, &fds)) goto done;
    if (fds.n == 0 || fds.n > NOTIFY_MAX_FDS) {
      pd_throw_arg_value(env, "fds", "must hold 1 to 253 fds");
      goto done;
    }
    for (size_t i = 0; i < fds.n; i++) {
      if (fcntl(fds.v[i], F_GETFD) == -1) {
        pd_throw_errno(env, errno, "fcntl", NULL);
        goto done;
      }
    }
  }
  const char* syscall_name = fds.n == 0 ? "send" : "sendmsg";
  if (s->p.fd == -1) {
    pd_throw_errno(env, EBADF, syscall_name, s->address);
    goto done;
  }
  struct iovec iov;
  iov.iov_base = message;
  iov.iov_len = size;
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  /* Room for the most fds one message may carry, aligned for cmsghdr. */
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * NOTIFY_MAX_FDS)];
  } control;
  if (fds.n != 0) {
    size_t space = CMSG_SPACE(sizeof(int) * fds.n);
    memset(control.buf, 0, space);
    mh.msg_control = control.buf;
    mh.msg_controllen = space;
    struct cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.n);
    memcpy(CMSG_DATA(cm), fds.v, sizeof(int) * fds.n);
  }
#ifdef MSG_NOSIGNAL
  const int flags = MSG_NOSIGNAL | MSG_DONTWAIT; /* EPIPE, never SIGPIPE */
#else
  const int flags = MSG_DONTWAIT; /* datagram sockets do not raise SIGPIPE there */
#endif
  ssize_t n;
  do {
    n = sendmsg(s->p.fd, &mh, flags);
  } while (n == -1 && errno == EINTR);
  if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    result = pd_bool(env, false);
  } else if (n == -1) {
    pd_throw_errno(env, errno, syscall_name, s->address);
  } else if ((size_t)n != size) {
    pd_throw_errno(env, EMSGSIZE, syscall_name, s->address);
  } else {
    result = pd_bool(env, true);
  }
done:
  pd_intv_free(&fds);
  free(message);
  return result;
}

static void ns_on_event(void* owner) {
  notify_socket* s = (notify_socket*)owner;
  pd_call_from_loop(s->p.env, s->callback, s->context, NULL, NULL);
}

/* watch(callback): calls back, on the loop thread, whenever the socket is
 * writable, until close(). Keeps the event loop alive meanwhile: a queued
 * READY=1 or STOPPING=1 is sent before a process that ends by itself is
 * gone. */
static napi_value ns_watch(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  notify_socket* s = (notify_socket*)pd_unwrap_this(env, info, 1, argv, NULL);
  if (s == NULL) return NULL;
  napi_valuetype type;
  PD_CHECK(env, napi_typeof(env, argv[0], &type));
  if (type != napi_function) return pd_throw_arg_type(env, "callback", "of type function");
  if (s->p.fd == -1) return pd_throw_errno(env, EBADF, "uv_poll_start", NULL);
  if (s->p.poll != NULL) return pd_throw_arg_value(env, "callback", "is already set");
  napi_ref callback = NULL;
  napi_async_context context = NULL;
  napi_value name = pd_string(env, "posix-daemon:NotifySocket");
  if (name == NULL) return NULL;
  PD_CHECK(env, napi_create_reference(env, argv[0], 1, &callback));
  if (napi_async_init(env, NULL, name, &context) != napi_ok) {
    napi_delete_reference(env, callback);
    return pd_throw_last(env);
  }
  int fd = s->p.fd;
  s->p.fd = -1; /* the poll owns it from here on, closed on failure too */
  s->p.poll = pd_loop_poll(env, fd, true, ns_on_event, s);
  if (s->p.poll == NULL) {
    napi_async_destroy(env, context);
    napi_delete_reference(env, callback);
    return NULL;
  }
  s->p.fd = fd;
  s->callback = callback;
  s->context = context;
  pd_loop_on_teardown(s->p.poll, pd_polled_on_teardown);
  /* Alive until close(): only the poll refers to it then. */
  if (!pd_polled_pin(&s->p)) return NULL;
  return pd_undefined(env);
}

static napi_value ns_close(napi_env env, napi_callback_info info) {
  notify_socket* s = (notify_socket*)pd_unwrap_this(env, info, 0, NULL, NULL);
  if (s == NULL) return NULL;
  pd_polled_shutdown(&s->p);
  pd_polled_unpin(&s->p);
  return pd_undefined(env);
}

/* CLOCK_MONOTONIC in microseconds, as a BigInt (systemd compares it with
 * its own CLOCK_MONOTONIC reading taken when it sent the reload signal). */
static napi_value monotonic_usec(napi_env env, napi_callback_info info) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return pd_throw_errno(env, errno, "clock_gettime", NULL);
  uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
  napi_value out;
  PD_CHECK(env, napi_create_bigint_uint64(env, usec, &out));
  return out;
}

bool pd_init_notify(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"send", NULL, ns_send, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, ns_watch, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, ns_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  PD_CHECK_BOOL(env, napi_define_class(env, "NotifySocket", NAPI_AUTO_LENGTH, ns_new, NULL,
                                       sizeof(props) / sizeof(props[0]), props, &cls));
  if (!pd_set(env, exports, "NotifySocket", cls)) return false;
  return pd_export_function(env, exports, "monotonicUsec", monotonic_usec);
}
