/* fork(plan): the real fork(2), where the child never runs JavaScript.
 * Part 3: the parent (plan.c reads the plan, child.c runs it).
 *
 * Node marks the V8 heap MADV_DONTFORK and other threads' locks vanish in
 * the child, so whatever the child must do is described as data (a plan),
 * fully converted to C structures before fork(), and carried out here with
 * async-signal-safe calls only. Modelled on libuv's uv_spawn: signals blocked
 * around fork, dispositions reset in the child, exec errors reported through
 * a close-on-exec pipe so they can be thrown synchronously in the parent.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "fork.h"

static const char* stage_syscall(int32_t stage) {
  switch (stage) {
    case STAGE_SETSID: return "setsid";
    case STAGE_SETPGID: return "setpgid";
    case STAGE_PIPE: return "pipe";
    case STAGE_FORK: return "fork";
    case STAGE_CHDIR: return "chdir";
    case STAGE_OPEN_DEV_NULL: return "open";
    case STAGE_DUP: return "dup2";
    case STAGE_CLOEXEC: return "fcntl";
    case STAGE_DEATH_SIGNAL: return "prctl";
    default: return "execve";
  }
}

/* The channel children report on: close-on-exec, so EOF means every
 * process holding the write end has exec'd or exited. On Linux a
 * SOCK_SEQPACKET socketpair (one record per message, and it can carry the
 * exec level's pidfd); elsewhere a pipe. */
static int make_status_channel(int fds[2]) {
#ifdef __linux__
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0) return 0;
#endif
  return pd_pipe_cloexec(fds);
}

/* read(2) of the status channel; an fd passed with the bytes lands in
 * *passed (close-on-exec), else *passed is -1. */
static ssize_t read_status(int fd, char* buf, size_t len, int* passed) {
  *passed = -1;
#ifdef __linux__
  one_fd_message om;
  one_fd_message_init(&om, buf, len);
  ssize_t n = recvmsg(fd, &om.mh, MSG_CMSG_CLOEXEC);
  if (n == -1 && errno == ENOTSOCK) return read(fd, buf, len); /* the pipe fallback */
  if (n >= 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&om.mh); c != NULL; c = CMSG_NXTHDR(&om.mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int got;
        memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (*passed == -1) *passed = got;
        else close(got);
      }
    }
  }
  return n;
#else
  return read(fd, buf, len);
#endif
}

static const plan* plan_at_level(const plan* p, int level) {
  for (int i = 0; i < level && p->next != NULL; i++) p = p->next;
  return p;
}

/* Forks and runs the parsed plan; the exec level's PID (0 if an
 * intermediate died unreported) or NULL after throwing. */
