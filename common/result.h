// Errors as values: every call that can fail (loader, switchd, control) returns a Result.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace xvmq {

// errno-style code (positive) and a message naming the object, the
// operation and the kernel's own words.
struct Error {
  int code = 0;
  std::string message;
};

// Build an Error from a negative or positive errno (0 counts as EIO) and a
// context line: make_error(-ENOENT, "open pin /sys/fs/bpf/x") ->
// "open pin ...: No such file or directory", followed by " (<detail>)" when
// the detail source set below has something to add.
Error make_error(int err, const std::string& context);

// The kernel's words only: "<context>: <strerror(err)>", err kept as given.
Error sys_error(int err, const std::string& context);

// What make_error appends: the loader sets the warnings libbpf and libxdp
// printed on this thread (loader/log.h), so that an Error carries the
// library's own words. Unset: nothing is appended.
using ErrorDetail = std::string (*)();
void set_error_detail(ErrorDetail detail);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace xvmq
