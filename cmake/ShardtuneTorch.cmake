# Finds libtorch and decides SHARDTUNE_WITH_CUDA.
#
# libtorch comes from PyPI's torch wheel (or any libtorch >= 2.1): pass
# -DTorch_DIR=..., or let this file ask the Python in SHARDTUNE_PYTHON (or
# python3) for torch.utils.cmake_prefix_path.
#
# A CUDA wheel keeps the CUDA runtime, NCCL and cuDNN in site-packages/nvidia/
# */lib. They are put on the link and run paths ahead of any CUDA toolkit, so
# the process loads one CUDA runtime and one NCCL: the ones torch uses.

if(NOT SHARDTUNE_WITH_TORCH)
  set(SHARDTUNE_WITH_CUDA OFF)
  return()
endif()

if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  set(SHARDTUNE_PYTHON "python3" CACHE STRING "Python whose torch provides libtorch")
  execute_process(
    COMMAND ${SHARDTUNE_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc ERROR_QUIET)
  if(_torch_rc EQUAL 0)
    list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
  endif()
endif()

# Quieter configure: we compile no CUDA kernels through torch's flags.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
find_package(Torch REQUIRED)

file(GLOB SHARDTUNE_TORCH_NVIDIA_LIB_DIRS LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
set(SHARDTUNE_TORCH_LIB_DIRS ${SHARDTUNE_TORCH_NVIDIA_LIB_DIRS} "${TORCH_INSTALL_PREFIX}/lib")
foreach(_dir ${SHARDTUNE_TORCH_LIB_DIRS})
  add_link_options("LINKER:-rpath-link,${_dir}")
endforeach()
list(PREPEND CMAKE_BUILD_RPATH ${SHARDTUNE_TORCH_LIB_DIRS})
list(PREPEND CMAKE_INSTALL_RPATH ${SHARDTUNE_TORCH_LIB_DIRS})

# CUDA: on when torch has it and a toolkit is there (torch's own config has
# already looked for the toolkit).
set(_torch_has_cuda OFF)
if(TORCH_CUDA_LIBRARIES AND CUDAToolkit_FOUND)
  set(_torch_has_cuda ON)
endif()
if(SHARDTUNE_WITH_CUDA STREQUAL "AUTO")
  set(SHARDTUNE_WITH_CUDA ${_torch_has_cuda})
elseif(SHARDTUNE_WITH_CUDA AND NOT _torch_has_cuda)
  message(FATAL_ERROR "SHARDTUNE_WITH_CUDA=ON needs a CUDA libtorch and a CUDA toolkit")
endif()

if(SHARDTUNE_WITH_CUDA)
  # NCCL: the wheel's when there is one (torch loads that one), else the toolkit's.
  find_path(SHARDTUNE_NCCL_INCLUDE_DIR nccl.h
    HINTS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include" ${CUDAToolkit_INCLUDE_DIRS} NO_DEFAULT_PATH)
  find_library(SHARDTUNE_NCCL_LIBRARY NAMES libnccl.so.2 nccl NAMES_PER_DIR
    HINTS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/lib" ${CUDAToolkit_LIBRARY_DIR} NO_DEFAULT_PATH)
  if(NOT SHARDTUNE_NCCL_INCLUDE_DIR OR NOT SHARDTUNE_NCCL_LIBRARY)
    message(FATAL_ERROR "SHARDTUNE_WITH_CUDA is on but NCCL (nccl.h, libnccl) was not found")
  endif()
  message(STATUS "shardtune: NCCL ${SHARDTUNE_NCCL_LIBRARY}")
endif()

# The PCH of torch/torch.h, compiled once and reused by every torch target.
if(SHARDTUNE_PCH)
  add_library(shardtune_torch_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch_anchor.cpp)
  target_link_libraries(shardtune_torch_pch PRIVATE torch)
  target_compile_options(shardtune_torch_pch PRIVATE -Wall -Wextra -Winvalid-pch)
  target_precompile_headers(shardtune_torch_pch PRIVATE <torch/torch.h>)
endif()

function(shardtune_use_torch target)
  if(SHARDTUNE_PCH)
    target_precompile_headers(${target} REUSE_FROM shardtune_torch_pch)
  endif()
endfunction()
