// MPI error codes as CommError (internal to the comm module).
#pragma once

#include <mpi.h>

#include <string>

#include "shardtune/comm/communicator.h"
#include "shardtune/core/strings.h"

namespace shardtune::detail {

// Throws CommError "what: <MPI's text for code>" unless code is MPI_SUCCESS.
inline void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw CommError(str_cat(what, ": ", std::string(text, static_cast<size_t>(len))));
}

}  // namespace shardtune::detail
