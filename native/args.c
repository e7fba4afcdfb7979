/* Error construction, argument checking and small value helpers for the
 * raw bindings (declared in pd.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pd.h"

#ifdef __APPLE__
#include <crt_externs.h>
#define environ (*_NSGetEnviron())
#else
extern char** environ;
#endif

/* ---- errors ---- */

/* errno values that matter to process control but that libuv has no name
 * for (uv_err_name would say "Unknown system error"). */
static const struct {
  int err;
  const char* code;
  const char* desc;
} extra_names[] = {
    {ECHILD, "ECHILD", "no child processes"},
    {ENOEXEC, "ENOEXEC", "exec format error"},
    {EDEADLK, "EDEADLK", "resource deadlock avoided"},
};

/* Creates an error of `kind` with `message` and sets its code; the error
 * object, or NULL when even that failed (an exception is then pending). */
typedef napi_status (*pd_error_ctor)(napi_env, napi_value, napi_value, napi_value*);

static napi_value make_error(napi_env env, pd_error_ctor ctor, const char* code, const char* message) {
  napi_value msg, err, code_value = NULL;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return NULL;
  if (code != NULL && napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok) return NULL;
  /* The code is set as a property (not the ctor's `code` argument, which
   * some versions put in the message) as Node's own errors have it. */
  if (ctor(env, NULL, msg, &err) != napi_ok) return NULL;
  if (code_value != NULL && napi_set_named_property(env, err, "code", code_value) != napi_ok) return NULL;
  return err;
}

/* Throws err; or, when building it failed, makes sure something is pending. */
static napi_value throw_value(napi_env env, napi_value err) {
  if (err != NULL) napi_throw(env, err);
  else pd_throw_last(env);
  return NULL;
}

/* Like snprintf into a malloc'd buffer; NULL when out of memory. */
static char* format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static char* format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char* out = NULL;
  int n = vasprintf(&out, fmt, ap);
  va_end(ap);
  return n < 0 ? NULL : out;
}

static napi_value throw_out_of_memory(napi_env env) {
  /* No allocation of ours: N-API's own message for an error. */
  napi_throw_error(env, "ENOMEM", "ENOMEM: not enough memory");
  return NULL;
}

napi_value pd_throw_errno(napi_env env, int err, const char* syscall, const char* path) {
  const char* code = NULL;
  const char* desc = NULL;
  for (size_t i = 0; i < sizeof(extra_names) / sizeof(extra_names[0]); i++) {
    if (extra_names[i].err == err) {
      code = extra_names[i].code;
      desc = extra_names[i].desc;
    }
  }
  /* On Unix libuv error codes are negated errno values. */
  if (code == NULL) {
    code = uv_err_name(-err);
    desc = uv_strerror(-err);
  }
  char* message = path != NULL ? format("%s: %s, %s '%s'", code, desc, syscall, path)
                               : format("%s: %s, %s", code, desc, syscall);
  if (message == NULL) return throw_out_of_memory(env);
  napi_value e = make_error(env, napi_create_error, NULL, message);
  free(message);
  napi_value v;
  /* Node puts the negated errno in err.errno; the keys in Node's order
   * (errno, code, syscall, path), as util.inspect and JSON show them. */
  if (e == NULL || napi_create_int32(env, -err, &v) != napi_ok || !pd_set(env, e, "errno", v) ||
      !pd_set(env, e, "code", pd_string(env, code)) || !pd_set(env, e, "syscall", pd_string(env, syscall)) ||
      (path != NULL && !pd_set(env, e, "path", pd_string(env, path)))) {
    return pd_throw_last(env);
  }
  return throw_value(env, e);
}

napi_value pd_throw_arg_type(napi_env env, const char* name, const char* expected) {
  char* message = format("The \"%s\" argument must be %s", name, expected);
  if (message == NULL) return throw_out_of_memory(env);
  napi_value e = make_error(env, napi_create_type_error, "ERR_INVALID_ARG_TYPE", message);
  free(message);
  return throw_value(env, e);
}

napi_value pd_throw_arg_value(napi_env env, const char* name, const char* reason) {
  char* message = format("The argument '%s' %s", name, reason);
  if (message == NULL) return throw_out_of_memory(env);
  napi_value e = make_error(env, napi_create_type_error, "ERR_INVALID_ARG_VALUE", message);
  free(message);
  return throw_value(env, e);
}

