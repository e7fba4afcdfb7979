/* fork(plan): the real fork(2), where the child never runs JavaScript.
 *
 * Node marks the V8 heap MADV_DONTFORK and other threads' locks vanish in
 * the child, so whatever the child must do is described as data (a plan),
 * fully converted to C structures before fork(), and carried out here with
 * async-signal-safe calls only. Modelled on libuv's uv_spawn: signals blocked
 * around fork, dispositions reset in the child, exec errors reported through
 * a close-on-exec pipe so they can be thrown synchronously in the parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "pd.h"

enum {
  STAGE_NONE = 0,
  STAGE_SETSID,
  STAGE_SETPGID,
  STAGE_PIPE,
  STAGE_FORK,
  STAGE_CHDIR,
  STAGE_OPEN_DEV_NULL,
  STAGE_DUP,
  STAGE_CLOEXEC,
  STAGE_EXECVE,
  STAGE_DEATH_SIGNAL,
};

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

/* One message on the status pipe; small enough for atomic pipe writes. */
typedef struct {
  int32_t kind;   /* MSG_PID: an intermediate reports the PID it forked; MSG_ERROR */
  int32_t level;  /* nesting level of the sender */
  int32_t value;  /* pid or errno */
  int32_t stage;
} message;
#define MSG_PID 1
#define MSG_ERROR 2

typedef enum { STDIO_INHERIT, STDIO_IGNORE, STDIO_FDS } stdio_mode;

/* One level of a plan. Every level may set setsid/setpgid, umask, cwd and
 * stdio: an intermediate level (one with `next`) applies them in itself
 * before it forks, so the levels below inherit them (umask, cwd and fds 0-2
 * are inherited across fork) unless they set their own. keepFds only means
 * something where execve happens, so the exec level uses its own keepFds or,
 * without one, the nearest outer level's (see parse_plan). */
typedef struct plan {
  bool setsid;
  bool setpgid;
  int umask;
  char* cwd; /* NULL: no chdir */
  stdio_mode stdio;
  int stdio_fds[3];
  pd_intv keep_fds;  /* sorted, unique, all >= 3 */
  bool has_keep_fds; /* set at this level or an outer one */
  int death_signal;  /* PR_SET_PDEATHSIG; a direct exec child only */
  struct plan* next;
  char* file;
  pd_strv argv;
  pd_strv envp;
} plan;

#define MAX_NESTING 4
/* The longest argument name is "plan" + MAX_NESTING ".fork" + ".deathSignal"
 * (index suffixes are added by the array readers). */
#define NAME_SIZE 96

static void plan_free(plan* p) {
  while (p != NULL) {
    plan* next = p->next;
    free(p->cwd);
    free(p->file);
    pd_intv_free(&p->keep_fds);
    pd_strv_free(&p->argv);
    pd_strv_free(&p->envp);
    free(p);
    p = next;
  }
}

static const char* sub_name(char* buf, const char* name, const char* suffix) {
  snprintf(buf, NAME_SIZE, "%s%s", name, suffix);
  return buf;
}

static bool check_open_fd(napi_env env, int fd) {
  if (pd_fd_is_open(fd)) return true;
  pd_throw_errno(env, EBADF, "fcntl", NULL);
  return false;
}

static int compare_int(const void* a, const void* b) {
  int x = *(const int*)a, y = *(const int*)b;
  return (x > y) - (x < y);
}

/* obj[key] into *out; false after throwing (a getter may throw). */
static bool get_property(napi_env env, napi_value obj, const char* key, napi_value* out) {
  if (napi_get_named_property(env, obj, key, out) != napi_ok) {
    pd_throw_last(env);
    return false;
  }
  return true;
}

/* Is v the string `word`, exactly (no trailing bytes, no NUL inside)? */
static bool string_equals(napi_env env, napi_value v, const char* word, bool* out) {
  size_t len, want = strlen(word);
  char buf[16];
  PD_CHECK_BOOL(env, napi_get_value_string_utf8(env, v, NULL, 0, &len));
  *out = false;
  if (len != want || len >= sizeof(buf)) return true;
  PD_CHECK_BOOL(env, napi_get_value_string_utf8(env, v, buf, sizeof(buf), &len));
  *out = len == want && memcmp(buf, word, want) == 0;
  return true;
}

