#include "cluster/slurm.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::cluster {
namespace {

absl::Status HostlistError(absl::string_view expression, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("hostlist '", EchoValue(expression), "': ", why));
}

// Splits at the commas outside brackets.
absl::StatusOr<std::vector<absl::string_view>> SplitTerms(absl::string_view expression) {
  std::vector<absl::string_view> terms;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= expression.size(); ++i) {
    const char ch = i < expression.size() ? expression[i] : ',';
    if (ch == '[') {
      if (++depth > 1) return HostlistError(expression, "nested '['");
    } else if (ch == ']') {
      if (--depth < 0) return HostlistError(expression, "']' without '['");
    } else if (ch == ',' && depth == 0) {
      if (i == start) return HostlistError(expression, "empty name");
      terms.push_back(expression.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) return HostlistError(expression, "'[' without ']'");
  return terms;
}

// The strings one bracket group's body stands for: "1-3,07" -> {"1","2","3","07"}.
absl::StatusOr<std::vector<std::string>> ExpandRanges(absl::string_view expression, absl::string_view body) {
  std::vector<std::string> out;
  for (absl::string_view range : absl::StrSplit(body, ',')) {
    std::vector<absl::string_view> ends = absl::StrSplit(range, absl::MaxSplits('-', 1));
    auto digits = [](absl::string_view s) {
      return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
    };
    if (!digits(ends[0]) || (ends.size() == 2 && !digits(ends[1]))) {
      return HostlistError(expression, absl::StrCat("'[", EchoValue(body), "]': ranges are N or N-M with up to 9 digits"));
    }
    int lo = 0, hi = 0;
    (void)absl::SimpleAtoi(ends[0], &lo);
    hi = lo;
    if (ends.size() == 2) (void)absl::SimpleAtoi(ends[1], &hi);
    if (hi < lo) return HostlistError(expression, absl::StrCat("range ", range, " ends below its start"));
    if (static_cast<int64_t>(out.size()) + (hi - lo) + 1 > kMaxHostlistNames) {
      return HostlistError(expression, absl::StrCat("more than ", kMaxHostlistNames, " names"));
    }
    const int width = static_cast<int>(ends[0].size());
    for (int v = lo; v <= hi; ++v) out.push_back(absl::StrFormat("%0*d", width, v));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandHostlist(absl::string_view expression) {
  if (expression.empty()) return HostlistError(expression, "empty");
  if (expression.size() > kMaxHostlistBytes) {
    return HostlistError(expression, absl::StrCat(expression.size(), " bytes, more than ", kMaxHostlistBytes));
  }
  for (char ch : expression) {
    if (ch < 0x21 || ch > 0x7e) return HostlistError(expression, "node names are printable ASCII without spaces");
  }
  SY_ASSIGN_OR_RETURN(std::vector<absl::string_view> terms, SplitTerms(expression));
  std::vector<std::string> names;
  for (absl::string_view term : terms) {
    // The term's product: each bracket group multiplies the names built so far.
    std::vector<std::string> partial = {""};
    size_t i = 0;
    while (i < term.size()) {
      const size_t open = term.find('[', i);
      const absl::string_view literal = term.substr(i, open == absl::string_view::npos ? absl::string_view::npos : open - i);
      for (std::string& p : partial) absl::StrAppend(&p, literal);
      if (!partial.empty() && partial[0].size() > kMaxNodeNameBytes) {  // before any product grows
        return HostlistError(expression, absl::StrCat("a node name of more than ", kMaxNodeNameBytes, " bytes"));
      }
      if (open == absl::string_view::npos) break;
      const size_t close = term.find(']', open);  // SplitTerms checked it is there
      SY_ASSIGN_OR_RETURN(std::vector<std::string> values, ExpandRanges(expression, term.substr(open + 1, close - open - 1)));
      if (static_cast<int64_t>(partial.size()) * static_cast<int64_t>(values.size()) + static_cast<int64_t>(names.size()) >
          kMaxHostlistNames) {
        return HostlistError(expression, absl::StrCat("more than ", kMaxHostlistNames, " names"));
      }
      std::vector<std::string> next;
      next.reserve(partial.size() * values.size());
      for (const std::string& p : partial) {
        for (const std::string& v : values) next.push_back(absl::StrCat(p, v));
      }
      partial = std::move(next);
      i = close + 1;
    }
    if (static_cast<int64_t>(names.size() + partial.size()) > kMaxHostlistNames) {
      return HostlistError(expression, absl::StrCat("more than ", kMaxHostlistNames, " names"));
    }
    for (std::string& p : partial) {
      if (p.empty()) return HostlistError(expression, "empty name");
      if (p.size() > kMaxNodeNameBytes) {
        return HostlistError(expression, absl::StrCat("a node name of ", p.size(), " bytes, more than ", kMaxNodeNameBytes));
      }
      names.push_back(std::move(p));
    }
  }
  return names;
}

absl::StatusOr<std::vector<int>> ExpandTasksPerNode(absl::string_view spec) {
  auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("tasks per node '", EchoValue(spec), "': ", why));
  };
  if (spec.empty()) return error("empty");
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    int count = 0, repeat = 1;
    std::vector<absl::string_view> fields = absl::StrSplit(part, absl::MaxSplits("(x", 1));
    if (!absl::SimpleAtoi(fields[0], &count) || count < 1 || count > kMaxHostlistNames ||
        (fields.size() == 2 && (!absl::ConsumeSuffix(&fields[1], ")") || !absl::SimpleAtoi(fields[1], &repeat) || repeat < 1))) {
      return error(absl::StrCat("'", EchoValue(part), "' is not COUNT or COUNT(xREPEAT) with both in 1..", kMaxHostlistNames));
    }
    if (static_cast<int64_t>(out.size()) + repeat > kMaxHostlistNames) {
      return error(absl::StrCat("more than ", kMaxHostlistNames, " nodes"));
    }
    out.insert(out.end(), repeat, count);
  }
  return out;
}

