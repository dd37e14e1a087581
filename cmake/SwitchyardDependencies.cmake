# Finds Switchyard's dependencies. Required ones fail configure; optional ones (MPI, UCX, CUDA,
# NCCL) follow the SWITCHYARD_WITH_* options and set SWITCHYARD_HAVE_* to 0 or 1 for config.h.

find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
# The CPU kernels: Highway (portable SIMD, runtime dispatch) and OpenMP (threads in a rank).
find_package(HWY CONFIG QUIET)
if(NOT HWY_FOUND)
  message(FATAL_ERROR "Highway (libhwy-dev) not found. Run scripts/setup.sh.")
endif()
find_package(OpenMP REQUIRED COMPONENTS CXX)
# The coordinator's HTTP endpoint (/metrics): civetweb (libcivetweb-dev). Its CMake package
# names a server binary Debian does not ship, so the library is found directly.
find_path(CIVETWEB_INCLUDE_DIR civetweb.h)
find_library(CIVETWEB_LIBRARY civetweb)
if(NOT CIVETWEB_INCLUDE_DIR OR NOT CIVETWEB_LIBRARY)
  message(FATAL_ERROR "civetweb (libcivetweb-dev) not found. Run scripts/setup.sh.")
endif()
add_library(switchyard_civetweb INTERFACE)
target_include_directories(switchyard_civetweb SYSTEM INTERFACE "${CIVETWEB_INCLUDE_DIR}")
target_link_libraries(switchyard_civetweb INTERFACE "${CIVETWEB_LIBRARY}" ${CMAKE_DL_LIBS})

# _sy_optional(<NAME> <found-variable> <why-missing>): turns SWITCHYARD_WITH_<NAME> and whether
# the package was found into SWITCHYARD_HAVE_<NAME>; ON without the package is a FATAL_ERROR.
function(_sy_optional name found why)
  set(mode "${SWITCHYARD_WITH_${name}}")
  if(NOT mode MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "SWITCHYARD_WITH_${name}='${mode}': use AUTO, ON or OFF")
  endif()
  if(mode STREQUAL "OFF")
    set(SWITCHYARD_HAVE_${name} 0 PARENT_SCOPE)
  elseif(${found})
    set(SWITCHYARD_HAVE_${name} 1 PARENT_SCOPE)
  elseif(mode STREQUAL "ON")
    message(FATAL_ERROR "SWITCHYARD_WITH_${name}=ON but ${why}. Run scripts/setup.sh, or set it to AUTO/OFF.")
  else()
    set(SWITCHYARD_HAVE_${name} 0 PARENT_SCOPE)
  endif()
endfunction()

if(NOT SWITCHYARD_WITH_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS CXX)
endif()
_sy_optional(MPI MPI_CXX_FOUND "Open MPI (libopenmpi-dev) was not found")

if(NOT SWITCHYARD_WITH_UCX STREQUAL "OFF")
  find_package(ucx CONFIG QUIET)
endif()
_sy_optional(UCX ucx_FOUND "UCX (libucx-dev) was not found")

if(NOT SWITCHYARD_WITH_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    find_path(SWITCHYARD_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
    find_library(SWITCHYARD_NCCL_LIBRARY NAMES nccl libnccl.so.2
                 HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  endif()
endif()
_sy_optional(CUDA CUDAToolkit_FOUND "the CUDA toolkit (nvcc) was not found")
set(_sy_nccl_found FALSE)
if(SWITCHYARD_HAVE_CUDA AND SWITCHYARD_NCCL_INCLUDE_DIR AND SWITCHYARD_NCCL_LIBRARY)
  set(_sy_nccl_found TRUE)
endif()
set(SWITCHYARD_WITH_NCCL "${SWITCHYARD_WITH_CUDA}")
_sy_optional(NCCL _sy_nccl_found "NCCL (nccl.h, libnccl) was not found next to the CUDA toolkit")

# OpenBLAS: the peer the CPU FFN is measured against (bench kernels). Debian keeps cblas.h in
# a per-variant include directory.
find_path(SWITCHYARD_OPENBLAS_INCLUDE_DIR cblas.h
          PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread aarch64-linux-gnu/openblas-pthread openblas)
find_library(SWITCHYARD_OPENBLAS_LIBRARY NAMES openblas)
if(NOT SWITCHYARD_OPENBLAS_INCLUDE_DIR OR NOT SWITCHYARD_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS (libopenblas-dev) not found. Run scripts/setup.sh.")
endif()
add_library(switchyard_openblas INTERFACE)
target_include_directories(switchyard_openblas INTERFACE "${SWITCHYARD_OPENBLAS_INCLUDE_DIR}")
target_link_libraries(switchyard_openblas INTERFACE "${SWITCHYARD_OPENBLAS_LIBRARY}")

# The Python package (python/): pybind11 (pybind11-dev) and the interpreter's headers. The
# interpreter is Debian's /usr/bin/python3 unless one is named (pip install . names its own).
if(NOT SWITCHYARD_WITH_PYTHON STREQUAL "OFF")
  # pip install . configures this tree with its virtualenv's interpreter; once that
  # virtualenv is gone, fall back to the default rather than fail.
  foreach(var Python3_EXECUTABLE _Python3_EXECUTABLE)
    if(DEFINED ${var} AND NOT EXISTS "${${var}}")
      unset(${var} CACHE)
      unset(${var})
      unset(_Python3_INTERPRETER_SIGNATURE CACHE)
    endif()
  endforeach()
  if(NOT DEFINED Python3_EXECUTABLE AND NOT DEFINED Python_EXECUTABLE AND EXISTS /usr/bin/python3)
    set(Python3_EXECUTABLE /usr/bin/python3)
  elseif(DEFINED Python_EXECUTABLE AND NOT DEFINED Python3_EXECUTABLE)
    set(Python3_EXECUTABLE "${Python_EXECUTABLE}")
  endif()
  find_package(Python3 COMPONENTS Interpreter Development.Module QUIET)
  if(Python3_FOUND)
    find_package(pybind11 CONFIG QUIET)
  endif()
endif()
set(_sy_python_found FALSE)
if(Python3_FOUND AND pybind11_FOUND)
  set(_sy_python_found TRUE)
endif()
_sy_optional(PYTHON _sy_python_found "Python 3 headers (python3-dev) or pybind11 (pybind11-dev) were not found")