napi_value pd_throw_out_of_range(napi_env env, const char* name, int64_t min, int64_t max) {
  char* message = format("The value of \"%s\" is out of range. It must be an integer >= %" PRId64 " && <= %" PRId64,
                         name, min, max);
  if (message == NULL) return throw_out_of_memory(env);
  napi_value e = make_error(env, napi_create_range_error, "ERR_OUT_OF_RANGE", message);
  free(message);
  return throw_value(env, e);
}

napi_value pd_throw_error(napi_env env, const char* message) {
  return throw_value(env, make_error(env, napi_create_error, NULL, message));
}

napi_value pd_throw_last(napi_env env) {
  /* The failed call's message first: any further N-API call, even
   * napi_is_exception_pending, resets it. Copied, as the next call may
   * overwrite the buffer. */
  const napi_extended_error_info* info = NULL;
  char what[128] = "N-API call failed";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message != NULL) {
    snprintf(what, sizeof(what), "%s", info->error_message);
  }
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
  napi_throw_error(env, NULL, what);
  return NULL;
}

/* ---- arguments ---- */

bool pd_args(napi_env env, napi_callback_info info, size_t n, napi_value* argv, napi_value* self) {
  size_t argc = n;
  PD_CHECK_BOOL(env, napi_get_cb_info(env, info, &argc, argv, self, NULL));
  if (argc < n) {
    napi_value undefined;
    PD_CHECK_BOOL(env, napi_get_undefined(env, &undefined));
    for (size_t i = argc; i < n; i++) argv[i] = undefined;
  }
  return true;
}

static bool is_type(napi_env env, napi_value v, napi_valuetype want) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == want;
}

bool pd_is_undefined(napi_env env, napi_value v) { return is_type(env, v, napi_undefined); }

bool pd_arg_string(napi_env env, napi_value v, const char* name, char** out) {
  *out = NULL;
  if (!is_type(env, v, napi_string)) return pd_throw_arg_type(env, name, "of type string"), false;
  size_t len = 0;
  PD_CHECK_BOOL(env, napi_get_value_string_utf8(env, v, NULL, 0, &len));
  char* s = (char*)malloc(len + 1);
  if (s == NULL) return throw_out_of_memory(env), false;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    pd_throw_last(env);
    return false;
  }
  if (strlen(s) != len) {
    free(s);
    pd_throw_arg_value(env, name, "must be a string without null bytes");
    return false;
  }
  *out = s;
  return true;
}

bool pd_arg_int(napi_env env, napi_value v, const char* name, int64_t min, int64_t max, int32_t* out) {
  if (!is_type(env, v, napi_number)) return pd_throw_arg_type(env, name, "of type number"), false;
  double d;
  PD_CHECK_BOOL(env, napi_get_value_double(env, v, &d));
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    pd_throw_out_of_range(env, name, min, max);
    return false;
  }
  *out = (int32_t)d;
  return true;
}

bool pd_opt_bool(napi_env env, napi_value obj, const char* key, const char* owner, bool def, bool* out) {
  napi_value v;
  PD_CHECK_BOOL(env, napi_get_named_property(env, obj, key, &v));
  if (is_type(env, v, napi_undefined)) {
    *out = def;
    return true;
  }
  if (!is_type(env, v, napi_boolean)) {
    char* name = format("%s.%s", owner, key);
    if (name == NULL) return throw_out_of_memory(env), false;
    pd_throw_arg_type(env, name, "of type boolean");
    free(name);
    return false;
  }
  PD_CHECK_BOOL(env, napi_get_value_bool(env, v, out));
  return true;
}

/* name[i], for an element's error message; NULL when out of memory. */
static char* element_name(const char* name, uint32_t i) { return format("%s[%" PRIu32 "]", name, i); }

/* An array's length, read once: a getter on an element may push more
 * (issue 16, item 11); what was there when the call began is what counts. */
static bool array_length(napi_env env, napi_value v, const char* name, uint32_t max, uint32_t* n) {
  bool is_array = false;
  PD_CHECK_BOOL(env, napi_is_array(env, v, &is_array));
  if (!is_array) return pd_throw_arg_type(env, name, "an instance of Array"), false;
  PD_CHECK_BOOL(env, napi_get_array_length(env, v, n));
  if (*n > max) return pd_throw_arg_value(env, name, "is too long"), false;
  return true;
}

