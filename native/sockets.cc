// What an inherited fd really is: socket or not, its type, whether it
// listens, and its local address. listenFds()/listen() trust none of the
// LISTEN_* variables' claims without asking the kernel.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common.h"

namespace pd {
namespace {

const char* TypeName(int type) {
  switch (type) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    case SOCK_RAW: return "raw";
    default: return "other";
  }
}

// socketInfo(fd): null when fd is open but not a socket; otherwise
// { type, listening, family, address?, port?, path? }. `path` of an abstract
// unix socket starts with "\0", as Node's server.address() shows it.
Napi::Value SocketInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Int(info[0], "fd", 0, 0x7fffffff);
  struct stat st;
  if (fstat(fd, &st) != 0) throw ErrnoError(env, errno, "fstat");
  if (!S_ISSOCK(st.st_mode)) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) throw ErrnoError(env, errno, "getsockopt");
  out.Set("type", TypeName(type));
  int listening = 0;
#ifdef SO_ACCEPTCONN
  len = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) listening = 0;
#endif
  out.Set("listening", Napi::Boolean::New(env, listening != 0));
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) throw ErrnoError(env, errno, "getsockname");
  char text[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    out.Set("family", "IPv4");
    out.Set("address", text);
    out.Set("port", ntohs(in->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    out.Set("family", "IPv6");
    out.Set("address", text);
    out.Set("port", ntohs(in6->sin6_port));
  } else if (ss.ss_family == AF_UNIX) {
    auto* un = reinterpret_cast<struct sockaddr_un*>(&ss);
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    n = std::min(n, sizeof(un->sun_path));
    // A pathname is NUL-terminated inside the length; an abstract name is
    // exactly the counted bytes after its leading NUL.
    if (n > 0 && un->sun_path[0] != '\0') n = strnlen(un->sun_path, n);
    out.Set("family", "unix");
    out.Set("path", Napi::String::New(env, un->sun_path, n));
  } else {
    out.Set("family", "other");
  }
  return out;
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("socketInfo", Napi::Function::New(env, SocketInfo, "socketInfo"));
}

}  // namespace pd