static bool stdio_error(napi_env env, const char* name) {
  char n[NAME_SIZE];
  pd_throw_arg_value(env, sub_name(n, name, ".stdio"), "must be 'inherit', 'ignore' or [fd, fd, fd]");
  return false;
}

static bool parse_stdio(napi_env env, napi_value v, const char* name, plan* p) {
  napi_valuetype t;
  PD_CHECK_BOOL(env, napi_typeof(env, v, &t));
  if (t == napi_undefined) {
    p->stdio = STDIO_INHERIT;
    return true;
  }
  if (t == napi_string) {
    bool is;
    if (!string_equals(env, v, "inherit", &is)) return false;
    if (is) {
      p->stdio = STDIO_INHERIT;
      return true;
    }
    if (!string_equals(env, v, "ignore", &is)) return false;
    if (is) {
      p->stdio = STDIO_IGNORE;
      return true;
    }
    return stdio_error(env, name);
  }
  bool is_array;
  uint32_t length = 0;
  PD_CHECK_BOOL(env, napi_is_array(env, v, &is_array));
  if (is_array) PD_CHECK_BOOL(env, napi_get_array_length(env, v, &length));
  if (!is_array || length != 3) return stdio_error(env, name);
  char n[NAME_SIZE];
  pd_intv fds = {NULL, 0};
  if (!pd_arg_fd_array(env, v, sub_name(n, name, ".stdio"), 0, &fds)) return false;
  /* Always 3: the reader takes the length once, and no JavaScript ran
   * since ours. Checked all the same: fds.v[2] must exist. */
  if (fds.n != 3) {
    pd_intv_free(&fds);
    return stdio_error(env, name);
  }
  p->stdio = STDIO_FDS;
  for (int i = 0; i < 3; i++) {
    if (!check_open_fd(env, fds.v[i])) {
      pd_intv_free(&fds);
      return false;
    }
    p->stdio_fds[i] = fds.v[i];
  }
  pd_intv_free(&fds);
  return true;
}

static bool parse_keep_fds(napi_env env, napi_value v, const char* name, plan* p) {
  char n[NAME_SIZE];
  if (!pd_arg_fd_array(env, v, sub_name(n, name, ".keepFds"), 3, &p->keep_fds)) return false;
  p->has_keep_fds = true;
  for (size_t i = 0; i < p->keep_fds.n; i++) {
    if (!check_open_fd(env, p->keep_fds.v[i])) return false;
  }
  if (p->keep_fds.n > 1) {
    qsort(p->keep_fds.v, p->keep_fds.n, sizeof(int), compare_int);
    size_t kept = 1;
    for (size_t i = 1; i < p->keep_fds.n; i++) {
      if (p->keep_fds.v[i] != p->keep_fds.v[kept - 1]) p->keep_fds.v[kept++] = p->keep_fds.v[i];
    }
    p->keep_fds.n = kept;
  }
  return true;
}

/* The outer level's keepFds, copied: each level owns its vector. */
static bool copy_keep_fds(napi_env env, const plan* outer, plan* p) {
  p->has_keep_fds = true;
  if (outer->keep_fds.n == 0) return true;
  p->keep_fds.v = malloc(outer->keep_fds.n * sizeof(int));
  if (p->keep_fds.v == NULL) {
    pd_throw_errno(env, ENOMEM, "fork", NULL);
    return false;
  }
  memcpy(p->keep_fds.v, outer->keep_fds.v, outer->keep_fds.n * sizeof(int));
  p->keep_fds.n = outer->keep_fds.n;
  return true;
}

/* argv: argv0 (or file), then args; takes the strings of `args`. */
static bool build_argv(napi_env env, char* argv0, pd_strv* args, pd_strv* out) {
  char** v = malloc((args->n + 2) * sizeof(char*));
  if (v == NULL) {
    free(argv0);
    pd_throw_errno(env, ENOMEM, "fork", NULL);
    return false;
  }
  v[0] = argv0;
  for (size_t i = 0; i < args->n; i++) v[i + 1] = args->v[i];
  v[args->n + 1] = NULL;
  out->v = v;
  out->n = args->n + 1;
  free(args->v);
  args->v = NULL;
  args->n = 0;
  return true;
}

