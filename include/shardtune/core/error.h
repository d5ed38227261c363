// Errors and checks used throughout shardtune.
//
// Library code reports failures by throwing shardtune::Error (or a subclass).
// Only the CLI turns errors into messages and exit codes. libtorch reports its
// own failures as c10::Error, so exceptions are the one error channel that
// works across both; call sites stay free of Status plumbing.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace shardtune {

// Base class of every error shardtune throws. what() is a complete,
// user-facing message (it names the file, key or collective involved).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Malformed user input: a config file, an override, a data file.
class InputError : public Error {
 public:
  using Error::Error;
};

// Concatenates its arguments with operator<< into one string.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

namespace detail {
[[noreturn]] void throw_check_failure(const char* file, int line, const char* expr,
                                      const std::string& message);
}  // namespace detail

}  // namespace shardtune

// ST_CHECK(cond, parts...): if cond is false, throws shardtune::Error whose
// message holds the parts, the failed expression and file:line. For internal
// invariants and API misuse; user-input errors throw InputError directly with
// a message that names the input.
#define ST_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ::shardtune::detail::throw_check_failure(__FILE__, __LINE__, #cond,            \
                                               ::shardtune::str_cat(__VA_ARGS__));       \
    }                                                                                \
  } while (0)
