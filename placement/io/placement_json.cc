#include "placement/io/placement_json.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::placement {
namespace {

}  // namespace

std::string PlacementToJson(const Placement& placement, absl::string_view policy,
                            const std::optional<PlacementSummary>& summary) {
  Json layers = Json::array();
  for (const LayerPlacement& layer : placement.layers) {
    Json ranks = Json::array();
    for (const auto& slots : layer.ranks) {
      Json replicas = Json::array();
      for (const Replica& rep : slots) {
        replicas.push_back({{"expert", rep.expert}, {"share", rep.share}});
      }
      ranks.push_back(std::move(replicas));
    }
    layers.push_back({{"layer", layer.layer_id}, {"ranks", std::move(ranks)}});
  }
  Json out = {{"format", kPlacementFormat},
              {"policy", policy},
              {"ranks", placement.topology.ranks()},
              {"nodes", placement.topology.nodes()},
              {"slots_per_rank", placement.topology.slots_per_rank()},
              {"experts", placement.num_experts},
              {"layers", std::move(layers)}};
  if (summary) {
    out["summary"] = {{"balancedness_mean", summary->balancedness_mean},
                      {"balancedness_min", summary->balancedness_min},
                      {"moved_replicas", summary->moved_replicas},
                      {"plan_ms", summary->plan_ms}};
  }
  return out.dump(1) + "\n";
}

absl::StatusOr<Placement> ParsePlacementJson(absl::string_view text, absl::string_view file) {
  SY_ASSIGN_OR_RETURN(const Json doc, ParseJson(text, file));
  const JsonReader rd(file);
  SY_RETURN_IF_ERROR(rd.Object(doc, "$"));
  SY_ASSIGN_OR_RETURN(const std::string format, rd.StringField(doc, "format", "$"));
  if (format != kPlacementFormat) {
    return rd.Error("$.format", absl::StrCat("expected \"", kPlacementFormat, "\", got \"", EchoValue(format), "\""));
  }
  SY_ASSIGN_OR_RETURN(const int ranks, rd.IntField(doc, "ranks", "$", 1, kMaxRanks));
  SY_ASSIGN_OR_RETURN(const int nodes, rd.IntField(doc, "nodes", "$", 1, kMaxRanks));
  SY_ASSIGN_OR_RETURN(const int slots, rd.IntField(doc, "slots_per_rank", "$", 1, kMaxSlotsPerRank));
  SY_ASSIGN_OR_RETURN(const int experts, rd.IntField(doc, "experts", "$", 1, kMaxExperts));
  auto topology = Topology::Create(ranks, nodes, slots);
  if (!topology.ok()) return rd.Error("$", topology.status().message());
  Placement placement{*topology, experts, {}};
  SY_ASSIGN_OR_RETURN(const Json* layers, rd.ArrayField(doc, "layers", "$"));
  for (size_t l = 0; l < layers->size(); ++l) {
    const std::string lpath = JsonPath("$.layers", l);
    const Json& jl = (*layers)[l];
    SY_ASSIGN_OR_RETURN(const int layer_id, rd.IntField(jl, "layer", lpath, 0));
    if (!placement.layers.empty() && layer_id <= placement.layers.back().layer_id) {
      return rd.Error(lpath, "layer ids must ascend without repeats");
    }
    SY_ASSIGN_OR_RETURN(const Json* jranks, rd.ArrayField(jl, "ranks", lpath));
    if (static_cast<int64_t>(jranks->size()) != ranks) {
      return rd.Error(JsonPath(lpath, "ranks"), absl::StrCat("lists ", jranks->size(), " ranks, expected ", ranks));
    }
    LayerPlacement layer{layer_id, std::vector<std::vector<Replica>>(ranks)};
    for (int r = 0; r < ranks; ++r) {
      const std::string rpath = JsonPath(JsonPath(lpath, "ranks"), r);
      const Json& jr = (*jranks)[r];
      SY_RETURN_IF_ERROR(rd.Array(jr, rpath));
      if (static_cast<int64_t>(jr.size()) > slots) {
        return rd.Error(rpath, absl::StrCat(jr.size(), " replicas in ", slots, " slots"));
      }
      for (size_t i = 0; i < jr.size(); ++i) {
        const std::string path = JsonPath(rpath, i);
        SY_ASSIGN_OR_RETURN(const int expert, rd.IntField(jr[i], "expert", path, 0, experts - 1));
        // Up to 1e-9 above 1 is floating-point rounding of a lone replica's share (files
        // written before planners clamped them): read as 1.
        SY_ASSIGN_OR_RETURN(const double share, rd.NumberField(jr[i], "share", path, 0, 1 + 1e-9));
        layer.ranks[r].push_back({expert, std::min(share, 1.0)});
      }
    }
    placement.layers.push_back(std::move(layer));
  }
  if (placement.layers.empty()) return rd.Error("$.layers", "no layers");
  if (absl::Status valid = ValidatePlacement(placement); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", valid.message()));
  }
  return placement;
}

absl::StatusOr<Placement> ReadPlacementJson(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParsePlacementJson(text, path);
}

}  // namespace switchyard::placement
