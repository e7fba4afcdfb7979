/* fork(plan), in three parts (native/fork/):
 *   plan.c   the plan: JavaScript values converted to C structures, all
 *            before fork(), so the child never allocates;
 *   child.c  what runs between fork() and execve(): async-signal-safe C
 *            only, no allocation, no JavaScript;
 *   fork.c   the parent: fork, read the children's reports, throw or
 *            return the exec level's PID.
 * This header holds what they share: the plan, the status messages and the
 * child's context. */
#ifndef POSIX_DAEMON_FORK_H
#define POSIX_DAEMON_FORK_H

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../pd.h"

/* The syscall a failure happened in (stage), reported by a child. */
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

/* ---- plan.c ---- */
/* Reads plan `value` (argument name `name`) at nesting `depth` into p;
 * false after throwing. `outer` is the enclosing level (NULL at the top). */
bool pd_fork_parse_plan(napi_env env, napi_value value, const char* name, int depth, const plan* outer, plan* p);
void pd_fork_plan_free(plan* p);

/* ---- child.c ---- */
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

/* Runs level `level` of the plan in a forked child: forks the next level
 * (an intermediate) or execs. Never returns. */
_Noreturn void pd_fork_run_child(const plan* p, child_context* ctx, int level);

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

static inline void one_fd_message_init(one_fd_message* om, void* buf, size_t len) {
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

/* Waits for our own child, which is known to be exiting or about to exit. */
static inline void reap_own_child(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
}

#endif /* POSIX_DAEMON_FORK_H */
