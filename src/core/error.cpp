#include "shardtune/core/error.h"

namespace shardtune::detail {

void throw_check_failure(const char* file, int line, const char* expr,
                         const std::string& message) {
  std::string text = message.empty() ? std::string("check failed") : message;
  throw Error(str_cat(text, " [", expr, " at ", file, ":", line, "]"));
}

}  // namespace shardtune::detail
