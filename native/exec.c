/* execve(): replace the process image in place (same PID), leaving the
 * process as the kernel and the next program expect it, and restoring
 * everything if the exec fails so the current image can go on working.
 *
 * The process is multi-threaded (libuv's pool, V8's platform threads, maybe
 * workers), and dispositions, fd flags and file status flags are shared by
 * all its threads. What this code changes process-wide, and for how long
 * another thread can observe it:
 *
 * - Ignored signals. The new image must not inherit SIG_IGN (Node ignores
 *   SIGPIPE and SIGXFSZ), but setting SIG_DFL would make a worker that
 *   writes to a closed socket die of SIGPIPE if the exec then fails. They
 *   get a handler that does nothing instead (SA_RESTART, so for a running
 *   thread it is "ignored"), and execve(2) itself resets every handled signal
 *   to SIG_DFL (and its flags to 0). No window: at every instant the
 *   disposition is SIG_IGN or the no-op handler.
 *   SIGCHLD is the one whose SIG_IGN means more than "not delivered": the
 *   kernel reaps the children itself (no zombies). Its no-op handler gets
 *   SA_NOCLDWAIT, which keeps exactly that: a child ending during the
 *   attempt is still reaped by the kernel (issue 16, item 9: without it a
 *   failed exec left zombies nobody would ever wait for). The new image
 *   gets SIGCHLD at SIG_DFL, flags cleared, like every other signal: a
 *   program started with SIGCHLD ignored has its wait() fail with ECHILD
 *   (shells, Python's subprocess), which is why nothing is inherited
 *   ignored. SIG_IGN itself is not kept for the new image's sake.
 * - FD_CLOEXEC set on every fd we do not keep: only narrows what a fork()
 *   in another thread could leak, so harmless. Undone on failure only for an
 *   fd that is still the same file (another thread may have closed it and
 *   opened something else under the number).
 * - FD_CLOEXEC cleared on the kept fds (and on 0-2 if set). A thread that
 *   forks and execs between that moment and our execve(2) leaks them into
 *   its child. It cannot be closed (the kernel has no "exec with these fds");
 *   it is narrowed to the last few syscalls before execve(2), and on failure
 *   the flag is set again first.
 * - O_NONBLOCK cleared on stdio (shared with every process using the same
 *   open file description): a few syscalls, as before.
 * - The calling thread blocks every signal while it prepares, so none of
 *   Node's handlers runs on it half-way; the mask is emptied just before
 *   execve(2), as the new image must start with it empty. A signal arriving
 *   in between is handled by the old image and lost with it: the same as
 *   one arriving a moment earlier. The one exception is `blocked`: signals
 *   the caller asks to leave blocked (restartViaExec's restart signals),
 *   for a new image that knows to handle and unblock them first thing
 *   (hold.c). One sent during the exec or the next image's start-up stays
 *   pending instead of meeting SIG_DFL. If execve fails the mask is restored.
 * No fd is ever dup2()'d over: an fd libuv or V8 owns is never replaced,
 * even for an instant (on Node 20 fd 4 is libuv's signal pipe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pd.h"

typedef struct {
  int fd;
  int old_flags;
  dev_t dev; /* identity when changed: the fd may be closed and its */
  ino_t ino; /* number reused by another thread before a restore */
} fd_flag_change;

/* A record of changes, its room reserved before the first change. */
typedef struct {
  fd_flag_change* v;
  size_t n;
} change_log;

typedef struct {
  int fd;
  int flags;
} fd_and_flags;

typedef struct {
  int sig;
  struct sigaction old;
} ignored_signal;

typedef struct {
  sigset_t mask;
  ignored_signal ignored[NSIG]; /* signals we un-ignored */
  size_t nignored;
  change_log fd_flags;          /* FD_CLOEXEC set on others */
  change_log kept_flags;        /* FD_CLOEXEC cleared on kept */
  fd_flag_change status[3];     /* O_NONBLOCK changes on 0-2 */
  size_t nstatus;
} saved_state;

/* Stands in for SIG_IGN until the exec: doing nothing is ignoring, and a
 * handled signal is reset to SIG_DFL by execve(2) itself. */
static void ignore_until_exec(int sig) { (void)sig; }

static bool same_file(const fd_flag_change* c) {
  struct stat st;
  return fstat(c->fd, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino;
}

static bool set_fd_flags(int fd, int flags, int want, change_log* log) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  if (fcntl(fd, F_SETFD, want) != 0) return false;
  fd_flag_change* c = &log->v[log->n++];
  c->fd = fd;
  c->old_flags = flags;
  c->dev = st.st_dev;
  c->ino = st.st_ino;
  return true;
}

