// Status helpers shared by every Switchyard module.
//
// Errors are values (absl::Status / absl::StatusOr<T>); these macros propagate them. Abseil
// 20220623 (Debian 12) has no status macros of its own. SY_CHECK aborts and is reserved for
// broken internal invariants, never for bad input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SY_INTERNAL_CONCAT_IMPL(a, b) a##b
#define SY_INTERNAL_CONCAT(a, b) SY_INTERNAL_CONCAT_IMPL(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define SY_RETURN_IF_ERROR(expr)                                  \
  do {                                                            \
    if (::absl::Status sy_status_ = (expr); !sy_status_.ok()) {   \
      return sy_status_;                                          \
    }                                                             \
  } while (false)

// `SY_ASSIGN_OR_RETURN(T x, StatusOrExpr);` declares/assigns `x` from the value of a
// StatusOr, or returns its status from the enclosing function.
#define SY_ASSIGN_OR_RETURN(lhs, expr) \
  SY_INTERNAL_ASSIGN_OR_RETURN(SY_INTERNAL_CONCAT(sy_statusor_, __LINE__), lhs, expr)
#define SY_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

// Aborts with file and line when an internal invariant is broken.
#define SY_CHECK(cond)                                                                  \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: SY_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
