// The coordinator's HTTP views besides /metrics: the live dashboard page at / and the
// read-only JSON and SVG endpoints behind it (docs/coordinator.md, "Dashboard"). Served by
// CoordinatorServer on the metrics port; nothing here changes the cluster or shows the token.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "coordinator/coordinator.h"

namespace switchyard::coordinator {

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

// GET `path` with the URL query `query` (e.g. "layer=3"): 200 with the page, JSON or SVG; 400
// naming a bad parameter; 404 for an unknown path or layer.
HttpResponse ServeDashboard(Coordinator& core, absl::string_view path, absl::string_view query);

// The page (dashboard.html, embedded at build time).
absl::string_view DashboardPage();

}  // namespace switchyard::coordinator
