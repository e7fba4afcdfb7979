/* fork(plan), part 1: the plan. Every JavaScript value the child will need
 * is read and converted here, before fork(): the child never allocates and
 * never touches the JavaScript heap (see fork.h). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fork.h"

void pd_fork_plan_free(plan* p) {
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
bool pd_fork_parse_plan(napi_env env, napi_value value, const char* name, int depth, const plan* outer, plan* p) {
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
    return pd_fork_parse_plan(env, nested, sub_name(n, name, ".fork"), depth + 1, p, p->next);
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
