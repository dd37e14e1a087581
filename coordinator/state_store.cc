#include "coordinator/state_store.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "coordinator/policy.h"
#include "rpc/convert.h"
#include "rpc/validate.h"

namespace switchyard::coordinator {
namespace {

namespace types = switchyard::types::v1;
namespace control = switchyard::control::v1;

constexpr size_t kMaxJobId = 256;

// A member of the state object as a message (protobuf's JSON mapping checks its types).
template <typename Message>
absl::Status ReadMessage(const JsonReader& rd, const Json& v, absl::string_view path, Message* m) {
  SY_RETURN_IF_ERROR(rd.Object(v, path));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(v.dump(), m, options);
  if (!status.ok()) return rd.Error(path, EchoValue(status.ToString(), 200));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<placement::Placement>> ReadPlacement(const JsonReader& rd, const Json& doc, const char* key,
                                                                  int64_t* epoch) {
  SY_ASSIGN_OR_RETURN(const Json* v, rd.Optional(doc, key, "$"));
  if (v == nullptr) return std::optional<placement::Placement>();
  const std::string path = JsonPath("$", key);
  types::Placement p;
  SY_RETURN_IF_ERROR(ReadMessage(rd, *v, path, &p));
  *epoch = p.epoch();
  auto out = rpc::FromProto(p);
  if (!out.ok()) return rd.Error(path, out.status().message());
  return std::optional<placement::Placement>(*std::move(out));
}

}  // namespace

absl::Status ValidateState(const PersistedState& s) {
  auto bad = [](absl::string_view field, absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
  };
  if (s.job_id.size() > kMaxJobId) return bad("job_id", absl::StrCat(s.job_id.size(), " bytes (at most ", kMaxJobId, ")"));
  if (s.model.has_value() != s.committed.has_value()) return bad("model", "a job needs both its model and its committed placement");
  if (s.committed_epoch < 0) return bad("committed.epoch", absl::StrCat(s.committed_epoch, " is negative"));
  if (s.policy) SY_RETURN_IF_ERROR(ValidatePolicy(*s.policy));
  if (!s.model) {
    if (s.target || !s.transfers.empty() || !s.pins.empty() || !s.drained.empty()) {
      return bad("$", "a target, transfers, pins or drains without a job");
    }
    return absl::OkStatus();
  }
  if (absl::Status m = rpc::ValidateModelShape(*s.model); !m.ok()) return bad("model", m.message());
  const placement::Placement& committed = *s.committed;
  const std::vector<int> layers(s.model->moe_layers().begin(), s.model->moe_layers().end());
  if (committed.num_experts != s.model->num_experts()) {
    return bad("committed.experts", absl::StrCat(committed.num_experts, ", the model has ", s.model->num_experts()));
  }
  for (int layer : layers) {
    if (committed.FindLayer(layer) == nullptr) return bad("committed", absl::StrCat("no layer ", layer, " of the model"));
  }
  if (s.target) {
    if (s.target_epoch <= s.committed_epoch) {
      return bad("target.epoch", absl::StrCat(s.target_epoch, " is not after the committed epoch ", s.committed_epoch));
    }
    if (!(s.target->topology == committed.topology) || s.target->num_experts != committed.num_experts) {
      return bad("target", "its cluster or experts differ from the committed placement's");
    }
    for (int layer : layers) {
      if (s.target->FindLayer(layer) == nullptr) return bad("target", absl::StrCat("no layer ", layer, " of the model"));
    }
  } else if (!s.transfers.empty()) {
    return bad("transfers", "listed without a target epoch");
  }
  const int R = committed.topology.ranks();
  for (const control::Transfer& t : s.transfers) {
    if (std::find(layers.begin(), layers.end(), t.layer()) == layers.end() || t.expert() < 0 ||
        t.expert() >= committed.num_experts || t.from() < 0 || t.from() >= R || t.to() < 0 || t.to() >= R ||
        t.from() == t.to()) {
      return bad("transfers", absl::StrCat("layer ", t.layer(), " expert ", t.expert(), " from rank ", t.from(), " to rank ",
                                           t.to(), " is not a transfer of this job (", R, " ranks, ", committed.num_experts,
                                           " experts)"));
    }
  }
  if (s.target_scratch_moves < -1) return bad("target_scratch_moved_replicas", absl::StrCat(s.target_scratch_moves, " < -1"));
  placement::Constraints constraints;
  for (const types::Pin& p : s.pins) {
    if (absl::Status v = rpc::ValidatePin(p); !v.ok()) return bad("pins", v.message());
    constraints.pins.push_back({p.layer(), p.expert(), p.rank()});
  }
  constraints.drained_ranks = s.drained;
  std::vector<int> drained = s.drained;
  std::sort(drained.begin(), drained.end());
  if (std::adjacent_find(drained.begin(), drained.end()) != drained.end()) return bad("drained", "a rank listed twice");
  if (absl::Status v = placement::ValidateConstraints(constraints, committed.topology, committed.num_experts, layers); !v.ok()) {
    return bad("pins/drained", v.message());
  }
  return absl::OkStatus();
}

std::string StateToJson(const PersistedState& s) {
  Json j;
  j["format"] = kStateFormat;
  j["job_id"] = s.job_id;
  if (s.model) j["model"] = Json::parse(rpc::MessageToJsonText(*s.model));
  if (s.committed) j["committed"] = Json::parse(rpc::MessageToJsonText(rpc::ToProto(*s.committed, s.committed_epoch)));
  if (s.target) j["target"] = Json::parse(rpc::MessageToJsonText(rpc::ToProto(*s.target, s.target_epoch)));
  j["transfers"] = Json::array();
  for (const control::Transfer& t : s.transfers) j["transfers"].push_back(Json::parse(rpc::MessageToJsonText(t)));
  j["pins"] = Json::array();
  for (const types::Pin& p : s.pins) j["pins"].push_back(Json::parse(rpc::MessageToJsonText(p)));
  j["drained"] = s.drained;
  j["replan_pending"] = s.replan_pending;
  j["target_scratch_moved_replicas"] = s.target_scratch_moves;
  j["target_nonce"] = std::to_string(s.target_nonce);  // 64 bits: a string, as protobuf's JSON does
  if (s.policy) j["policy"] = Json::parse(rpc::MessageToJsonText(*s.policy));
  return j.dump(1, ' ', false, Json::error_handler_t::replace) + "\n";
}

absl::StatusOr<PersistedState> ParseState(absl::string_view text, absl::string_view file) {
  SY_ASSIGN_OR_RETURN(const Json j, ParseJson(text, file));
  const JsonReader rd(file);
  SY_RETURN_IF_ERROR(rd.Object(j, "$"));
  SY_ASSIGN_OR_RETURN(const std::string format, rd.StringFieldOr(j, "format", "$", ""));
  if (format != kStateFormat) return rd.Error("$.format", absl::StrCat("expected \"", kStateFormat, "\""));
  static const std::set<std::string> kKeys = {"format", "job_id", "model", "committed", "target", "transfers", "pins",
                                              "drained", "replan_pending", "target_scratch_moved_replicas", "target_nonce",
                                              "policy"};
  for (const auto& [key, value] : j.items()) {
    if (!kKeys.count(key)) return rd.Error(JsonPath("$", EchoValue(key)), "unknown key (a state written by another version?)");
  }
  PersistedState s;
  SY_ASSIGN_OR_RETURN(s.job_id, rd.StringFieldOr(j, "job_id", "$", ""));
  SY_ASSIGN_OR_RETURN(const Json* model, rd.Optional(j, "model", "$"));
  if (model != nullptr) SY_RETURN_IF_ERROR(ReadMessage(rd, *model, "$.model", &s.model.emplace()));
  SY_ASSIGN_OR_RETURN(s.committed, ReadPlacement(rd, j, "committed", &s.committed_epoch));
  SY_ASSIGN_OR_RETURN(s.target, ReadPlacement(rd, j, "target", &s.target_epoch));
  SY_ASSIGN_OR_RETURN(const Json* transfers, rd.ArrayFieldOr(j, "transfers", "$"));
  for (size_t i = 0; transfers != nullptr && i < transfers->size(); ++i) {
    SY_RETURN_IF_ERROR(ReadMessage(rd, (*transfers)[i], JsonPath("$.transfers", i), &s.transfers.emplace_back()));
  }
  SY_ASSIGN_OR_RETURN(const Json* pins, rd.ArrayFieldOr(j, "pins", "$"));
  for (size_t i = 0; pins != nullptr && i < pins->size(); ++i) {
    SY_RETURN_IF_ERROR(ReadMessage(rd, (*pins)[i], JsonPath("$.pins", i), &s.pins.emplace_back()));
  }
  SY_ASSIGN_OR_RETURN(const Json* drained, rd.ArrayFieldOr(j, "drained", "$"));
  for (size_t i = 0; drained != nullptr && i < drained->size(); ++i) {
    SY_ASSIGN_OR_RETURN(s.drained.emplace_back(), rd.Int((*drained)[i], JsonPath("$.drained", i), 0, placement::kMaxRanks - 1));
  }
  SY_ASSIGN_OR_RETURN(s.replan_pending, rd.BoolFieldOr(j, "replan_pending", "$", false));
  SY_ASSIGN_OR_RETURN(s.target_scratch_moves, rd.IntFieldOr(j, "target_scratch_moved_replicas", "$", -1, -1, JsonReader::kIntMax));
  SY_ASSIGN_OR_RETURN(const std::string nonce, rd.StringFieldOr(j, "target_nonce", "$", "0"));
  if (!absl::SimpleAtoi(nonce, &s.target_nonce)) {
    return rd.Error("$.target_nonce", absl::StrCat("'", EchoValue(nonce), "' is not an unsigned 64-bit number"));
  }
  SY_ASSIGN_OR_RETURN(const Json* policy, rd.Optional(j, "policy", "$"));
  if (policy != nullptr) SY_RETURN_IF_ERROR(ReadMessage(rd, *policy, "$.policy", &s.policy.emplace()));
  if (absl::Status valid = ValidateState(s); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", valid.message()));
  }
  return s;
}

absl::StatusOr<std::optional<PersistedState>> ReadState(const std::string& dir) {
  const std::string path = dir + "/state.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<PersistedState>();
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  SY_ASSIGN_OR_RETURN(PersistedState s, ParseState(text, path));
  return std::optional<PersistedState>(std::move(s));
}

absl::Status WriteState(const std::string& dir, const PersistedState& state) {
  return WriteFileAtomically(dir + "/state.json", StateToJson(state));
}

}  // namespace switchyard::coordinator
