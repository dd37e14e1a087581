#include "placement/io/placement_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"

namespace switchyard::placement {
namespace {

using Json = nlohmann::json;

// Typed field access with errors that name the file and the JSON path.
class Reader {
 public:
  explicit Reader(absl::string_view file) : file_(file) {}

  absl::Status Error(absl::string_view path, absl::string_view problem) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", path, ": ", problem));
  }

  absl::StatusOr<const Json*> Field(const Json& object, absl::string_view name,
                                    absl::string_view path) const {
    if (!object.is_object()) return Error(path, "expected an object");
    auto it = object.find(name);
    if (it == object.end()) return Error(absl::StrCat(path, ".", name), "missing");
    return &*it;
  }

  absl::StatusOr<int> Int(const Json& object, absl::string_view name, absl::string_view path) const {
    SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
    if (!v->is_number_integer()) return Error(absl::StrCat(path, ".", name), "expected an integer");
    const int64_t x = v->get<int64_t>();
    if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) {
      return Error(absl::StrCat(path, ".", name), "out of range");
    }
    return static_cast<int>(x);
  }

  absl::StatusOr<double> Number(const Json& object, absl::string_view name,
                                absl::string_view path) const {
    SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
    if (!v->is_number()) return Error(absl::StrCat(path, ".", name), "expected a number");
    return v->get<double>();
  }

  absl::StatusOr<const Json*> Array(const Json& object, absl::string_view name,
                                    absl::string_view path) const {
    SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
    if (!v->is_array()) return Error(absl::StrCat(path, ".", name), "expected an array");
    return v;
  }

 private:
  absl::string_view file_;
};

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
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON (byte ", e.byte,
                                                   "): ", e.what()));
  }
  Reader rd(file);
  if (!doc.is_object()) return rd.Error("$", "expected an object");
  SY_ASSIGN_OR_RETURN(const Json* format, rd.Field(doc, "format", "$"));
  if (!format->is_string() || format->get<std::string>() != kPlacementFormat) {
    return rd.Error("$.format", absl::StrCat("expected \"", kPlacementFormat, "\""));
  }
  SY_ASSIGN_OR_RETURN(const int ranks, rd.Int(doc, "ranks", "$"));
  SY_ASSIGN_OR_RETURN(const int nodes, rd.Int(doc, "nodes", "$"));
  SY_ASSIGN_OR_RETURN(const int slots, rd.Int(doc, "slots_per_rank", "$"));
  SY_ASSIGN_OR_RETURN(const int experts, rd.Int(doc, "experts", "$"));
  auto topology = Topology::Create(ranks, nodes, slots);
  if (!topology.ok()) return rd.Error("$", topology.status().message());
  if (experts < 1) return rd.Error("$.experts", "must be >= 1");
  Placement placement{*topology, experts, {}};
  SY_ASSIGN_OR_RETURN(const Json* layers, rd.Array(doc, "layers", "$"));
  for (size_t l = 0; l < layers->size(); ++l) {
    const std::string lpath = absl::StrCat("$.layers[", l, "]");
    const Json& jl = (*layers)[l];
    SY_ASSIGN_OR_RETURN(const int layer_id, rd.Int(jl, "layer", lpath));
    if (!placement.layers.empty() && layer_id <= placement.layers.back().layer_id) {
      return rd.Error(lpath, "layer ids must ascend without repeats");
    }
    SY_ASSIGN_OR_RETURN(const Json* jranks, rd.Array(jl, "ranks", lpath));
    if (static_cast<int>(jranks->size()) != ranks) {
      return rd.Error(absl::StrCat(lpath, ".ranks"),
                      absl::StrCat("lists ", jranks->size(), " ranks, expected ", ranks));
    }
    LayerPlacement layer{layer_id, std::vector<std::vector<Replica>>(ranks)};
    for (int r = 0; r < ranks; ++r) {
      const std::string rpath = absl::StrCat(lpath, ".ranks[", r, "]");
      const Json& jr = (*jranks)[r];
      if (!jr.is_array()) return rd.Error(rpath, "expected an array of replicas");
      for (size_t i = 0; i < jr.size(); ++i) {
        const std::string path = absl::StrCat(rpath, "[", i, "]");
        SY_ASSIGN_OR_RETURN(const int expert, rd.Int(jr[i], "expert", path));
        SY_ASSIGN_OR_RETURN(const double share, rd.Number(jr[i], "share", path));
        layer.ranks[r].push_back({expert, share});
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
