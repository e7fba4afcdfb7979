/* File descriptor bookkeeping shared by fork plans and execve. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "pd.h"

#if defined(__linux__) && !defined(SYS_pidfd_open)
#define SYS_pidfd_open 434
#endif
#if defined(__linux__) && !defined(SYS_close_range)
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int stdio_flags_at_load[3] = {-1, -1, -1};

void pd_record_stdio_flags(void) {
  static bool recorded = false; /* first load in the process wins (workers share fds) */
  if (recorded) return;
  recorded = true;
  for (int fd = 0; fd < 3; fd++) stdio_flags_at_load[fd] = fcntl(fd, F_GETFL);
}

bool pd_stdio_was_nonblocking(int fd) {
  int fl = stdio_flags_at_load[fd];
  return fl != -1 && (fl & O_NONBLOCK) != 0;
}

int pd_pidfd_open(pid_t pid) {
#ifdef __linux__
  return (int)syscall(SYS_pidfd_open, pid, 0);
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

int pd_pipe_cloexec(int fds[2]) {
#ifdef __linux__
  return pipe2(fds, O_CLOEXEC);
#else
  if (pipe(fds) == -1) return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return 0;
#endif
}

int pd_set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl == -1) return -1;
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl && fcntl(fd, F_SETFL, want) == -1) return -1;
  return fl;
}

int pd_write_all(int fd, const void* data, size_t size) {
  const char* p = (const char*)data;
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    size -= (size_t)n;
  }
  return 0;
}

bool pd_fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

static rlim_t min_rlim(rlim_t a, rlim_t b) { return a < b ? a : b; }

/* An upper bound for probing fds one by one when no directory lists them.
 * Not the soft RLIMIT_NOFILE alone: it may have been lowered after fds above
 * it were opened (a wrapper, `prlimit`, a supervisor), and such fds stay
 * open. An fd can't be opened at or above the hard limit in force at the
 * time, and the hard limit can only go down without privilege, so it is the
 * best bound there is without /proc (an fd above a hard limit that was
 * lowered later can't be found that way; nothing but a listing finds it). */
static int probe_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1 << 16;
  rlim_t limit = rl.rlim_max == RLIM_INFINITY ? rl.rlim_cur : rl.rlim_max;
  if (limit == RLIM_INFINITY) limit = 1 << 20;
  return (int)min_rlim(limit, 1 << 20); /* Linux's default fs.nr_open */
}

static int soft_nofile_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    return (int)min_rlim(rl.rlim_cur, 1 << 20);
  }
  return 1 << 20;
}

static bool intv_push(pd_intv* v, size_t* cap, int x) {
  if (v->n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;
    int* nv = (int*)realloc(v->v, ncap * sizeof(int));
    if (nv == NULL) return false;
    v->v = nv;
    *cap = ncap;
  }
  v->v[v->n++] = x;
  return true;
}

static int cmp_int(const void* a, const void* b) {
  int x = *(const int*)a, y = *(const int*)b;
  return (x > y) - (x < y);
}

/* Lists the open fds from /proc/self/fd (Linux) or /dev/fd (macOS), which
 * show every open fd, whatever the rlimit says. 1 listed, 0 no such
 * directory, -1 out of memory (the directory is closed on every path:
 * issue 16, item 7). */
static int list_open_fds(pd_intv* fds, size_t* cap) {
#ifdef __linux__
  const char* dir = "/proc/self/fd";
#else
  const char* dir = "/dev/fd";
#endif
  DIR* d = opendir(dir);
  if (d == NULL) return 0;
  int self = dirfd(d);
  struct dirent* e;
  int result = 1;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int fd = atoi(e->d_name);
    if (fd != self && !intv_push(fds, cap, fd)) {
      result = -1;
      break;
    }
  }
  closedir(d);
  if (result == 1 && fds->n > 1) qsort(fds->v, fds->n, sizeof(int), cmp_int);
  return result;
}

bool pd_open_fds(pd_intv* out) {
  out->v = NULL;
  out->n = 0;
  size_t cap = 0;
  int listed = list_open_fds(out, &cap);
  if (listed == 1) return true;
  if (listed == -1) {
    pd_intv_free(out);
    errno = ENOMEM;
    return false;
  }
  int limit = probe_limit();
  for (int fd = 0; fd < limit; fd++) {
    if (pd_fd_is_open(fd) && !intv_push(out, &cap, fd)) {
      pd_intv_free(out);
      errno = ENOMEM;
      return false;
    }
  }
  return true;
}

#ifdef __linux__
static bool close_range_cloexec(int first, int last) {
  if (first > last) return true;
  return syscall(SYS_close_range, (unsigned)first, (unsigned)last, CLOSE_RANGE_CLOEXEC) == 0;
}
#endif