static void restore(saved_state* s) {
  /* Kept fds first: that is the window a concurrent fork could leak through. */
  for (size_t i = 0; i < s->kept_flags.n; i++) {
    const fd_flag_change* c = &s->kept_flags.v[i];
    if (same_file(c)) fcntl(c->fd, F_SETFD, c->old_flags);
  }
  for (size_t i = 0; i < s->nignored; i++) sigaction(s->ignored[i].sig, &s->ignored[i].old, NULL);
  /* Only the O_NONBLOCK bit went, and only onto the same file: another
   * thread may have put something else on 0-2 meanwhile (a log reopened
   * with dup2), whose other status flags (O_APPEND) are not ours to set. */
  for (size_t i = 0; i < s->nstatus; i++) {
    const fd_flag_change* c = &s->status[i];
    if (same_file(c)) pd_set_nonblocking(c->fd, (c->old_flags & O_NONBLOCK) != 0);
  }
  for (size_t i = 0; i < s->fd_flags.n; i++) {
    const fd_flag_change* c = &s->fd_flags.v[i];
    if (same_file(c)) fcntl(c->fd, F_SETFD, c->old_flags);
  }
  pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
}

/* What one attempt needs, all allocated before the first change: from the
 * moment signals are blocked until they are restored nothing allocates, so
 * nothing can fail half-way and leave the mask blocked or flags changed
 * (issue 16, item 7). */
typedef struct {
  char* file;
  pd_strv argv;
  pd_strv envp;
  pd_intv keep;        /* sorted */
  pd_intv fds;         /* open now */
  fd_and_flags* to_inherit; /* fd, current flags */
  size_t ninherit;
  sigset_t blocked;    /* the mask the new image starts with */
  saved_state saved;
} attempt;

static void attempt_free(attempt* a) {
  free(a->file);
  pd_strv_free(&a->argv);
  pd_strv_free(&a->envp);
  pd_intv_free(&a->keep);
  pd_intv_free(&a->fds);
  free(a->to_inherit);
  free(a->saved.fd_flags.v);
  free(a->saved.kept_flags.v);
}

static int compare_ints(const void* x, const void* y) {
  int a = *(const int*)x, b = *(const int*)y;
  return a < b ? -1 : a > b;
}

static bool contains(const pd_intv* sorted, int fd) {
  return sorted->n > 0 && bsearch(&fd, sorted->v, sorted->n, sizeof(int), compare_ints) != NULL;
}

/* An empty argument vector: just its NULL terminator. */
static bool empty_strv(pd_strv* out) {
  out->n = 0;
  out->v = calloc(1, sizeof(char*));
  return out->v != NULL;
}

static bool prepare(napi_env env, napi_value* args, attempt* a) {
  size_t room;
  if (!pd_arg_string(env, args[0], "file", &a->file)) return false;
  if (pd_is_undefined(env, args[1])) {
    if (!empty_strv(&a->argv)) goto oom;
  } else if (!pd_arg_string_array(env, args[1], "args", &a->argv)) {
    return false;
  }
  if (pd_is_undefined(env, args[2])) {
    if (!pd_current_environ(&a->envp)) goto oom;
  } else if (!pd_arg_string_array(env, args[2], "env", &a->envp)) {
    return false;
  }
  if (!pd_is_undefined(env, args[3]) && !pd_arg_fd_array(env, args[3], "keepFds", 3, &a->keep)) return false;
  for (size_t i = 0; i < a->keep.n; i++) {
    if (!pd_fd_is_open(a->keep.v[i])) {
      pd_throw_errno(env, EBADF, "fcntl", NULL);
      return false;
    }
  }
  /* Moving fds into place (the LISTEN_FDS layout) would dup2 over whatever
   * libuv holds there in this multi-threaded process; never offered. */
  if (!pd_is_undefined(env, args[4])) {
    pd_throw_arg_value(env, "moveFds", "is not supported: keep the fds where they are (keepFds)");
    return false;
  }
  sigemptyset(&a->blocked);
  if (!pd_is_undefined(env, args[5])) {
    pd_intv sigs = {NULL, 0};
    if (!pd_arg_fd_array(env, args[5], "blockSignals", 1, &sigs)) return false;
    for (size_t i = 0; i < sigs.n; i++) {
      int sig = sigs.v[i];
      if (sig >= NSIG || sig == SIGKILL || sig == SIGSTOP) {
        pd_intv_free(&sigs);
        pd_throw_arg_value(env, "blockSignals", "must list catchable signal numbers");
        return false;
      }
      sigaddset(&a->blocked, sig);
    }
    pd_intv_free(&sigs);
  }
  if (a->keep.n > 1) qsort(a->keep.v, a->keep.n, sizeof(int), compare_ints);
  if (!pd_open_fds(&a->fds)) goto oom;
  /* Room for every record the attempt may make: nothing allocates later.
   * One more than needed, so that no count is ever a malloc(0). */
  room = a->fds.n + 1;
  a->to_inherit = malloc(room * sizeof(fd_and_flags));
  a->saved.fd_flags.v = malloc(room * sizeof(fd_flag_change));
  a->saved.kept_flags.v = malloc(room * sizeof(fd_flag_change));
  if (a->to_inherit == NULL || a->saved.fd_flags.v == NULL || a->saved.kept_flags.v == NULL) goto oom;
  return true;
oom:
  pd_throw_errno(env, ENOMEM, "execve", NULL);
  return false;
}

