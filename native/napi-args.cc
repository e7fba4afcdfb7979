// Error construction and argument checking for the parts not yet ported to C
// (transitional: removed once every part uses args.c).
#include <uv.h>

#include <errno.h>

#include <cstring>

#include "common.h"

#ifdef __APPLE__
#include <crt_externs.h>
#define environ (*_NSGetEnviron())
#else
extern char** environ;
#endif

namespace pd {

// errno values that matter to process control but that libuv has no name
// for (uv_err_name would say "Unknown system error").
struct ErrnoName {
  int err;
  const char* code;
  const char* desc;
};
const ErrnoName kExtraNames[] = {
    {ECHILD, "ECHILD", "no child processes"},
    {ENOEXEC, "ENOEXEC", "exec format error"},
    {EDEADLK, "EDEADLK", "resource deadlock avoided"},
};

static void NameErrno(int err, std::string* code, std::string* desc) {
  for (const ErrnoName& n : kExtraNames) {
    if (n.err == err) {
      *code = n.code;
      *desc = n.desc;
      return;
    }
  }
  // On Unix libuv error codes are negated errno values.
  *code = uv_err_name(-err);
  *desc = uv_strerror(-err);
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path) {
  // Node puts the negated errno in err.errno.
  int uverr = -err;
  std::string code, desc;
  NameErrno(err, &code, &desc);
  std::string msg = code + ": " + desc + ", " + syscall;
  if (path != nullptr) msg += std::string(" '") + path + "'";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, uverr));
  e.Set("code", Napi::String::New(env, code));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) e.Set("path", Napi::String::New(env, path));
  return e;
}

static Napi::Error WithCode(Napi::Error e, const char* code) {
  e.Set("code", Napi::String::New(e.Env(), code));
  return e;
}

Napi::Error ArgTypeError(Napi::Env env, const std::string& name, const char* expected) {
  std::string msg = "The \"" + name + "\" argument must be " + expected;
  return WithCode(Napi::TypeError::New(env, msg), "ERR_INVALID_ARG_TYPE");
}

Napi::Error ArgValueError(Napi::Env env, const std::string& name, const char* reason) {
  std::string msg = "The argument '" + name + "' " + reason;
  return WithCode(Napi::TypeError::New(env, msg), "ERR_INVALID_ARG_VALUE");
}

std::string CString(const Napi::Value& v, const std::string& name) {
  if (!v.IsString()) throw ArgTypeError(v.Env(), name, "of type string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    throw ArgValueError(v.Env(), name, "must be a string without null bytes");
  }
  return s;
}

int32_t Int(const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
  if (!v.IsNumber()) throw ArgTypeError(v.Env(), name, "of type number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) ||
      d != static_cast<double>(static_cast<int64_t>(d))) {
    std::string msg = "The value of \"" + name + "\" is out of range. It must be an integer >= " +
                      std::to_string(min) + " && <= " + std::to_string(max);
    Napi::Error e = Napi::RangeError::New(v.Env(), msg);
    throw WithCode(e, "ERR_OUT_OF_RANGE");
  }
  return static_cast<int32_t>(d);
}

bool OptBool(const Napi::Object& o, const char* key, const std::string& owner, bool def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsBoolean()) throw ArgTypeError(o.Env(), owner + "." + key, "of type boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<std::string> CStringArray(const Napi::Value& v, const std::string& name) {
  if (!v.IsArray()) throw ArgTypeError(v.Env(), name, "an instance of Array");
  Napi::Array a = v.As<Napi::Array>();
  // The length is read once: a getter on an element may push more (issue
  // 16, item 11); what was there when the call began is what counts.
  // Arrays may be sparse or huge; execve would reject absurd sizes anyway.
  const uint32_t n = a.Length();
  if (n > (1u << 20)) throw ArgValueError(v.Env(), name, "is too long");
  std::vector<std::string> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    out.push_back(CString(a.Get(i), name + "[" + std::to_string(i) + "]"));
  }
  return out;
}

std::vector<int> FdArray(const Napi::Value& v, const std::string& name, int min_fd) {
  if (!v.IsArray()) throw ArgTypeError(v.Env(), name, "an instance of Array");
  Napi::Array a = v.As<Napi::Array>();
  const uint32_t n = a.Length();  // once, as in CStringArray
  if (n > 65536) throw ArgValueError(v.Env(), name, "is too long");
  std::vector<int> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    out.push_back(Int(a.Get(i), name + "[" + std::to_string(i) + "]", min_fd, INT32_MAX));
  }
  return out;
}

CStrings::CStrings(std::vector<std::string> s) : strings_(std::move(s)) { Rebuild(); }

// A moved vector hands over its buffer: the strings (SSO ones included)
// stay where they are, so the pointers move along and nothing allocates
// (these are noexcept: an allocation failure here would terminate).
CStrings::CStrings(CStrings&& o) noexcept : strings_(std::move(o.strings_)), ptrs_(std::move(o.ptrs_)) {}

CStrings& CStrings::operator=(CStrings&& o) noexcept {
  strings_ = std::move(o.strings_);
  ptrs_ = std::move(o.ptrs_);
  return *this;
}

void CStrings::Rebuild() {
  ptrs_.clear();
  for (auto& s : strings_) ptrs_.push_back(&s[0]);
  ptrs_.push_back(nullptr);
}

std::vector<std::string> CurrentEnviron() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; e++) out.emplace_back(*e);
  return out;
}

}  // namespace pd
