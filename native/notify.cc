// sd_notify(3) without libsystemd: one datagram over an AF_UNIX SOCK_DGRAM
// socket to $NOTIFY_SOCKET, sent by the calling process itself (systemd
// takes the sender's PID from the kernel's SCM_CREDENTIALS and drops
// messages from processes it does not expect). Plus CLOCK_MONOTONIC in
// microseconds, which RELOADING=1 must carry as MONOTONIC_USEC=.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common.h"

namespace pd {
namespace {

// systemd's pid 1 reads its notify socket from its event loop; a full
// queue means it is badly overloaded, and a hostile NOTIFY_SOCKET (a
// listener that never reads) must not stall the event loop: a datagram that
// cannot be queued within this much time in all (EINTR included) is not
// sent (issue 16, item 8: a 1 s SO_SNDTIMEO, restarted by every EINTR, took
// 7 s with a signal every 200 ms).
constexpr int kSendBudgetMs = 2;

int64_t MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Sends `mh` on a connected socket without blocking; while the receiver's
// queue is full (EAGAIN), waits for room with poll(), which the kernel
// wakes (a connected unix datagram socket is writable once the peer's
// queue has room), within kSendBudgetMs overall. Returns 0 or errno.
int SendBounded(int fd, struct msghdr* mh, size_t size) {
#ifdef MSG_NOSIGNAL
  const int flags = MSG_NOSIGNAL | MSG_DONTWAIT;  // EPIPE, never SIGPIPE
#else
  const int flags = MSG_DONTWAIT;  // datagram sockets do not raise SIGPIPE there
#endif
  const int64_t deadline = MonotonicMs() + kSendBudgetMs;
  for (;;) {
    ssize_t n = sendmsg(fd, mh, flags);
    if (n >= 0) return static_cast<size_t>(n) == size ? 0 : EMSGSIZE;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errno;
    int64_t left = deadline - MonotonicMs();
    if (left <= 0) return EAGAIN;
    if (errno == EINTR) continue;
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(left)) == -1 && errno != EINTR) return errno;
  }
}

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

// One datagram to `address`, with `fds` attached (SCM_RIGHTS) when there
// are any: the socket is connected first, so that SendBounded can wait for
// room with poll(). Throws a Node-style error on any failure; the TS layer
// turns delivery failures into `false` plus a debuglog line.
void SendNotify(Napi::Env env, const std::string& address, const std::string& message, const std::vector<int>& fds) {
  struct sockaddr_un sa;
  socklen_t salen = 0;
  int err = NotifyAddress(address, &sa, &salen);
  if (err != 0) throw ErrnoError(env, err, "connect", address.c_str());
#ifdef SOCK_CLOEXEC
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
#else
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd != -1) fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
  if (fd == -1) throw ErrnoError(env, errno, "socket");
  int r;
  do {
    r = connect(fd, reinterpret_cast<struct sockaddr*>(&sa), salen);
  } while (r == -1 && errno == EINTR);
  const char* syscall = "connect";
  err = r == -1 ? errno : 0;
  if (err == 0) {
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
    syscall = fds.empty() ? "send" : "sendmsg";
    err = SendBounded(fd, &mh, message.size());
  }
  close(fd);
  if (err != 0) throw ErrnoError(env, err, syscall, address.c_str());
}

// sdNotify(address, message)
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string address = CString(info[0], "address");
  std::string message = CString(info[1], "message");
  if (message.empty()) throw ArgValueError(env, "message", "must not be empty");
  SendNotify(env, address, message, {});
  return env.Undefined();
}

// CLOCK_MONOTONIC in microseconds, as a BigInt (systemd compares it with its
// own CLOCK_MONOTONIC reading taken when it sent the reload signal).
Napi::Value MonotonicUsec(const Napi::CallbackInfo& info) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) throw ErrnoError(info.Env(), errno, "clock_gettime");
  uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  return Napi::BigInt::New(info.Env(), usec);
}


// sdNotifyFds(address, message, fds): the same datagram with the fds
// attached, for FDSTORE=1: systemd keeps them in the unit's file
// descriptor store and passes them back at the next start.
Napi::Value SdNotifyFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string address = CString(info[0], "address");
  std::string message = CString(info[1], "message");
  std::vector<int> fds = FdArray(info[2], "fds", 0);
  if (message.empty()) throw ArgValueError(env, "message", "must not be empty");
  // SCM_MAX_FD: the kernel refuses more in one message.
  if (fds.empty() || fds.size() > 253) throw ArgValueError(env, "fds", "must hold 1 to 253 fds");
  for (int f : fds) {
    if (fcntl(f, F_GETFD) == -1) throw ErrnoError(env, errno, "fcntl");
  }
  SendNotify(env, address, message, fds);
  return env.Undefined();
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
  exports.Set("monotonicUsec", Napi::Function::New(env, MonotonicUsec, "monotonicUsec"));
  exports.Set("sdNotifyFds", Napi::Function::New(env, SdNotifyFds, "sdNotifyFds"));
}

}  // namespace pd