/* The exec level's argv and envp. */
static bool parse_exec(napi_env env, napi_value o, const char* name, plan* p) {
  char n[NAME_SIZE];
  napi_value v;
  char* argv0 = NULL;
  if (!get_property(env, o, "argv0", &v)) return false;
  if (pd_is_undefined(env, v)) {
    argv0 = strdup(p->file);
    if (argv0 == NULL) {
      pd_throw_errno(env, ENOMEM, "fork", NULL);
      return false;
    }
  } else if (!pd_arg_string(env, v, sub_name(n, name, ".argv0"), &argv0)) {
    return false;
  }
  pd_strv args = {NULL, 0};
  if (!get_property(env, o, "args", &v)) {
    free(argv0);
    return false;
  }
  if (!pd_is_undefined(env, v) && !pd_arg_string_array(env, v, sub_name(n, name, ".args"), &args)) {
    free(argv0);
    return false;
  }
  bool ok = build_argv(env, argv0, &args, &p->argv);
  pd_strv_free(&args);
  if (!ok) return false;

  if (!get_property(env, o, "env", &v)) return false;
  if (pd_is_undefined(env, v)) {
    if (!pd_current_environ(&p->envp)) {
      pd_throw_errno(env, ENOMEM, "fork", NULL);
      return false;
    }
    return true;
  }
  return pd_arg_string_array(env, v, sub_name(n, name, ".env"), &p->envp);
}

/* Parses one level (and the levels below) into *p, zeroed by the caller.
 * false after throwing; what was parsed so far stays in *p for plan_free. */
static bool parse_plan(napi_env env, napi_value value, const char* name, int depth, const plan* outer, plan* p) {
  char n[NAME_SIZE];
  napi_valuetype t;
  bool is_array = false;
  PD_CHECK_BOOL(env, napi_typeof(env, value, &t));
  if (t == napi_object) PD_CHECK_BOOL(env, napi_is_array(env, value, &is_array));
  if (t != napi_object || is_array) {
    pd_throw_arg_type(env, name, "of type object");
    return false;
  }
  if (depth > MAX_NESTING) {
    pd_throw_arg_value(env, name, "nests forks too deeply");
    return false;
  }
  p->umask = -1;
  p->stdio = STDIO_INHERIT;
  for (int i = 0; i < 3; i++) p->stdio_fds[i] = i;

  if (!pd_opt_bool(env, value, "setsid", name, false, &p->setsid)) return false;
  if (!pd_opt_bool(env, value, "setpgid", name, false, &p->setpgid)) return false;
  if (p->setsid && p->setpgid) {
    /* setsid() already makes the caller the leader of a new process group,
     * and a session leader may not call setpgid() (EPERM). */
    pd_throw_arg_value(env, name,
                       "must not set both 'setsid' and 'setpgid' (setsid already starts a new process group)");
    return false;
  }

  napi_value v;
  if (!get_property(env, value, "umask", &v)) return false;
  if (!pd_is_undefined(env, v)) {
    int32_t mask;
    if (!pd_arg_int(env, v, sub_name(n, name, ".umask"), 0, 0777, &mask)) return false;
    p->umask = mask;
  }

  if (!get_property(env, value, "cwd", &v)) return false;
  if (!pd_is_undefined(env, v) && !pd_arg_string(env, v, sub_name(n, name, ".cwd"), &p->cwd)) return false;

  if (!get_property(env, value, "stdio", &v)) return false;
  if (!parse_stdio(env, v, name, p)) return false;

  if (!get_property(env, value, "keepFds", &v)) return false;
  const bool own_keep_fds = !pd_is_undefined(env, v);
  if (own_keep_fds && !parse_keep_fds(env, v, name, p)) return false;

  napi_value nested, file;
  if (!get_property(env, value, "fork", &nested)) return false;
  if (!get_property(env, value, "file", &file)) return false;
  const bool has_nested = !pd_is_undefined(env, nested);
  if (has_nested && !pd_is_undefined(env, file)) {
    pd_throw_arg_value(env, name, "must have either 'file' or 'fork', not both");
    return false;
  }
  if (!own_keep_fds && outer != NULL && outer->has_keep_fds && !copy_keep_fds(env, outer, p)) return false;
  if (has_nested) {
    p->next = calloc(1, sizeof(plan));
    if (p->next == NULL) {
      pd_throw_errno(env, ENOMEM, "fork", NULL);
      return false;
    }
    return parse_plan(env, nested, sub_name(n, name, ".fork"), depth + 1, p, p->next);
  }
  if (pd_is_undefined(env, file)) {
    pd_throw_arg_value(env, name, "must have 'file' or 'fork'");
    return false;
  }
  if (!pd_arg_string(env, file, sub_name(n, name, ".file"), &p->file)) return false;
  if (!get_property(env, value, "deathSignal", &v)) return false;
  if (!pd_is_undefined(env, v)) {
#ifdef __linux__
    /* Its parent would be an intermediate level, which exits at once. */
    if (depth > 0) {
      pd_throw_arg_value(env, sub_name(n, name, ".deathSignal"), "is only for a direct child, not a nested plan");
      return false;
    }
    int32_t sig;
    if (!pd_arg_int(env, v, sub_name(n, name, ".deathSignal"), 1, NSIG - 1, &sig)) return false;
    p->death_signal = sig;
#else
    pd_throw_arg_value(env, sub_name(n, name, ".deathSignal"), "needs Linux (PR_SET_PDEATHSIG)");
    return false;
#endif
  }
  if (p->file[0] == '\0') {
    pd_throw_arg_value(env, sub_name(n, name, ".file"), "must be a non-empty string");
    return false;
  }
  return parse_exec(env, value, name, p);
}

