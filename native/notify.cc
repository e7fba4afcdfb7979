// sd_notify(3) without libsystemd: one datagram over an AF_UNIX SOCK_DGRAM
// socket to $NOTIFY_SOCKET, sent by the calling process itself (systemd
// takes the sender's PID from the kernel's SCM_CREDENTIALS and drops
// messages from processes it does not expect). Plus CLOCK_MONOTONIC in
// microseconds, which RELOADING=1 must carry as MONOTONIC_USEC=.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace pd {
namespace {

// Builds the address: "/path" or "@abstract" (the leading '@' stands for the
// NUL byte of the abstract namespace, as in systemd). Returns 0 or errno.
int NotifyAddress(const std::string& address, struct sockaddr_un* sa, socklen_t* len) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (address.size() < 2 || (address[0] != '/' && address[0] != '@')) return EAFNOSUPPORT;
  if (address.size() > sizeof(sa->sun_path) - (address[0] == '/' ? 1 : 0)) return ENAMETOOLONG;
  memcpy(sa->sun_path, address.data(), address.size());
  if (address[0] == '@') {
    sa->sun_path[0] = '\0';
    // Abstract names are counted, not NUL-terminated.
    *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + address.size());
  } else {
    *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + address.size() + 1);
  }
  return 0;
}

// A connected, non-blocking AF_UNIX datagram socket to the manager.
//
// send() never waits: when the manager's queue is full it says so (false),
// and the caller keeps the message. watch() then has libuv tell it when
// the socket is writable again: a connected unix datagram socket polls
// writable once the peer's queue has room, so the kernel wakes us; no timer,
// no blocking (issue 22, item 14: a 2 ms budget lost READY=1 to a manager
// 20 ms late). The socket belongs to this object, and to the poll handle
// once watched (closed with it).
class NotifySocket : public Napi::ObjectWrap<NotifySocket>, PolledFd<NotifySocket> {
  friend class PolledFd<NotifySocket>;
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NotifySocket",
                       {InstanceMethod<&NotifySocket::Send>("send"),
                        InstanceMethod<&NotifySocket::Watch>("watch"),
                        InstanceMethod<&NotifySocket::Close>("close")});
  }

  // new NotifySocket(address): "/path" or "@abstract". Throws a Node-style
  // error (connect, socket) when the manager cannot be reached.
  NotifySocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NotifySocket>(info) {
    Napi::Env env = info.Env();
    std::string address = CString(info[0], "address");
    struct sockaddr_un sa;
    socklen_t salen = 0;
    int err = NotifyAddress(address, &sa, &salen);
    if (err != 0) throw ErrnoError(env, err, "connect", address.c_str());
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd != -1) {
      fcntl(fd, F_SETFD, FD_CLOEXEC);
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
#endif
    if (fd == -1) throw ErrnoError(env, errno, "socket");
    int r;
    do {
      r = connect(fd, reinterpret_cast<struct sockaddr*>(&sa), salen);
    } while (r == -1 && errno == EINTR);
    if (r == -1) {
      err = errno;
      close(fd);
      throw ErrnoError(env, err, "connect", address.c_str());
    }
    fd_ = fd;
    address_ = address;
  }

  ~NotifySocket() override { ShutdownFd(); }

 private:
  // send(message, fds?): true once queued with the manager, false while its
  // queue is full (EAGAIN: nothing was sent, try again when writable).
  // Other failures throw (send/sendmsg, with the address as path).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string message = CString(info[0], "message");
    if (message.empty()) throw ArgValueError(env, "message", "must not be empty");
    std::vector<int> fds;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      fds = FdArray(info[1], "fds", 0);
      // SCM_MAX_FD: the kernel refuses more in one message.
      if (fds.empty() || fds.size() > 253) throw ArgValueError(env, "fds", "must hold 1 to 253 fds");
      for (int f : fds) {
        if (fcntl(f, F_GETFD) == -1) throw ErrnoError(env, errno, "fcntl");
      }
    }
    const char* syscall = fds.empty() ? "send" : "sendmsg";
    if (fd_ == -1) throw ErrnoError(env, EBADF, syscall, address_.c_str());
    struct iovec iov;
    iov.iov_base = const_cast<char*>(message.data());
    iov.iov_len = message.size();
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
      control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
      mh.msg_control = control.data();
      mh.msg_controllen = control.size();
      struct cmsghdr* cm = CMSG_FIRSTHDR(&mh);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
    }
#ifdef MSG_NOSIGNAL
    const int flags = MSG_NOSIGNAL | MSG_DONTWAIT;  // EPIPE, never SIGPIPE
#else
    const int flags = MSG_DONTWAIT;  // datagram sockets do not raise SIGPIPE there
#endif
    ssize_t n;
    do {
      n = sendmsg(fd_, &mh, flags);
    } while (n == -1 && errno == EINTR);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Napi::Boolean::New(env, false);
    if (n == -1) throw ErrnoError(env, errno, syscall, address_.c_str());
    if (static_cast<size_t>(n) != message.size()) throw ErrnoError(env, EMSGSIZE, syscall, address_.c_str());
    return Napi::Boolean::New(env, true);
  }

  // watch(callback): calls back, on the loop thread, whenever the socket is
  // writable, until close(). Keeps the event loop alive meanwhile: a queued
  // READY=1 or STOPPING=1 is sent before a process that ends by itself is
  // gone.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw ArgTypeError(env, "callback", "of type function");
    if (fd_ == -1) throw ErrnoError(env, EBADF, "uv_poll_start");
    if (poll_ != nullptr) throw ArgValueError(env, "callback", "is already set");
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "posix-daemon:NotifySocket");
    int fd = fd_;
    fd_ = -1;  // the poll owns it from here on, closed on failure too
    poll_ = LoopHandle::PollWritable(env, fd, OnEvent, this);
    fd_ = fd;
    poll_->OnTeardown(OnPollTeardown);
    Ref();  // alive until close(): only the poll refers to it then
    pinned_ = true;
    return env.Undefined();
  }

  static void OnEvent(void* owner) {
    auto* self = static_cast<NotifySocket*>(owner);
    Napi::Env env = self->Env();
    CallFromLoop(env, [&] { self->callback_.Value().MakeCallback(env.Global(), {}, *self->context_); });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    ShutdownFd();
    Unpin();
    return info.Env().Undefined();
  }

  std::string address_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

// CLOCK_MONOTONIC in microseconds, as a BigInt (systemd compares it with its
// own CLOCK_MONOTONIC reading taken when it sent the reload signal).
Napi::Value MonotonicUsec(const Napi::CallbackInfo& info) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) throw ErrnoError(info.Env(), errno, "clock_gettime");
  uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  return Napi::BigInt::New(info.Env(), usec);
}


}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("NotifySocket", NotifySocket::Define(env));
  exports.Set("monotonicUsec", Napi::Function::New(env, MonotonicUsec, "monotonicUsec"));
}

}  // namespace pd
