// File descriptor bookkeeping shared by fork plans and execve.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include <algorithm>
#include <cstdlib>

#include "common.h"

#if defined(__linux__) && !defined(SYS_close_range)
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace pd {

static int stdio_flags_at_load[3] = {-1, -1, -1};

void RecordStdioFlags() {
  static bool recorded = false;  // first load in the process wins (workers share fds)
  if (recorded) return;
  recorded = true;
  for (int fd = 0; fd < 3; fd++) stdio_flags_at_load[fd] = fcntl(fd, F_GETFL);
}

bool StdioWasNonblocking(int fd) {
  int fl = stdio_flags_at_load[fd];
  return fl != -1 && (fl & O_NONBLOCK) != 0;
}

bool FdIsOpen(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

static int NofileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    return static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 1 << 20));
  }
  return 1 << 16;
}

std::vector<int> OpenFds() {
  std::vector<int> fds;
#ifdef __linux__
  const char* dir = "/proc/self/fd";
#else
  const char* dir = "/dev/fd";
#endif
  if (DIR* d = opendir(dir)) {
    int self = dirfd(d);
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      int fd = atoi(e->d_name);
      if (fd != self) fds.push_back(fd);
    }
    closedir(d);
    std::sort(fds.begin(), fds.end());
    return fds;
  }
  int limit = NofileLimit();
  for (int fd = 0; fd < limit; fd++) {
    if (FdIsOpen(fd)) fds.push_back(fd);
  }
  return fds;
}

int ScanFdLimit() {
  std::vector<int> fds = OpenFds();
  int highest = fds.empty() ? 2 : fds.back();
  // Other threads may open a few more fds between this scan and fork().
  return std::min(highest + 1024, NofileLimit());
}

// Async-signal-safe from here on: no allocation, only fcntl/syscall.
static int SetCloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return errno == EBADF ? 0 : errno;
  int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) == -1) return errno;
  return 0;
}

static int CloexecRange(int first, int last, int fd_limit) {
  if (first > last) return 0;
#ifdef __linux__
  if (syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last),
              CLOSE_RANGE_CLOEXEC) == 0) {
    return 0;
  }
  // ENOSYS (kernel < 5.11) or EINVAL: fall through to the fcntl loop.
#endif
  int end = std::min(last, fd_limit);
  for (int fd = first; fd <= end; fd++) {
    int err = SetCloexec(fd, true);
    if (err != 0) return err;
  }
  return 0;
}

int CloexecAllExcept(const int* keep, size_t nkeep, int fd_limit) {
  int next = 3;
  for (size_t i = 0; i < nkeep; i++) {
    int k = keep[i];
    if (k < next) continue;  // duplicate or below 3
    int err = CloexecRange(next, k - 1, fd_limit);
    if (err != 0) return err;
    err = SetCloexec(k, false);
    if (err != 0) return err;
    next = k + 1;
  }
  return CloexecRange(next, INT32_MAX - 1, fd_limit);
}

}  // namespace pd