/* execve(file, args?, env?, keepFds?, moveFds?, blockSignals?) */
static napi_value execve_binding(napi_env env, napi_callback_info info) {
  napi_value args[6];
  if (!pd_args(env, info, 6, args, NULL)) return NULL;
  attempt a;
  memset(&a, 0, sizeof(a));
  if (!prepare(env, args, &a)) {
    attempt_free(&a);
    return NULL;
  }
  saved_state* saved = &a.saved;

  sigset_t all;
  sigfillset(&all);
  /* No handler runs on this thread while the state is half changed. */
  pthread_sigmask(SIG_SETMASK, &all, &saved->mask);

  /* Every fd but stdio and the kept ones is closed by the exec. Kept ones
   * (and stdio) are only noted here; their flag is cleared at the end. */
  for (size_t i = 0; i < a.fds.n; i++) {
    int fd = a.fds.v[i];
    int flags = fcntl(fd, F_GETFD);
    if (flags == -1) continue;
    bool inherit = fd < 3 || contains(&a.keep, fd);
    if (inherit) {
      if (flags & FD_CLOEXEC) {
        a.to_inherit[a.ninherit].fd = fd;
        a.to_inherit[a.ninherit].flags = flags;
        a.ninherit++;
      }
    } else if (!(flags & FD_CLOEXEC)) {
      set_fd_flags(fd, flags, flags | FD_CLOEXEC, &saved->fd_flags);
    }
  }
  /* Stdio back to the blocking mode it had when the process started. */
  for (int fd = 0; fd < 3; fd++) {
    struct stat st;
    if (fstat(fd, &st) != 0) continue;
    bool want = pd_stdio_was_nonblocking(fd);
    int fl = pd_set_nonblocking(fd, want);
    if (fl != -1 && (fl & O_NONBLOCK) != (want ? O_NONBLOCK : 0)) {
      fd_flag_change* c = &saved->status[saved->nstatus++];
      c->fd = fd;
      c->old_flags = fl;
      c->dev = st.st_dev;
      c->ino = st.st_ino;
    }
  }
  /* Ignored signals: a no-op handler now, SIG_DFL in the new image. */
  struct sigaction noop;
  memset(&noop, 0, sizeof(noop));
  noop.sa_handler = ignore_until_exec;
  sigemptyset(&noop.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    struct sigaction old;
    if (sigaction(s, NULL, &old) != 0) continue;
    if (old.sa_handler != SIG_IGN) continue;
    /* SIGCHLD ignored: the kernel reaps; SA_NOCLDWAIT keeps it so. */
    noop.sa_flags = s == SIGCHLD ? (SA_RESTART | SA_NOCLDWAIT) : SA_RESTART;
    if (sigaction(s, &noop, NULL) == 0) {
      saved->ignored[saved->nignored].sig = s;
      saved->ignored[saved->nignored].old = old;
      saved->nignored++;
    }
  }
  /* Last: the kept fds become inheritable, the only change another thread's
   * fork() could notice (it would leak them). */
  for (size_t i = 0; i < a.ninherit; i++) {
    set_fd_flags(a.to_inherit[i].fd, a.to_inherit[i].flags, a.to_inherit[i].flags & ~FD_CLOEXEC,
                 &saved->kept_flags);
  }

  /* The new image starts with an empty signal mask, but for `blocked`. */
  pthread_sigmask(SIG_SETMASK, &a.blocked, NULL);
  execve(a.file, a.argv.v, a.envp.v);
  int err = errno;

  pthread_sigmask(SIG_SETMASK, &all, NULL);
  restore(saved);
  pd_throw_errno(env, err, "execve", a.file);
  attempt_free(&a);
  return NULL;
}

bool pd_init_exec(napi_env env, napi_value exports) {
  return pd_export_function(env, exports, "execve", execve_binding);
}