static napi_value run_plan(napi_env env, const plan* root, bool with_pidfd) {
  child_context ctx;
  ctx.fd_limit = pd_scan_fd_limit();
  for (int i = 0; i < 3; i++) {
    ctx.stdio_nonblocking_at_load[i] = pd_stdio_was_nonblocking(i);
    ctx.stdio_is_nodes[i] = true;
  }
  ctx.exec_report_fd = -1;
  ctx.parent_pid = getpid();

  int status_pipe[2];
  if (make_status_channel(status_pipe) == -1) return pd_throw_errno(env, errno, "pipe", NULL);
  ctx.status_fd = status_pipe[1];

  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = fork();
  if (pid == 0) {
    close(status_pipe[0]);
    pd_fork_run_child(root, &ctx, 0);
  }
  int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  close(status_pipe[1]);
  if (pid == -1) {
    close(status_pipe[0]);
    return pd_throw_errno(env, fork_errno, "fork", NULL);
  }

  /* EOF arrives once every process holding the write end has exec'd (the
   * pipe is close-on-exec) or exited.
   * forked[level] = pid at that level; sized up front, so nothing is
   * allocated (nothing can fail) while a child may be left unreaped. */
  pid_t forked[MAX_NESTING + 2] = {pid};
  size_t reported = 1; /* levels reported so far, forked[0] included */
  size_t depth = 0;
  for (const plan* p = root; p->next != NULL; p = p->next) depth++;
  int exec_pidfd = -1; /* the exec level's pidfd, from its parent intermediate */
  int err = 0;
  int32_t stage = STAGE_NONE;
  int32_t err_level = 0;
  message msg;
  size_t have = 0;
  char* buf = (char*)&msg;
  for (;;) {
    int passed = -1;
    ssize_t n = read_status(status_pipe[0], buf + have, sizeof(msg) - have, &passed);
    if (n == -1 && errno == EINTR) continue;
    if (n > 0 && have + (size_t)n == sizeof(msg) && msg.kind == MSG_PID && (size_t)msg.level == depth &&
        exec_pidfd == -1) {
      exec_pidfd = passed;
    } else if (passed != -1) {
      close(passed);
    }
    if (n <= 0) break;
    have += (size_t)n;
    if (have < sizeof(msg)) continue;
    have = 0;
    if (msg.kind == MSG_PID && msg.level > 0 && msg.level <= MAX_NESTING + 1) {
      forked[msg.level] = msg.value;
      if ((size_t)msg.level + 1 > reported) reported = (size_t)msg.level + 1;
    } else if (msg.kind == MSG_ERROR && err == 0) {
      err = msg.value;
      stage = msg.stage;
      err_level = msg.level;
    }
  }
  close(status_pipe[0]);

  /* We wait for one process only: the child we forked ourselves, and only
   * when it cannot be running a program (it is an intermediate, or it
   * failed). It has closed its end of the pipe without exec'ing, i.e. it has
   * exited, so this wait is over at once, and a PID that is still our
   * unreaped child cannot have been reused by anyone. Deeper levels were
   * reaped by their own parents before those exited (run_intermediate). */
  const bool nested = root->next != NULL;
  if (nested || err != 0) reap_own_child(pid);
  /* The exec level is `depth`: a shorter report means an intermediate was
   * killed before it told us, and the last PID would be a reaped one. */
  pid_t exec_pid = reported == depth + 1 ? forked[depth] : 0;
  if (err != 0 || exec_pid <= 0 || !with_pidfd) {
    if (exec_pidfd != -1) close(exec_pidfd);
    exec_pidfd = -1;
  }
  if (err != 0) {
    const plan* failed = plan_at_level(root, err_level);
    const char* path = NULL;
    if (stage == STAGE_EXECVE) path = failed->file;
    else if (stage == STAGE_CHDIR) path = failed->cwd;
    return pd_throw_errno(env, err, stage_syscall(stage), path);
  }
  if (nested && exec_pid <= 0) {
    /* An intermediate died before it could report (killed from outside). */
    return pd_throw_errno(env, ECHILD, "fork", NULL);
  }
  if (!with_pidfd) return pd_number(env, exec_pid);
  /* { pid, pidfd }: pidfd is -1 for a plan that does not nest (the caller's
   * own child: its PID stays its own until the caller reaps it) or where
   * the kernel has no pidfds. The caller owns the fd. */
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok || !pd_set(env, out, "pid", pd_number(env, exec_pid)) ||
      !pd_set(env, out, "pidfd", pd_number(env, exec_pidfd))) {
    if (exec_pidfd != -1) close(exec_pidfd);
    return pd_throw_last(env);
  }
  return out;
}

static napi_value js_fork(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!pd_args(env, info, 2, argv, NULL)) return NULL;
  napi_valuetype t;
  PD_CHECK(env, napi_typeof(env, argv[0], &t));
  if (t == napi_undefined || t == napi_null) return pd_throw_arg_type(env, "plan", "of type object");
  plan* root = calloc(1, sizeof(plan));
  if (root == NULL) return pd_throw_errno(env, ENOMEM, "fork", NULL);
  napi_value result = NULL;
  if (pd_fork_parse_plan(env, argv[0], "plan", 0, NULL, root)) {
    bool with_pidfd = false;
    if (napi_typeof(env, argv[1], &t) != napi_ok) {
      pd_throw_last(env);
    } else {
      if (t == napi_boolean && napi_get_value_bool(env, argv[1], &with_pidfd) != napi_ok) with_pidfd = false;
      result = run_plan(env, root, with_pidfd);
    }
  }
  pd_fork_plan_free(root);
  return result;
}

bool pd_init_fork(napi_env env, napi_value exports) { return pd_export_function(env, exports, "fork", js_fork); }
