/* fork(plan), part 2: the child. Everything here runs between fork() and
 * execve(): only async-signal-safe calls, no allocation, no JavaScript
 * (see fork.h). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "fork.h"

/* fork() from inside a forked child. glibc's fork() runs every
 * pthread_atfork handler that any library in Node registered, and those may
 * take locks or allocate; the raw clone(SIGCHLD) syscall is what fork() does
 * without them. s390 takes (stack, flags, ...), every other Linux
 * architecture (flags, stack, ...); the rest are zero either way. */
static pid_t fork_in_child(void) {
#if defined(__linux__) && defined(SYS_clone) && (defined(__s390__) || defined(__s390x__))
  return (pid_t)syscall(SYS_clone, 0, SIGCHLD, 0, 0, 0);
#elif defined(__linux__) && defined(SYS_clone)
  return (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
#else
  return fork();
#endif
}

static void write_message(int fd, const message* m) { pd_write_all(fd, m, sizeof(*m)); }

/* The message with `passed` attached (SCM_RIGHTS) where the status channel
 * is a socket (Linux); without it when that fails or there is no fd. */
static void write_message_with_fd(int fd, const message* m, int passed) {
#ifdef __linux__
  if (passed != -1) {
    message copy = *m;
    one_fd_message om;
    one_fd_message_init(&om, &copy, sizeof(copy));
    struct cmsghdr* c = CMSG_FIRSTHDR(&om.mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &passed, sizeof(int));
    ssize_t n;
    do {
      n = sendmsg(fd, &om.mh, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    if (n == (ssize_t)sizeof(copy)) return;
  }
#else
  (void)passed;
#endif
  write_message(fd, m);
}

static _Noreturn void fail(const child_context* ctx, int level, int32_t stage, int err) {
  message m = {MSG_ERROR, level, err, stage};
  write_message(ctx->status_fd, &m);
  if (ctx->exec_report_fd != -1) pd_write_all(ctx->exec_report_fd, "x", 1);
  _exit(127);
}

static void reset_signals(void) {
  /* Dispositions first, while everything is still blocked, so no handler
   * inherited from Node can run in the child. */
  pd_reset_signal_dispositions();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Moves a pipe end of ours off 0-2 (where it lands if Node's stdio was
 * closed), where stdio is about to go. The old number is closed: left there,
 * 'inherit' would clear its close-on-exec flag and the program would hold
 * the pipe open, so EOF (and fork()'s return) would wait for it to exit. */
static void lift_above_stdio(int* fd, child_context* ctx, int level) {
  if (*fd == -1 || *fd >= 3) return;
  int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
  if (moved == -1) fail(ctx, level, STAGE_DUP, errno);
  close(*fd);
  *fd = moved;
}

/* Puts the plan's stdio on 0-2, and notes which of 0-2 are no longer
 * Node's own. */
static void apply_stdio(const plan* p, child_context* ctx, int level) {
  int src[3] = {0, 1, 2};
  int null_fd = -1;
  if (p->stdio == STDIO_IGNORE) {
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd == -1) fail(ctx, level, STAGE_OPEN_DEV_NULL, errno);
    for (int i = 0; i < 3; i++) src[i] = null_fd;
  } else if (p->stdio == STDIO_FDS) {
    for (int i = 0; i < 3; i++) src[i] = p->stdio_fds[i];
  }
  /* A source sitting on 0-2 could be overwritten by an earlier dup2 (think
   * [1, 0, 2]): lift such sources above 2 first. */
  for (int i = 0; i < 3; i++) {
    if (src[i] < 3 && src[i] != i) {
      int lifted = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
      if (lifted == -1) fail(ctx, level, STAGE_DUP, errno);
      for (int j = i + 1; j < 3; j++) {
        if (src[j] == src[i]) src[j] = lifted;
      }
      src[i] = lifted;
    }
  }
  for (int i = 0; i < 3; i++) {
    if (src[i] == i) {
      int flags = fcntl(i, F_GETFD);
      if (flags != -1 && (flags & FD_CLOEXEC)) fcntl(i, F_SETFD, flags & ~FD_CLOEXEC);
    } else if (dup2(src[i], i) == -1) {
      fail(ctx, level, STAGE_DUP, errno);
    }
    /* Anything but Node's own fd i there (/dev/null may have landed on a
     * slot Node had closed, and then needed no dup2). */
    const bool kept = p->stdio == STDIO_INHERIT || (p->stdio == STDIO_FDS && p->stdio_fds[i] == i);
    if (!kept) ctx->stdio_is_nodes[i] = false;
  }
  /* Close-on-exec anyway; closing it keeps intermediates' fd tables small.
   * Not when it landed on 0-2 itself (Node had that slot closed): it is
   * the stdio the plan asked for there. */
  if (null_fd > 2) close(null_fd);
}


/* An intermediate level: fork the next level, report its PID, wait until it
 * is done with us, and vanish, so that the exec level is orphaned and
 * adopted by init (or a subreaper). Each intermediate reaps its own child,
 * so the Node process only ever waits for the one child it forked itself
 * (issue 10, item 7): a PID reported from deeper down may belong to anyone
 * by the time Node would wait for it. */
static _Noreturn void run_intermediate(const plan* p, child_context* ctx, int level) {
  const bool next_execs = p->next->next == NULL;
  int report[2] = {-1, -1};
  if (next_execs) {
    if (pd_pipe_cloexec(report) == -1) fail(ctx, level, STAGE_PIPE, errno);
  }
  pid_t pid = fork_in_child();
  if (pid == -1) fail(ctx, level, STAGE_FORK, errno);
  if (pid == 0) {
    if (next_execs) {
      close(report[0]);
      ctx->exec_report_fd = report[1];
    }
    pd_fork_run_child(p->next, ctx, level + 1);
  }
  message m = {MSG_PID, level + 1, pid, STAGE_NONE};
  if (next_execs) {
    /* The exec level is our child and we have not reaped it: its PID is
     * certainly still its own, alive or zombie. A pidfd opened here, passed
     * to Node with the PID, keeps referring to it after we exit and init
     * reaps it, when the number may go to anyone (issue 16, item 10). */
    int pidfd = pd_pidfd_open(pid);
    write_message_with_fd(ctx->status_fd, &m, pidfd);
    if (pidfd != -1) close(pidfd);
  } else {
    write_message(ctx->status_fd, &m);
  }
  if (next_execs) {
    /* The exec level writes a byte if execve (or anything before it)
     * failed, right before _exit(127); EOF means it exec'd (the write end is
     * close-on-exec) and is the daemon now: not ours to wait for. */
    close(report[1]);
    char byte;
    ssize_t n;
    do {
      n = read(report[0], &byte, 1);
    } while (n == -1 && errno == EINTR);
    if (n == 1) reap_own_child(pid);
  } else {
    /* The next level is an intermediate: it exits as soon as its own child
     * has exec'd or failed. */
    reap_own_child(pid);
  }
  _exit(0);
}

_Noreturn void pd_fork_run_child(const plan* p, child_context* ctx, int level) {
  /* Level 0 comes from Node; a deeper level from an intermediate that did
   * this already and installed nothing since (it inherits the result). */
  if (level == 0) reset_signals();

  if (p->setsid && setsid() == -1) fail(ctx, level, STAGE_SETSID, errno);
  if (p->setpgid && setpgid(0, 0) == -1) fail(ctx, level, STAGE_SETPGID, errno);
#ifdef __linux__
  if (p->death_signal > 0) {
    if (prctl(PR_SET_PDEATHSIG, p->death_signal, 0, 0, 0) == -1) fail(ctx, level, STAGE_DEATH_SIGNAL, errno);
    /* A parent that ended before prctl() sends nothing: we were re-parented
     * already. Then the signal is ours now (its default action, after
     * reset_signals; execve is not reached if that ends us). */
    if (getppid() != ctx->parent_pid) kill(getpid(), p->death_signal);
  }
#endif

  /* umask, cwd and stdio apply at every level; in an intermediate they are
   * inherited by the levels below, which may set their own. */
  if (p->umask >= 0) umask((mode_t)p->umask);
  if (p->cwd != NULL && chdir(p->cwd) == -1) fail(ctx, level, STAGE_CHDIR, errno);

  lift_above_stdio(&ctx->status_fd, ctx, level);
  lift_above_stdio(&ctx->exec_report_fd, ctx, level);
  apply_stdio(p, ctx, level);

  if (p->next != NULL) run_intermediate(p, ctx, level);

  /* Node's own stdio, inherited, goes back to the mode the process started
   * with: Node may have made a pipe or tty non-blocking, which most programs
   * can't handle. Fds the plan (or an outer level) chose are left as they
   * are. */
  for (int i = 0; i < 3; i++) {
    if (ctx->stdio_is_nodes[i]) pd_set_nonblocking(i, ctx->stdio_nonblocking_at_load[i]);
  }

  int err = pd_cloexec_all_except(p->keep_fds.v, p->keep_fds.n, ctx->fd_limit);
  if (err != 0) fail(ctx, level, STAGE_CLOEXEC, err);

  execve(p->file, p->argv.v, p->envp.v);
  fail(ctx, level, STAGE_EXECVE, errno);
}

/* Every catchable signal back to SIG_DFL: for a process about to exec, or
 * one that runs no other code (a forked child, the init). */
void pd_reset_signal_dispositions(void) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    sigaction(s, &dfl, NULL); /* EINVAL for libc-reserved RT signals: fine */
  }
}