/* ---------------------------------------------------------------------------
 * Child side. Everything below runs between fork() and execve(): only
 * async-signal-safe calls, no allocation, no JavaScript. */

/* Per-process state of a forked child. Each forked process works on its own
 * copy (fork copies memory), so a level may change it for the levels below. */
typedef struct {
  int fd_limit;
  bool stdio_nonblocking_at_load[3];
  /* Is fd i still Node's own stdio? False once a level replaced it: the
   * blocking mode recorded at load time is then not that fd's business. */
  bool stdio_is_nodes[3];
  int status_fd;
  /* Exec level of a nested plan only: write end of a pipe to the parent
   * intermediate, which learns from it whether execve failed (a byte) or
   * happened (EOF), so it can reap a failed child itself. -1 elsewhere. */
  int exec_report_fd;
  /* The PID of the process that forked level 0 (deathSignal's check). */
  pid_t parent_pid;
} child_context;

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

#ifdef __linux__
/* A msghdr over one buffer, with room for one fd (SCM_RIGHTS). On the
 * stack: usable in a forked child. */
typedef struct {
  struct iovec iov;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr mh;
} one_fd_message;

static void one_fd_message_init(one_fd_message* om, void* buf, size_t len) {
  om->iov.iov_base = buf;
  om->iov.iov_len = len;
  memset(&om->control, 0, sizeof(om->control));
  memset(&om->mh, 0, sizeof(om->mh));
  om->mh.msg_iov = &om->iov;
  om->mh.msg_iovlen = 1;
  om->mh.msg_control = om->control.buf;
  om->mh.msg_controllen = sizeof(om->control.buf);
}
#endif

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

/* Waits for our own child, which is known to be exiting or about to exit. */
static void reap_own_child(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
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

static _Noreturn void run_child(const plan* p, child_context* ctx, int level);

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
    run_child(p->next, ctx, level + 1);
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

static _Noreturn void run_child(const plan* p, child_context* ctx, int level) {
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

/* ---------------------------------------------------------------------------
 * Parent side. */

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
    run_child(root, &ctx, 0);
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
  if (parse_plan(env, argv[0], "plan", 0, NULL, root)) {
    bool with_pidfd = false;
    if (napi_typeof(env, argv[1], &t) != napi_ok) {
      pd_throw_last(env);
    } else {
      if (t == napi_boolean && napi_get_value_bool(env, argv[1], &with_pidfd) != napi_ok) with_pidfd = false;
      result = run_plan(env, root, with_pidfd);
    }
  }
  plan_free(root);
  return result;
}

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

bool pd_init_fork(napi_env env, napi_value exports) { return pd_export_function(env, exports, "fork", js_fork); }
