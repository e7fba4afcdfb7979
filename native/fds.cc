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
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "common.h"

#if defined(__linux__) && !defined(SYS_pidfd_open)
#define SYS_pidfd_open 434
#endif
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

int PidfdOpen(pid_t pid) {
#ifdef __linux__
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

int PipeCloexec(int fds[2]) {
#ifdef __linux__
  return pipe2(fds, O_CLOEXEC);
#else
  if (pipe(fds) == -1) return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return 0;
#endif
}

int SetNonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl == -1) return -1;
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl && fcntl(fd, F_SETFL, want) == -1) return -1;
  return fl;
}

int WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

bool FdIsOpen(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

// An upper bound for probing fds one by one when no directory lists them.
// Not the soft RLIMIT_NOFILE alone: it may have been lowered after fds above
// it were opened (a wrapper, `prlimit`, a supervisor), and such fds stay
// open. An fd can't be opened at or above the hard limit in force at the
// time, and the hard limit can only go down without privilege, so it is the
// best bound there is without /proc (an fd above a hard limit that was
// lowered later can't be found that way; nothing but a listing finds it).
static int ProbeLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1 << 16;
  rlim_t limit = rl.rlim_max == RLIM_INFINITY ? rl.rlim_cur : rl.rlim_max;
  if (limit == RLIM_INFINITY) limit = 1 << 20;
  return static_cast<int>(std::min<rlim_t>(limit, 1 << 20));  // Linux's default fs.nr_open
}

static int SoftNofileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    return static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 1 << 20));
  }
  return 1 << 20;
}

// Lists the open fds from /proc/self/fd (Linux) or /dev/fd (macOS), which
// show every open fd, whatever the rlimit says. False if there is no such
// directory.
static bool ListOpenFds(std::vector<int>* fds) {
#ifdef __linux__
  const char* dir = "/proc/self/fd";
#else
  const char* dir = "/dev/fd";
#endif
  // Closed on every path: push_back may throw bad_alloc (issue 16, item 7).
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir), closedir);
  if (d == nullptr) return false;
  int self = dirfd(d.get());
  while (struct dirent* e = readdir(d.get())) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int fd = atoi(e->d_name);
    if (fd != self) fds->push_back(fd);
  }
  d.reset();
  std::sort(fds->begin(), fds->end());
  return true;
}

std::vector<int> OpenFds() {
  std::vector<int> fds;
  if (ListOpenFds(&fds)) return fds;
  int limit = ProbeLimit();
  for (int fd = 0; fd < limit; fd++) {
    if (FdIsOpen(fd)) fds.push_back(fd);
  }
  return fds;
}

#ifdef __linux__
static bool CloseRangeCloexec(int first, int last);
#endif

int ScanFdLimit() {
#ifdef __linux__
  // With close_range the child never loops up to a bound (the bound is
  // only for a kernel without it and without /proc), so the parent need
  // not list its fds on every fork: a cheap probe, once per process, on a
  // range no fd can be in (fds stop at fs.nr_open, at most 2^30).
  static const bool close_range_works = CloseRangeCloexec(INT32_MAX - 1, INT32_MAX - 1);
  if (close_range_works) return SoftNofileLimit();
#endif
  std::vector<int> fds;
  if (!ListOpenFds(&fds)) return ProbeLimit();
  // Every fd open now is listed, including those above a lowered soft
  // limit. An fd another thread opens between this scan and fork() is below
  // the soft limit in force when it opens. Headroom covers the rest (a
  // limit raised in between); the child's own listing is exact anyway.
  int highest = fds.empty() ? 2 : fds.back();
  return std::max(std::min(highest, (1 << 30)) + 1024, SoftNofileLimit());
}

// Async-signal-safe from here on: no allocation, only fcntl/syscall.
static int SetCloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return errno == EBADF ? 0 : errno;
  int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) == -1) return errno;
  return 0;
}

static int ClearCloexec(const int* keep, size_t nkeep) {
  for (size_t i = 0; i < nkeep; i++) {
    if (keep[i] < 3) continue;
    int err = SetCloexec(keep[i], false);
    if (err != 0) return err;
  }
  return 0;
}

#ifdef __linux__
// What close_range(CLOSE_RANGE_CLOEXEC) does, for kernels before 5.11:
// every fd >= 3 close-on-exec, except `keep`. Lists /proc/self/fd with
// open() and the getdents64 syscall into a stack buffer, which is
// async-signal-safe (opendir/readdir allocate). The directory must be opened
// here, in the child: /proc/self resolves when it is opened, and a directory
// opened in the parent would list the parent's fds. This catches every open
// fd, however high: a loop up to a bound would miss fds above a lowered
// RLIMIT_NOFILE. Returns -1 if /proc is not there (or no fd is free to
// open it), else 0 or an errno.
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

static int CloexecListed(const int* keep, size_t nkeep) {
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir == -1) return -1;
  alignas(8) char buf[4096];
  int result = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (n == -1 && errno == EINTR) continue;
    if (n == -1) {
      result = errno;
      break;
    }
    if (n == 0) break;
    for (long off = 0; off < n;) {
      const LinuxDirent64* e = reinterpret_cast<const LinuxDirent64*>(buf + off);
      off += e->d_reclen;
      const char* name = e->d_name;
      if (name[0] < '0' || name[0] > '9') continue;
      int fd = 0;
      for (; *name >= '0' && *name <= '9'; name++) fd = fd * 10 + (*name - '0');
      if (fd < 3 || fd == dir) continue;
      int err = SetCloexec(fd, !std::binary_search(keep, keep + nkeep, fd));
      if (err != 0) {
        result = err;
        break;
      }
    }
    if (result != 0) break;
  }
  close(dir);
  return result;
}
#endif

// Without close_range and without /proc: probe every fd up to fd_limit
// (ScanFdLimit, measured in the parent before fork).
static int CloexecProbed(const int* keep, size_t nkeep, int fd_limit) {
  for (int fd = 3; fd <= fd_limit; fd++) {
    if (std::binary_search(keep, keep + nkeep, fd)) continue;
    int err = SetCloexec(fd, true);
    if (err != 0) return err;
  }
  return ClearCloexec(keep, nkeep);
}

#ifdef __linux__
static bool CloseRangeCloexec(int first, int last) {
  if (first > last) return true;
  return syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last),
                 CLOSE_RANGE_CLOEXEC) == 0;
}
#endif

int CloexecAllExcept(const int* keep, size_t nkeep, int fd_limit) {
#ifdef __linux__
  // Fast path (Linux >= 5.11): one close_range per gap between kept fds.
  bool ranged = true;
  int next = 3;
  for (size_t i = 0; i < nkeep && ranged; i++) {
    int k = keep[i];
    if (k < next) continue;  // duplicate or below 3
    ranged = CloseRangeCloexec(next, k - 1);
    next = k + 1;
  }
  ranged = ranged && CloseRangeCloexec(next, INT32_MAX - 1);
  if (ranged) return ClearCloexec(keep, nkeep);
  // ENOSYS (kernel < 5.11, or a seccomp filter) or EINVAL: list the fds.
  int listed = CloexecListed(keep, nkeep);
  if (listed != -1) return listed;
#endif
  return CloexecProbed(keep, nkeep, fd_limit);
}

}  // namespace pd