bool pd_arg_string_array(napi_env env, napi_value v, const char* name, pd_strv* out) {
  out->v = NULL;
  out->n = 0;
  uint32_t n;
  /* Arrays may be sparse or huge; execve would reject absurd sizes anyway. */
  if (!array_length(env, v, name, 1u << 20, &n)) return false;
  out->v = (char**)calloc((size_t)n + 1, sizeof(char*));
  if (out->v == NULL) return throw_out_of_memory(env), false;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    char* ename = element_name(name, i);
    bool ok = ename != NULL && napi_get_element(env, v, i, &e) == napi_ok && pd_arg_string(env, e, ename, &out->v[i]);
    if (ename == NULL) throw_out_of_memory(env);
    else if (!ok) pd_throw_last(env);
    free(ename);
    if (!ok) {
      pd_strv_free(out);
      return false;
    }
    out->n = i + 1;
  }
  return true;
}

void pd_strv_free(pd_strv* s) {
  if (s->v != NULL) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
  }
  s->v = NULL;
  s->n = 0;
}

bool pd_current_environ(pd_strv* out) {
  size_t n = 0;
  for (char** e = environ; e != NULL && *e != NULL; e++) n++;
  out->n = 0;
  out->v = (char**)calloc(n + 1, sizeof(char*));
  if (out->v == NULL) return errno = ENOMEM, false;
  for (size_t i = 0; i < n; i++) {
    out->v[i] = strdup(environ[i]);
    if (out->v[i] == NULL) {
      pd_strv_free(out);
      errno = ENOMEM;
      return false;
    }
    out->n = i + 1;
  }
  return true;
}

bool pd_arg_fd_array(napi_env env, napi_value v, const char* name, int min_fd, pd_intv* out) {
  out->v = NULL;
  out->n = 0;
  uint32_t n;
  if (!array_length(env, v, name, 65536, &n)) return false;
  out->v = (int*)malloc(((size_t)n + 1) * sizeof(int));
  if (out->v == NULL) return throw_out_of_memory(env), false;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    char* ename = element_name(name, i);
    int32_t fd = 0;
    bool ok = ename != NULL && napi_get_element(env, v, i, &e) == napi_ok &&
              pd_arg_int(env, e, ename, min_fd, INT32_MAX, &fd);
    if (ename == NULL) throw_out_of_memory(env);
    else if (!ok) pd_throw_last(env);
    free(ename);
    if (!ok) {
      pd_intv_free(out);
      return false;
    }
    out->v[i] = fd;
    out->n = i + 1;
  }
  return true;
}

void pd_intv_free(pd_intv* s) {
  free(s->v);
  s->v = NULL;
  s->n = 0;
}

/* ---- values ---- */

napi_value pd_undefined(napi_env env) {
  napi_value v;
  return napi_get_undefined(env, &v) == napi_ok ? v : pd_throw_last(env);
}

napi_value pd_null(napi_env env) {
  napi_value v;
  return napi_get_null(env, &v) == napi_ok ? v : pd_throw_last(env);
}

napi_value pd_bool(napi_env env, bool b) {
  napi_value v;
  return napi_get_boolean(env, b, &v) == napi_ok ? v : pd_throw_last(env);
}

napi_value pd_number(napi_env env, double d) {
  napi_value v;
  return napi_create_double(env, d, &v) == napi_ok ? v : pd_throw_last(env);
}

napi_value pd_string(napi_env env, const char* s) {
  napi_value v;
  return napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) == napi_ok ? v : pd_throw_last(env);
}

bool pd_set(napi_env env, napi_value obj, const char* key, napi_value value) {
  if (value == NULL) return false;
  PD_CHECK_BOOL(env, napi_set_named_property(env, obj, key, value));
  return true;
}

bool pd_export_function(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  PD_CHECK_BOOL(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn));
  return pd_set(env, exports, name, fn);
}

/* ---- calling JavaScript from libuv callbacks ---- */

void pd_call_from_loop(napi_env env, napi_ref callback, napi_async_context context, pd_build_args build,
                       void* data) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, global, argv[4], result;
  int argc = 0;
  if (napi_get_reference_value(env, callback, &fn) != napi_ok || fn == NULL ||
      napi_get_global(env, &global) != napi_ok) {
    goto done;
  }
  if (build != NULL) argc = build(env, data, argv);
  if (argc < 0) goto done;
  napi_make_callback(env, context, global, fn, (size_t)argc, argv, &result);
done:;
  /* What the JS callback threw (or a failure building its arguments) goes
   * to the process, as for any event-loop callback; nothing else is left to
   * tell. */
  napi_value error;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &error) == napi_ok && !pd_is_undefined(env, error)) {
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}
