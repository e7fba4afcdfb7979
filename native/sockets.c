/* What an inherited fd really is: socket or not, its type, whether it
 * listens, and its local address. listenFds()/listen() trust none of the
 * LISTEN_* variables' claims without asking the kernel. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "pd.h"

static const char* type_name(int type) {
  switch (type) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    case SOCK_RAW: return "raw";
    default: return "other";
  }
}

/* socketInfo(fd): null when fd is open but not a socket; otherwise
 * { type, listening, family, address?, port?, path? }. `path` of an abstract
 * unix socket starts with "\0", as Node's server.address() shows it. */
static napi_value socket_info(napi_env env, napi_callback_info info) {
  napi_value args[1];
  int32_t fd;
  if (!pd_args(env, info, 1, args, NULL)) return NULL;
  if (!pd_arg_int(env, args[0], "fd", 0, 0x7fffffff, &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return pd_throw_errno(env, errno, "fstat", NULL);
  if (!S_ISSOCK(st.st_mode)) return pd_null(env);
  napi_value out;
  PD_CHECK(env, napi_create_object(env, &out));
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return pd_throw_errno(env, errno, "getsockopt", NULL);
  if (!pd_set(env, out, "type", pd_string(env, type_name(type)))) return NULL;
  int listening = 0;
#ifdef SO_ACCEPTCONN
  len = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) listening = 0;
#endif
  if (!pd_set(env, out, "listening", pd_bool(env, listening != 0))) return NULL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr*)&ss, &len) != 0) return pd_throw_errno(env, errno, "getsockname", NULL);
  char text[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in* in = (struct sockaddr_in*)&ss;
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    if (!pd_set(env, out, "family", pd_string(env, "IPv4")) || !pd_set(env, out, "address", pd_string(env, text)) ||
        !pd_set(env, out, "port", pd_number(env, ntohs(in->sin_port)))) {
      return NULL;
    }
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6* in6 = (struct sockaddr_in6*)&ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    if (!pd_set(env, out, "family", pd_string(env, "IPv6")) || !pd_set(env, out, "address", pd_string(env, text)) ||
        !pd_set(env, out, "port", pd_number(env, ntohs(in6->sin6_port)))) {
      return NULL;
    }
  } else if (ss.ss_family == AF_UNIX) {
    struct sockaddr_un* un = (struct sockaddr_un*)&ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > sizeof(un->sun_path)) n = sizeof(un->sun_path);
    /* A pathname is NUL-terminated inside the length; an abstract name is
     * exactly the counted bytes after its leading NUL. */
    if (n > 0 && un->sun_path[0] != '\0') n = strnlen(un->sun_path, n);
    napi_value path;
    PD_CHECK(env, napi_create_string_utf8(env, un->sun_path, n, &path));
    if (!pd_set(env, out, "family", pd_string(env, "unix")) || !pd_set(env, out, "path", path)) return NULL;
  } else {
    if (!pd_set(env, out, "family", pd_string(env, "other"))) return NULL;
  }
  return out;
}

bool pd_init_sockets(napi_env env, napi_value exports) {
  return pd_export_function(env, exports, "socketInfo", socket_info);
}