int SlurmStep::FirstRankOf(int node) const {
  return static_cast<int>(std::accumulate(tasks_per_node.begin(), tasks_per_node.begin() + node, int64_t{0}));
}

int SlurmStep::tasks() const { return FirstRankOf(static_cast<int>(tasks_per_node.size())); }

absl::StatusOr<std::optional<SlurmStep>> SlurmStepFromEnvironment(int tasks) {
  // The first of each pair that is set: a step's own variables win over the job's.
  auto first = [](const char* a, const char* b) -> std::pair<const char*, const char*> {
    if (const char* v = std::getenv(a)) return {a, v};
    if (const char* v = std::getenv(b)) return {b, v};
    return {a, nullptr};
  };
  const auto [list_var, list] = first("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST");
  const auto [tpn_var, tpn] = first("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE");
  const char* node_id = std::getenv("SLURM_NODEID");
  if (list == nullptr || tpn == nullptr || node_id == nullptr) return std::optional<SlurmStep>();
  SlurmStep step;
  auto named = [](const char* var, const absl::Status& s) {
    return absl::InvalidArgumentError(absl::StrCat(var, ": ", s.message()));
  };
  auto names = ExpandHostlist(list);
  if (!names.ok()) return named(list_var, names.status());
  auto counts = ExpandTasksPerNode(tpn);
  if (!counts.ok()) return named(tpn_var, counts.status());
  step.node_names = *std::move(names);
  step.nodes_from = absl::StrCat(list_var, "='", EchoValue(list), "'");
  step.tasks_per_node = *std::move(counts);
  if (step.node_names.size() != step.tasks_per_node.size()) {
    return absl::InvalidArgumentError(absl::StrCat(list_var, "='", EchoValue(list), "' names ", step.node_names.size(), " nodes but ",
                                                   tpn_var, "='", EchoValue(tpn), "' counts tasks on ", step.tasks_per_node.size()));
  }
  const int64_t total = std::accumulate(step.tasks_per_node.begin(), step.tasks_per_node.end(), int64_t{0});
  if (total > kMaxHostlistNames) {
    return absl::InvalidArgumentError(absl::StrCat(tpn_var, "='", EchoValue(tpn), "' places ", total, " tasks, more than ",
                                                   kMaxHostlistNames));
  }
  if (!absl::SimpleAtoi(node_id, &step.node_id) || step.node_id < 0 ||
      step.node_id >= static_cast<int>(step.node_names.size())) {
    return absl::InvalidArgumentError(absl::StrCat("SLURM_NODEID='", EchoValue(node_id), "' is not a node of ", list_var, "='",
                                                   EchoValue(list), "' (0..", step.node_names.size() - 1, ")"));
  }
  if (const char* name = std::getenv("SLURMD_NODENAME"); name != nullptr && step.node_names[step.node_id] != name) {
    return absl::InvalidArgumentError(absl::StrCat("SLURMD_NODENAME='", EchoValue(name), "' but SLURM_NODEID=", step.node_id,
                                                   " is node '", EchoValue(step.node_names[step.node_id]), "' of ", list_var,
                                                   "='", EchoValue(list), "'"));
  }
  if (tasks >= 0 && step.tasks() != tasks) {
    return absl::InvalidArgumentError(absl::StrCat(tpn_var, "='", EchoValue(tpn), "' places ", step.tasks(),
                                                   " tasks but SLURM_NTASKS=", tasks));
  }
  return std::optional<SlurmStep>(std::move(step));
}

}  // namespace switchyard::cluster