int pd_scan_fd_limit(void) {
#ifdef __linux__
  /* With close_range the child never loops up to a bound (the bound is
   * only for a kernel without it and without /proc), so the parent need
   * not list its fds on every fork: a cheap probe, once per process, on a
   * range no fd can be in (fds stop at fs.nr_open, at most 2^30). A race
   * between two first calls only probes twice. */
  static int close_range_works = -1;
  if (close_range_works == -1) close_range_works = close_range_cloexec(INT32_MAX - 1, INT32_MAX - 1) ? 1 : 0;
  if (close_range_works == 1) return soft_nofile_limit();
#endif
  pd_intv fds = {NULL, 0};
  size_t cap = 0;
  if (list_open_fds(&fds, &cap) != 1) {
    pd_intv_free(&fds);
    return probe_limit();
  }
  /* Every fd open now is listed, including those above a lowered soft
   * limit. An fd another thread opens between this scan and fork() is below
   * the soft limit in force when it opens. Headroom covers the rest (a
   * limit raised in between); the child's own listing is exact anyway. */
  int highest = fds.n == 0 ? 2 : fds.v[fds.n - 1];
  pd_intv_free(&fds);
  if (highest > (1 << 30)) highest = 1 << 30;
  int bound = highest + 1024, soft = soft_nofile_limit();
  return bound > soft ? bound : soft;
}

/* Async-signal-safe from here on: no allocation, only fcntl/syscall. */
static int set_cloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return errno == EBADF ? 0 : errno;
  int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) == -1) return errno;
  return 0;
}

static int clear_cloexec(const int* keep, size_t nkeep) {
  for (size_t i = 0; i < nkeep; i++) {
    if (keep[i] < 3) continue;
    int err = set_cloexec(keep[i], false);
    if (err != 0) return err;
  }
  return 0;
}

/* Binary search in a sorted array; async-signal-safe (bsearch is not
 * guaranteed to be). */
static bool kept(const int* keep, size_t nkeep, int fd) {
  size_t lo = 0, hi = nkeep;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (keep[mid] < fd) lo = mid + 1;
    else hi = mid;
  }
  return lo < nkeep && keep[lo] == fd;
}

#ifdef __linux__
/* What close_range(CLOSE_RANGE_CLOEXEC) does, for kernels before 5.11:
 * every fd >= 3 close-on-exec, except `keep`. Lists /proc/self/fd with
 * open() and the getdents64 syscall into a stack buffer, which is
 * async-signal-safe (opendir/readdir allocate). The directory must be opened
 * here, in the child: /proc/self resolves when it is opened, and a directory
 * opened in the parent would list the parent's fds. This catches every open
 * fd, however high: a loop up to a bound would miss fds above a lowered
 * RLIMIT_NOFILE. Returns -1 if /proc is not there (or no fd is free to
 * open it), else 0 or an errno. */
struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

static int cloexec_listed(const int* keep, size_t nkeep) {
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir == -1) return -1;
  _Alignas(8) char buf[4096];
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
      const struct linux_dirent64* e = (const struct linux_dirent64*)(buf + off);
      off += e->d_reclen;
      const char* name = e->d_name;
      if (name[0] < '0' || name[0] > '9') continue;
      int fd = 0;
      for (; *name >= '0' && *name <= '9'; name++) fd = fd * 10 + (*name - '0');
      if (fd < 3 || fd == dir) continue;
      int err = set_cloexec(fd, !kept(keep, nkeep, fd));
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

/* Without close_range and without /proc: probe every fd up to fd_limit
 * (pd_scan_fd_limit, measured in the parent before fork). */
static int cloexec_probed(const int* keep, size_t nkeep, int fd_limit) {
  for (int fd = 3; fd <= fd_limit; fd++) {
    if (kept(keep, nkeep, fd)) continue;
    int err = set_cloexec(fd, true);
    if (err != 0) return err;
  }
  return clear_cloexec(keep, nkeep);
}

int pd_cloexec_all_except(const int* keep, size_t nkeep, int fd_limit) {
#ifdef __linux__
  /* Fast path (Linux >= 5.11): one close_range per gap between kept fds. */
  bool ranged = true;
  int next = 3;
  for (size_t i = 0; i < nkeep && ranged; i++) {
    int k = keep[i];
    if (k < next) continue; /* duplicate or below 3 */
    ranged = close_range_cloexec(next, k - 1);
    next = k + 1;
  }
  ranged = ranged && close_range_cloexec(next, INT32_MAX - 1);
  if (ranged) return clear_cloexec(keep, nkeep);
  /* ENOSYS (kernel < 5.11, or a seccomp filter) or EINVAL: list the fds. */
  int listed = cloexec_listed(keep, nkeep);
  if (listed != -1) return listed;
#endif
  return cloexec_probed(keep, nkeep, fd_limit);
}
