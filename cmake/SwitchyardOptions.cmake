# Compiler warnings and sanitizers for every Switchyard target.
add_library(switchyard_build_flags INTERFACE)
target_compile_options(switchyard_build_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
# No implicit fused multiply-add: a*b+c stays two roundings unless the code asks for an FMA,
# so every build and ISA variant gives the same bits (outputs must be bit-identical across
# placements and ranks; DESIGN.md section 6).
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)

set(_sy_sanitizers "" address thread undefined)
if(NOT SWITCHYARD_SANITIZE IN_LIST _sy_sanitizers)
  message(FATAL_ERROR "SWITCHYARD_SANITIZE='${SWITCHYARD_SANITIZE}': use address, thread or undefined")
endif()
if(SWITCHYARD_SANITIZE)
  set(_sy_flag "-fsanitize=${SWITCHYARD_SANITIZE}")
  if(SWITCHYARD_SANITIZE STREQUAL "address")
    set(_sy_flag "-fsanitize=address,undefined")
  endif()
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${_sy_flag}> $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(${_sy_flag})
endif()

# libFuzzer: coverage instrumentation everywhere, the fuzzer's main only in the fuzz_* targets.
if(SWITCHYARD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SWITCHYARD_FUZZ needs clang (CC=clang CXX=clang++), not ${CMAKE_CXX_COMPILER_ID}")
  endif()
  target_compile_options(switchyard_build_flags INTERFACE -fsanitize=fuzzer-no-link)
endif()
