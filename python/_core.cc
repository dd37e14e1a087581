// switchyard._core: the Python binding of Switchyard's C++ libraries (pybind11). The public
// API is the pure-Python package around it (python/switchyard/): this module keeps to plain
// types (numpy arrays, raw buffer addresses, str, int, dict) so that it needs no libtorch.
//
// Errors: every absl::Status becomes a Python exception by its code (ToPython below), with
// the C++ message unchanged. Long calls (planning, a layer step, RPCs) release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cluster/connect.h"
#include "comm/communicator.h"
#include "common/file_util.h"
#include "common/status.h"
#include "kernels/cpu_isa.h"
#include "kernels/types.h"
#include "model/model.h"
#include "placement/io/load_csv.h"
#include "placement/io/placement_json.h"
#include "placement/metrics.h"
#include "placement/planner.h"
#include "placement/routing.h"
#include "rpc/convert.h"
#include "rpc/rpc_util.h"
#include "switchyard/admin/v1/admin.grpc.pb.h"
#include "worker/driver.h"
#include "worker/moe_layer.h"
#include "worker/weights.h"
#include "worker/workload.h"

namespace py = pybind11;

namespace switchyard::python {
namespace admin = switchyard::admin::v1;
namespace types = switchyard::types::v1;
}  // namespace switchyard::python

namespace switchyard::python {
namespace {

// ---- Errors ------------------------------------------------------------------------------------

// A Status on its way to Python: thrown anywhere (also where the GIL is released), turned
// into the Python exception by the translator registered in the module (with the GIL held).
struct PythonError : std::exception {
  PyObject* type;
  std::string message;
  PythonError(PyObject* t, std::string m) : type(t), message(std::move(m)) {}
  const char* what() const noexcept override { return message.c_str(); }
};

[[noreturn]] void Raise(const absl::Status& status) {
  PyObject* type = PyExc_RuntimeError;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
      type = PyExc_ValueError;
      break;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      type = PyExc_PermissionError;
      break;
    case absl::StatusCode::kUnavailable:
      type = PyExc_ConnectionError;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      type = PyExc_TimeoutError;
      break;
    case absl::StatusCode::kResourceExhausted:
      type = PyExc_MemoryError;
      break;
    default:
      break;
  }
  throw PythonError(type, std::string(status.message()));
}

void Check(const absl::Status& status) {
  if (!status.ok()) Raise(status);
}

template <typename T>
T Take(absl::StatusOr<T> value) {
  if (!value.ok()) Raise(value.status());
  return std::move(value).value();
}

// ---- Placement ---------------------------------------------------------------------------------

// [layers, experts] float64 array -> LoadMatrix with the given layer ids (default 0..L-1).
placement::LoadMatrix ToLoad(const py::array_t<double, py::array::c_style | py::array::forcecast>& loads,
                             const std::optional<std::vector<int>>& layer_ids) {
  if (loads.ndim() != 2) {
    throw py::value_error(absl::StrCat("loads: expected a 2-D array [layers, experts], got ", loads.ndim(), " dimensions"));
  }
  const py::ssize_t L = loads.shape(0), E = loads.shape(1);
  if (L < 1 || E < 1) throw py::value_error(absl::StrCat("loads: shape [", L, ", ", E, "] is empty"));
  placement::LoadMatrix m;
  if (layer_ids) {
    if (static_cast<py::ssize_t>(layer_ids->size()) != L) {
      throw py::value_error(absl::StrCat("layers: ", layer_ids->size(), " layer ids for ", L, " rows of loads"));
    }
    m.layer_ids = *layer_ids;
  } else {
    for (int i = 0; i < L; ++i) m.layer_ids.push_back(i);
  }
  const double* data = loads.data();
  m.values.assign(L, std::vector<double>(E));
  for (py::ssize_t i = 0; i < L; ++i) std::memcpy(m.values[i].data(), data + i * E, E * sizeof(double));
  Check(m.Validate());
  return m;
}

py::array_t<double> FromLoad(const placement::LoadMatrix& m) {
  py::array_t<double> out({m.num_layers(), m.num_experts()});
  double* data = out.mutable_data();
  for (int i = 0; i < m.num_layers(); ++i) std::memcpy(data + static_cast<size_t>(i) * m.num_experts(), m.values[i].data(), m.num_experts() * sizeof(double));
  return out;
}

std::vector<int> LayerIds(const placement::Placement& p) {
  std::vector<int> ids;
  for (const auto& l : p.layers) ids.push_back(l.layer_id);
  return ids;
}

struct Score {
  double mean = 0, min = 0;
  std::vector<double> per_layer;
};

Score Balancedness(const placement::Placement& p, const py::array_t<double, py::array::c_style | py::array::forcecast>& loads,
                   const std::optional<std::vector<int>>& layer_ids) {
  const placement::LoadMatrix m = ToLoad(loads, layer_ids ? layer_ids : std::optional(LayerIds(p)));
  const placement::PlacementScore s = Take(placement::ScorePlacement(p, m));
  return {s.balancedness_mean, s.balancedness_min, s.per_layer};
}

// The placement and the planner's own time in seconds (what `switchyard plan` reports as plan_ms).
std::pair<placement::Placement, double> Plan(const py::array_t<double, py::array::c_style | py::array::forcecast>& loads,
                          const std::optional<std::vector<int>>& layer_ids, int ranks, int slots_per_rank, int nodes,
                          const std::string& policy, const placement::Placement* current, int max_moves,
                          double min_gain_per_move, double noise_z, int groups) {
  placement::PlanRequest request{Take(placement::Topology::Create(ranks, nodes, slots_per_rank)), ToLoad(loads, layer_ids),
                                 current, {}, {}};
  request.options.max_moves = max_moves;
  request.options.min_gain_per_move = min_gain_per_move;
  request.options.noise_z = noise_z;
  request.options.eplb_groups = groups;
  auto planner = Take(placement::CreatePlanner(policy));
  absl::StatusOr<placement::Placement> planned;
  const auto start = std::chrono::steady_clock::now();
  {
    py::gil_scoped_release release;
    planned = planner->Plan(request);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {Take(std::move(planned)), seconds};
}

// ---- Protobuf messages as plain Python objects ---------------------------------------------------

py::object FieldValue(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f, int index);

py::dict ToDict(const google::protobuf::Message& m) {
  py::dict out;
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  const google::protobuf::Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      py::list items;
      for (int j = 0; j < r->FieldSize(m, f); ++j) items.append(FieldValue(m, f, j));
      out[f->name().c_str()] = items;
    } else if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE && !r->HasField(m, f)) {
      out[f->name().c_str()] = py::none();
    } else {
      out[f->name().c_str()] = FieldValue(m, f, -1);
    }
  }
  return out;
}

py::object FieldValue(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f, int index) {
  using F = google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case F::CPPTYPE_INT32: return py::int_(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case F::CPPTYPE_INT64: return py::int_(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case F::CPPTYPE_UINT32: return py::int_(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case F::CPPTYPE_UINT64: return py::int_(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case F::CPPTYPE_DOUBLE: return py::float_(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case F::CPPTYPE_FLOAT: return py::float_(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case F::CPPTYPE_BOOL: return py::bool_(rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f));
    case F::CPPTYPE_ENUM: return py::str((rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name());
    case F::CPPTYPE_STRING: return py::str(rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
    case F::CPPTYPE_MESSAGE: return ToDict(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return py::none();
}

// The admin API (proto/switchyard/admin/v1/admin.proto), one method per RPC. Changing calls
// carry the bearer token; errors are the coordinator's, named by the address.
class AdminClient {
 public:
  AdminClient(std::string address, std::string token, const std::string& tls_ca_file, double timeout_s)
      : address_(std::move(address)), token_(std::move(token)), timeout_s_(timeout_s) {
    if (!(timeout_s > 0 && timeout_s <= 1e6)) throw py::value_error(absl::StrCat("timeout: ", timeout_s, " s must be in (0, 1e6]"));
    if (!token_.empty()) {
      if (absl::Status valid = rpc::ValidateToken(token_); !valid.ok()) throw py::value_error(absl::StrCat("token: ", valid.message()));
    }
    std::string ca;
    if (!tls_ca_file.empty()) ca = Take(ReadFile(tls_ca_file));
    stub_ = admin::Admin::NewStub(rpc::MakeChannel(address_, ca, rpc::kAdminConnectTimeout));
  }

  py::dict Status() { return Call(&admin::Admin::Stub::GetStatus, admin::GetStatusRequest{}, admin::ClusterStatus{}); }
  py::dict Placement(int layer) {
    admin::GetPlacementRequest req;
    req.set_layer(layer);
    req.set_all_layers(layer < 0);
    return Call(&admin::Admin::Stub::GetPlacement, req, admin::GetPlacementResponse{});
  }
  // The committed placement (every layer) as a Placement, e.g. `current` of a plan.
  placement::Placement CommittedPlacement() {
    admin::GetPlacementRequest req;
    req.set_layer(-1);
    req.set_all_layers(true);
    admin::GetPlacementResponse resp;
    grpc::Status s;
    {
      py::gil_scoped_release release;
      s = stub_->GetPlacement(Context().get(), req, &resp);
    }
    Check(rpc::FromGrpc(s, address_));
    return Take(rpc::FromProto(resp.placement()));
  }
  py::dict Load(int layer) {
    admin::GetLoadRequest req;
    req.set_layer(layer);
    req.set_all_layers(layer < 0);
    return Call(&admin::Admin::Stub::GetLoad, req, admin::GetLoadResponse{});
  }
  py::dict Rebalance(bool dry_run, int max_moves) {
    admin::RebalanceRequest req;
    req.set_dry_run(dry_run);
    req.set_max_moves(max_moves);
    return Call(&admin::Admin::Stub::Rebalance, req, admin::RebalanceResponse{});
  }
  py::dict Pin(bool pin, int expert, int rank, int layer) {
    admin::PinRequest req;
    req.mutable_pin()->set_layer(layer);
    req.mutable_pin()->set_expert(expert);
    req.mutable_pin()->set_rank(rank);
    return Call(pin ? &admin::Admin::Stub::Pin : &admin::Admin::Stub::Unpin, req, admin::ConstraintsResponse{});
  }
  py::dict Drain(bool drain, int rank, bool remove) {
    admin::DrainRequest req;
    req.set_rank(rank);
    req.set_remove(remove);
    return Call(drain ? &admin::Admin::Stub::Drain : &admin::Admin::Stub::Undrain, req, admin::ConstraintsResponse{});
  }
  // settings: "key=value" as the CLI's `switchyard policy` takes them (empty: read only).
  py::dict Policy(const std::vector<std::string>& settings) {
    types::Policy policy;
    {
      py::gil_scoped_release release;
      Check(rpc::FromGrpc(stub_->GetPolicy(Context().get(), {}, &policy), address_));
    }
    if (settings.empty()) return ToDict(policy);
    Check(rpc::ApplyPolicySettings(settings, policy));
    admin::SetPolicyRequest req;
    *req.mutable_policy() = policy;
    return Call(&admin::Admin::Stub::SetPolicy, req, types::Policy{});
  }
  // The buffered events after `after_seq`; with follow, also new ones until `follow_s` passes.
  py::list Events(int64_t after_seq, bool follow, double follow_s) {
    admin::WatchEventsRequest req;
    req.set_after_seq(after_seq);
    req.set_follow(follow);
    std::vector<admin::Event> events;
    grpc::Status s;
    {
      py::gil_scoped_release release;
      auto ctx = rpc::CallContext(absl::Seconds(follow ? follow_s : timeout_s_), token_);
      auto reader = stub_->WatchEvents(ctx.get(), req);
      admin::Event e;
      while (reader->Read(&e)) events.push_back(e);
      s = reader->Finish();
    }
    if (!(follow && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) Check(rpc::FromGrpc(s, address_));
    py::list out;
    for (const admin::Event& e : events) out.append(ToDict(e));
    return out;
  }
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const { return rpc::CallContext(absl::Seconds(timeout_s_), token_); }
  template <typename Method, typename Request, typename Response>
  py::dict Call(Method method, const Request& req, Response resp) {
    grpc::Status s;
    {
      py::gil_scoped_release release;
      s = ((*stub_).*method)(Context().get(), req, &resp);
    }
    Check(rpc::FromGrpc(s, address_));
    return ToDict(resp);
  }

  std::string address_, token_;
  double timeout_s_;
  std::unique_ptr<admin::Admin::Stub> stub_;
};

// ---- The data plane -----------------------------------------------------------------------------

// One communicator per backend per process, shared by every layer (a host framework makes one
// MoeLayer per MoE layer, all on the same ranks). Released by CloseCommunicators (atexit).
std::mutex comm_mu;
std::map<std::string, std::shared_ptr<comm::Communicator>>& Communicators() {
  static auto* comms = new std::map<std::string, std::shared_ptr<comm::Communicator>>;
  return *comms;
}

std::shared_ptr<comm::Communicator> SharedCommunicator(const std::string& backend, const std::string& rendezvous_dir,
                                                        double timeout_s) {
  std::lock_guard<std::mutex> lock(comm_mu);
  auto& slot = Communicators()[backend];
  if (!slot) {
    cluster::ConnectOptions options;
    options.backend = backend;
    options.rendezvous_dir = rendezvous_dir;
    options.timeout = absl::Seconds(timeout_s);
    absl::StatusOr<std::unique_ptr<comm::Communicator>> c;
    {
      py::gil_scoped_release release;
      c = cluster::Connect(options);
    }
    if (!c.ok()) {
      Communicators().erase(backend);
      Raise(c.status());
    }
    slot = std::move(*c);
  }
  return slot;
}

void CloseCommunicators() {
  std::lock_guard<std::mutex> lock(comm_mu);
  Communicators().clear();
}

model::ModelConfig ResolveModel(const std::string& spec, double scale, const std::string& weight_type) {
  const std::string full = spec.rfind("preset:", 0) == 0 || spec.find('/') != std::string::npos ||
                                   spec.find(".json") != std::string::npos
                               ? spec
                               : "preset:" + spec;
  model::ModelConfig m = Take(model::ScaleModel(Take(model::LoadModel(full)), scale));
  if (weight_type != "fp32" && weight_type != "bf16") {
    throw py::value_error(absl::StrCat("weight_type '", weight_type, "': use fp32 or bf16"));
  }
  m.weights = weight_type == "bf16" ? kernels::WeightType::kBF16 : kernels::WeightType::kF32;
  return m;
}

py::dict ModelDict(const model::ModelConfig& m) {
  py::dict d;
  d["name"] = m.name;
  d["model_type"] = m.model_type;
  d["experts"] = m.num_experts;
  d["top_k"] = m.top_k;
  d["hidden"] = m.hidden;
  d["expert_ffn"] = m.expert_ffn;
  d["shared_ffn"] = m.shared_ffn;
  d["moe_layers"] = m.moe_layers;
  return d;
}

// One rank's part of one MoE layer (worker/moe_layer.h) with its weights and placement.
class Layer {
 public:
  Layer(const std::string& model_spec, int layer_id, const std::string& backend, const std::string& weights,
        std::optional<placement::Placement> start, double scale, uint64_t seed, const std::string& weight_type,
        int threads, const std::string& shares, const std::string& rendezvous_dir, double timeout_s)
      : model_(ResolveModel(model_spec, scale, weight_type)), layer_id_(layer_id) {
    if (std::find(model_.moe_layers.begin(), model_.moe_layers.end(), layer_id) == model_.moe_layers.end()) {
      throw py::value_error(absl::StrCat("layer ", layer_id, " is not a MoE layer of ", model_.name, " (its MoE layers: ",
                                         model_.moe_layers.front(), "..", model_.moe_layers.back(), ")"));
    }
    if (threads < 0 || threads > 1024) throw py::value_error(absl::StrCat("threads ", threads, ": use 1..1024, or 0 for the default"));
    if (shares != "step" && shares != "epoch") throw py::value_error(absl::StrCat("shares '", shares, "': use step or epoch"));
    if (!(timeout_s > 0)) throw py::value_error(absl::StrCat("timeout: ", timeout_s, " s must be > 0"));
    comm_ = SharedCommunicator(backend, rendezvous_dir, timeout_s);
    const int R = comm_->size();
    if (start) {
      if (start->topology.ranks() != R) {
        throw py::value_error(absl::StrCat("placement: it is for ", start->topology.ranks(), " ranks, this job has ", R));
      }
      if (start->num_experts != model_.num_experts) {
        throw py::value_error(absl::StrCat("placement: it places ", start->num_experts, " experts, ", model_.name, " has ",
                                           model_.num_experts));
      }
      const placement::LayerPlacement* l = start->FindLayer(layer_id);
      if (l == nullptr) throw py::value_error(absl::StrCat("placement: it has no layer ", layer_id));
      placement_.topology = start->topology;
      placement_.num_experts = start->num_experts;
      placement_.layers = {*l};
    } else {
      const int slots = (model_.num_experts + R - 1) / R;
      placement_ = Take(placement::ContiguousPlacement(Take(placement::Topology::Create(R, 1, slots)), model_.num_experts, {layer_id}));
    }
    std::unique_ptr<worker::WeightSource> source =
        weights.empty() ? worker::SeededWeights(model_, seed) : Take(worker::CheckpointWeights(model_, weights));
    store_ = std::make_unique<worker::WeightStore>(model_, std::vector<int>{layer_id});
    {
      py::gil_scoped_release release;
      Check(store_->Load(placement_, comm_->rank(), *source));
    }
    auto table = std::make_shared<placement::RoutingTable>(Take(placement::RoutingTable::Build(placement_, 0)));
    layer_ = std::make_unique<worker::MoeLayer>(model_, *comm_, *store_, std::move(table),
                                                threads > 0 ? threads : kernels::DefaultCpuThreads());
    layer_->set_share_mode(shares == "step" ? worker::ShareMode::kStep : worker::ShareMode::kEpoch);
  }

  // hidden, out: [tokens, hidden] at the given addresses, fp32 or bf16 (`bf16`); router_logits
  // [tokens, experts] fp32. The caller (python/switchyard/layer.py) has checked shapes,
  // dtypes, devices and contiguity; out may alias hidden.
  void Forward(uintptr_t hidden, uintptr_t logits, int64_t tokens, uintptr_t out, bool bf16, uint64_t draw_key) {
    py::gil_scoped_release release;
    const int64_t n = tokens * model_.hidden;
    absl::Status s;
    if (!bf16) {
      s = layer_->Forward(layer_id_, reinterpret_cast<const float*>(hidden), reinterpret_cast<const float*>(logits), tokens,
                          reinterpret_cast<float*>(out), draw_key);
    } else {
      widened_.resize(n);
      const auto* h = reinterpret_cast<const kernels::bf16*>(hidden);
      for (int64_t i = 0; i < n; ++i) widened_[i] = kernels::Bf16ToFloat(h[i]);
      s = layer_->Forward(layer_id_, widened_.data(), reinterpret_cast<const float*>(logits), tokens, widened_.data(), draw_key);
      auto* o = reinterpret_cast<kernels::bf16*>(out);
      if (s.ok()) {
        for (int64_t i = 0; i < n; ++i) o[i] = kernels::FloatToBf16(widened_[i]);
      }
    }
    py::gil_scoped_acquire acquire;
    Check(s);
  }

  int rank() const { return comm_->rank(); }
  int world_size() const { return comm_->size(); }
  std::string backend() const { return std::string(comm_->backend()); }
  const model::ModelConfig& model() const { return model_; }
  const placement::Placement& placement() const { return placement_; }
  // Pairs this rank's gate chose / computed per expert since the last call (and resets them).
  py::dict TakeCounts() {
    const std::vector<worker::LayerCounts> w = layer_->counters().TakeWindow();
    py::dict d;
    d["chosen"] = w[0].chosen;
    d["processed"] = w[0].processed;
    return d;
  }

 private:
  model::ModelConfig model_;
  int layer_id_;
  std::shared_ptr<comm::Communicator> comm_;
  placement::Placement placement_;
  std::unique_ptr<worker::WeightStore> store_;
  std::unique_ptr<worker::MoeLayer> layer_;
  std::vector<float> widened_;
};

// The worker's synthetic inputs (worker/workload.h), so Python can drive the same tokens as
// switchyard-worker and compare outputs.
class Inputs {
 public:
  Inputs(const std::string& model_spec, double scale, const std::vector<std::string>& specs, int layers, uint64_t seed)
      : model_(ResolveModel(model_spec, scale, "fp32")), layers_(model_.moe_layers) {
    if (layers > 0 && layers < static_cast<int>(layers_.size())) layers_.resize(layers);
    workload_ = Take(worker::Workload::Create(specs, model_, layers_, seed));
  }
  py::array_t<float> Hidden(int step, int64_t first_token, int64_t tokens) const {
    py::array_t<float> out({tokens, model_.hidden});
    workload_->Hidden(step, first_token, tokens, out.mutable_data());
    return out;
  }
  py::array_t<float> Logits(int step, int layer_index, int64_t first_token, int64_t tokens) const {
    if (layer_index < 0 || layer_index >= static_cast<int>(layers_.size())) throw py::index_error("layer_index out of range");
    py::array_t<float> out({tokens, static_cast<int64_t>(model_.num_experts)});
    workload_->Logits(step, layer_index, first_token, tokens, out.mutable_data());
    return out;
  }
  const std::vector<int>& layers() const { return layers_; }

 private:
  model::ModelConfig model_;
  std::vector<int> layers_;
  std::unique_ptr<worker::Workload> workload_;
};

}  // namespace
}  // namespace switchyard::python

PYBIND11_MODULE(_core, m) {
  using namespace switchyard;
  using namespace switchyard::python;
  m.doc() = "Switchyard's C++ core (use the switchyard package, not this module)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const PythonError& e) {
      PyErr_SetString(e.type, e.message.c_str());
    }
  });

  py::class_<Score>(m, "Balancedness")
      .def_readonly("mean", &Score::mean)
      .def_readonly("min", &Score::min)
      .def_readonly("per_layer", &Score::per_layer)
      .def("__repr__", [](const Score& s) { return absl::StrCat("Balancedness(mean=", s.mean, ", min=", s.min, ")"); });

  py::class_<placement::Placement>(m, "Placement")
      .def_static("from_json", [](const std::string& text) { return Take(placement::ParsePlacementJson(text, "placement JSON")); },
                  py::arg("text"))
      .def("to_json", [](const placement::Placement& p, const std::string& policy) {
             return placement::PlacementToJson(p, policy, std::nullopt);
           }, py::arg("policy") = "python")
      .def("balancedness", &Balancedness, py::arg("loads"), py::arg("layers") = py::none())
      .def("moved_replicas", [](const placement::Placement& p, const placement::Placement& other) {
             if (other.topology.ranks() != p.topology.ranks() || other.num_experts != p.num_experts || LayerIds(other) != LayerIds(p)) {
               throw py::value_error("moved_replicas: the placements differ in ranks, experts or layers");
             }
             return placement::MovedReplicas(other, p);
           }, py::arg("other"))
      .def_property_readonly("ranks", [](const placement::Placement& p) { return p.topology.ranks(); })
      .def_property_readonly("nodes", [](const placement::Placement& p) { return p.topology.nodes(); })
      .def_property_readonly("slots_per_rank", [](const placement::Placement& p) { return p.topology.slots_per_rank(); })
      .def_property_readonly("experts", [](const placement::Placement& p) { return p.num_experts; })
      .def_property_readonly("layers", &LayerIds)
      .def_property_readonly("total_replicas", &placement::Placement::TotalReplicas)
      .def("replicas", [](const placement::Placement& p, int layer_id) {
             const placement::LayerPlacement* l = p.FindLayer(layer_id);
             if (l == nullptr) throw py::value_error(absl::StrCat("no layer ", layer_id, " in this placement"));
             std::vector<std::vector<std::pair<int, double>>> out;
             for (const auto& rank : l->ranks) {
               auto& slots = out.emplace_back();
               for (const placement::Replica& r : rank) slots.emplace_back(r.expert, r.share);
             }
             return out;
           }, py::arg("layer"))
      .def(py::self == py::self)
      .def("__repr__", [](const placement::Placement& p) {
        return absl::StrCat("Placement(ranks=", p.topology.ranks(), ", nodes=", p.topology.nodes(), ", slots_per_rank=",
                            p.topology.slots_per_rank(), ", experts=", p.num_experts, ", layers=", p.layers.size(), ")");
      })
      .def(py::pickle([](const placement::Placement& p) { return placement::PlacementToJson(p, "pickle", std::nullopt); },
                      [](const std::string& text) { return Take(placement::ParsePlacementJson(text, "pickled placement")); }));

  m.def("plan", &Plan, py::arg("loads"), py::arg("layers"), py::arg("ranks"), py::arg("slots_per_rank"), py::arg("nodes"),
        py::arg("policy"), py::arg("current"), py::arg("max_moves"), py::arg("min_gain_per_move"), py::arg("noise_z"),
        py::arg("groups"));
  m.def("read_load_csv", [](const std::string& path, const std::string& select) {
          placement::LoadCsvOptions options;
          if (!select.empty()) options.select = select;
          absl::StatusOr<placement::LoadMatrix> read;
          {
            py::gil_scoped_release release;  // a FIFO or a slow filesystem blocks this call only
            read = placement::ReadLoadCsv(path, options);
          }
          const placement::LoadMatrix load = Take(std::move(read));
          return py::make_tuple(FromLoad(load), load.layer_ids);
        }, py::arg("path"), py::arg("select") = "");
  m.def("planner_names", [] {
    std::vector<std::string> out;
    for (absl::string_view n : placement::PlannerNames()) out.emplace_back(n);
    return out;
  });
  m.def("model_info", [](const std::string& spec, double scale) { return ModelDict(ResolveModel(spec, scale, "fp32")); },
        py::arg("model"), py::arg("scale") = 1.0);
  m.def("model_presets", &model::PresetNames);

  py::class_<Layer>(m, "Layer")
      .def(py::init<const std::string&, int, const std::string&, const std::string&, std::optional<placement::Placement>, double,
                    uint64_t, const std::string&, int, const std::string&, const std::string&, double>(),
           py::arg("model"), py::arg("layer"), py::arg("comm"), py::arg("weights"), py::arg("placement"), py::arg("scale"),
           py::arg("seed"), py::arg("weight_type"), py::arg("threads"), py::arg("shares"), py::arg("rendezvous_dir"),
           py::arg("timeout_s"))
      .def("forward", &Layer::Forward, py::arg("hidden"), py::arg("router_logits"), py::arg("tokens"), py::arg("out"),
           py::arg("bf16"), py::arg("draw_key"))
      .def_property_readonly("rank", &Layer::rank)
      .def_property_readonly("world_size", &Layer::world_size)
      .def_property_readonly("backend", &Layer::backend)
      .def_property_readonly("model", [](const Layer& l) { return ModelDict(l.model()); })
      .def_property_readonly("placement", &Layer::placement)
      .def("take_counts", &Layer::TakeCounts);
  m.def("close_communicators", &CloseCommunicators);
  m.def("available_backends", &cluster::AvailableBackends);

  py::class_<Inputs>(m, "WorkerInputs")
      .def(py::init<const std::string&, double, const std::vector<std::string>&, int, uint64_t>(), py::arg("model"),
           py::arg("scale"), py::arg("workload"), py::arg("layers"), py::arg("seed"))
      .def("hidden", &Inputs::Hidden, py::arg("step"), py::arg("first_token"), py::arg("tokens"))
      .def("logits", &Inputs::Logits, py::arg("step"), py::arg("layer_index"), py::arg("first_token"), py::arg("tokens"))
      .def_property_readonly("layers", &Inputs::layers);
  m.def("token_hash", [](uint64_t step, uint64_t global_token, const py::array_t<float, py::array::c_style>& row) {
          return worker::TokenHash(step, global_token, row.data(), row.size());
        }, py::arg("step"), py::arg("global_token"), py::arg("row"));

  py::class_<AdminClient>(m, "AdminClient")
      .def(py::init<std::string, std::string, const std::string&, double>(), py::arg("address"), py::arg("token"),
           py::arg("tls_ca_file"), py::arg("timeout_s"))
      .def("status", &AdminClient::Status)
      .def("placement", &AdminClient::Placement, py::arg("layer"))
      .def("committed_placement", &AdminClient::CommittedPlacement)
      .def("load", &AdminClient::Load, py::arg("layer"))
      .def("rebalance", &AdminClient::Rebalance, py::arg("dry_run"), py::arg("max_moves"))
      .def("pin", &AdminClient::Pin, py::arg("pin"), py::arg("expert"), py::arg("rank"), py::arg("layer"))
      .def("drain", &AdminClient::Drain, py::arg("drain"), py::arg("rank"), py::arg("remove"))
      .def("policy", &AdminClient::Policy, py::arg("settings"))
      .def("events", &AdminClient::Events, py::arg("after_seq"), py::arg("follow"), py::arg("follow_s"))
      .def_property_readonly("address", &AdminClient::address);
}
