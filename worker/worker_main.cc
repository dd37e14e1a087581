// switchyard-worker: hosts this rank's experts and drives traffic through the MoE layers.
//
//   mpirun -np 4 switchyard-worker --model preset:deepseek-v3 --scale 0.0625 --backend ucx
//       --workload trace:data/traces/deepseek_v3_sglang_decode_in1000out1000.csv
//       --tokens-per-rank 512 --steps 200 [--layers 4] [--placement FILE | --policy P]
//       [--report report.json] [--coordinator HOST:PORT | --coordinator embedded]
//
// With --coordinator every rank registers with the coordinator, heartbeats, and reports a
// load window every --window-steps steps from its control thread (worker/control_client.h);
// `embedded` starts the coordinator inside rank 0 (on --embedded-listen) for quick starts.
// The steps never wait on the coordinator: if it goes away the ranks keep serving and
// register again when it is back.
//
// Every input is checked on every rank before any communication, so a bad one ends every
// rank with one line and exit code 2 (no rank waits for another). Failures after the ranks
// connected stop the whole job (MPI_Abort under mpirun).
#include <unistd.h>

#include <atomic>
#include <csignal>

#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cluster/connect.h"
#include "cluster/coordinator_bootstrap.h"
#include "cluster/launch.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/status.h"
#include "coordinator/server.h"
#include "rpc/convert.h"
#include "rpc/rpc_util.h"
#include "placement/io/placement_json.h"
#include "placement/metrics.h"
#include "placement/planner.h"
#include "placement/regroup.h"
#include "placement/routing.h"
#include "switchyard/config.h"
#include "worker/control_client.h"
#include "worker/migration.h"
#include "worker/driver.h"
#include "model/model.h"
#include "worker/weights.h"
#include "worker/workload.h"
#if SWITCHYARD_HAVE_MPI
#include "comm/mpi/factory.h"
#endif

ABSL_FLAG(std::string, model, "", "preset:NAME (deepseek-v3, qwen3-30b-a3b, ...) or a Hugging Face config.json");
ABSL_FLAG(double, scale, 1.0, "shrink hidden and FFN sizes by this factor (experts, top-k, groups unchanged)");
ABSL_FLAG(std::string, backend, "mpi", "communicator: mpi, ucx (or nccl)");
ABSL_FLAG(std::vector<std::string>, workload, {},
          "trace:FILE[:KEY], zipf:S[:DRIFT] or uniform, optionally @STEP; repeat to shift workloads");
ABSL_FLAG(int64_t, tokens_per_rank, 512, "tokens per rank per step");
ABSL_FLAG(int, steps, 100, "steps to run");
ABSL_FLAG(int, layers, 4, "how many of the model's MoE layers to run (0: all)");
ABSL_FLAG(std::string, placement, "", "a placement file (switchyard plan JSON) to start from");
ABSL_FLAG(std::string, policy, "contiguous", "placement at start without --placement: contiguous, eplb or incremental");
ABSL_FLAG(int, slots_per_rank, 0, "expert slots per rank per layer (0: experts/ranks, +1 for eplb/incremental)");
ABSL_FLAG(std::string, shares, "step",
          "how an expert's pairs split over its replicas: step (every step the ranks exchange their counts and solve "
          "the split that minimises the busiest rank) or epoch (the planned shares, drawn per pair)");
ABSL_FLAG(int, world_size, 0,
          "start without a launcher: N plain processes meet through --coordinator HOST:PORT, which assigns their "
          "ranks (node by node); needs --job-key and --backend ucx");
ABSL_FLAG(std::string, job_key, "", "--world-size: the key the job's workers share at the coordinator (one per job)");
ABSL_FLAG(bool, resume, false,
          "start from the coordinator's committed placement and epoch when it holds one for this model, layers and "
          "topology (a requeued or resubmitted job), else as without it");
ABSL_FLAG(int, nodes, 0, "nodes the ranks span, for placement (0: from the launcher: Slurm's node list, else the local size)");
ABSL_FLAG(std::string, report, "", "write the run report (JSON) here (rank 0)");
ABSL_FLAG(int, log_every, 20, "rank 0 prints a progress line every N steps (0: never)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the workload and of generated weights");
ABSL_FLAG(std::string, weights, "", "safetensors checkpoint (file or directory); default: weights from --seed");
ABSL_FLAG(std::string, device, "cpu",
          "where the MoE layers run: cpu, or cuda (this rank's GPU, local rank mod GPUs; needs --backend nccl and "
          "--weight-type bf16)");
ABSL_FLAG(std::string, weight_type, "fp32", "fp32 or bf16 expert weights (every CPU: bf16 is widened in registers where the CPU has no bf16 dot)");
ABSL_FLAG(int, threads, 0,
          "threads per rank for the CPU kernels (0: $OMP_NUM_THREADS, else the rank's CPUs: its affinity, "
          "or the node's CPUs divided among the local ranks); $SWITCHYARD_CPU_ISA=portable|avx2|avx512|neon forces the ISA path");
ABSL_FLAG(std::string, rendezvous_dir, "", "shared directory for ucx/nccl rendezvous without mpirun");
ABSL_FLAG(int, timeout_s, 60, "seconds a rank waits for its peers before failing");
ABSL_FLAG(std::string, coordinator, "", "HOST:PORT of a switchyard-coordinator, or 'embedded' (rank 0 runs one); empty: none");
ABSL_FLAG(std::string, coordinator_token_file, "", "bearer token for a coordinator started with --auth-token-file");
ABSL_FLAG(std::string, coordinator_tls_ca, "", "PEM CA certificate: talk TLS to the coordinator");
ABSL_FLAG(int, coordinator_max_auth_failures, 5,
          "registrations refused for authentication (token, TLS) in a row before the worker stops and exits 2 (0: never)");
ABSL_FLAG(std::string, embedded_listen, "127.0.0.1:0", "--coordinator embedded: where rank 0's coordinator listens");
ABSL_FLAG(int, window_steps, 5, "steps per load window reported to the coordinator");
ABSL_FLAG(std::string, rebalance, "off",
          "on: migrate to every epoch the coordinator publishes (an embedded one rebalances automatically); "
          "off: keep the starting placement");
ABSL_FLAG(std::vector<std::string>, embedded_policy, {},
          "--coordinator embedded: rebalance policy settings key=value (see `switchyard policy`)");
ABSL_FLAG(int64_t, migration_bytes_per_step, 4 << 20, "bytes of expert weights a rank may move (sent + received) per step");
ABSL_FLAG(double, migration_timeout_s, 60,
          "stall timeout: a migration in which some rank has transfers in flight and none completes for this many "
          "seconds is aborted on every rank (a slow migration that keeps moving bytes is never aborted)");
ABSL_FLAG(std::string, step_log, "",
          "each rank writes PREFIX.rank<ORIGIN>.csv (its rank unless a joined job regrouped): step, epoch, wall/busy/comm/"
          "migration ms, migrating, origin, output_hash, done_unix_s, pairs");

namespace switchyard::worker {
namespace {

constexpr int kExitRuntime = 1;

// Errors of the user's input found after the ranks connected (weights files, coordinator
// authentication) carry this payload, so that every rank exits 2 as for bad flags.
constexpr absl::string_view kBadInputPayload = "switchyard.bad-input";
absl::Status BadInput(absl::Status status) {
  status.SetPayload(kBadInputPayload, absl::Cord("1"));
  return status;
}
bool IsBadInput(const absl::Status& status) { return status.GetPayload(kBadInputPayload).has_value(); }

// Set by SIGTERM / SIGINT / SIGUSR1: the ranks agree on a step to stop after (DriverOptions::stop_requested).
std::atomic<bool> g_stop_signal{false};

[[noreturn]] void Fail(int code, const absl::Status& status, bool connected) {
  std::fprintf(stderr, "switchyard-worker: %s\n", std::string(status.message()).c_str());
  std::fflush(stderr);
#if SWITCHYARD_HAVE_MPI
  if (connected && comm::LaunchedByMpi()) comm::AbortMpiJob(code);
#endif
  std::exit(code);
}

struct Setup {
  model::ModelConfig model;
  std::vector<int> layers;
  std::unique_ptr<Workload> workload;
  std::shared_ptr<cluster::JoinedJob> job;  // --world-size: the membership through the coordinator
  cluster::LaunchInfo launch;
  placement::Topology topology;
  std::optional<placement::Placement> placement;  // from --placement
  std::string placement_name;
  bool resumed = false;  // --resume found the coordinator's placement
  ShareMode shares = ShareMode::kStep;
  ControlOptions control;  // address empty: no coordinator
  bool embedded = false;
  bool rebalance = false;
  switchyard::types::v1::Policy embedded_policy;
  MigrationOptions migration;
  int cpu_threads = 1;
  Device device = Device::kCpu;
};

// Everything that can be checked without talking to other ranks.
constexpr int64_t kMaxTokensPerRank = int64_t{1} << 22;

// The memory one rank will need (its slots' expert weights, shared experts, the step's
// buffers), checked against the machine's before anything is allocated: a model that cannot
// fit is bad input, not an abort halfway through loading.
absl::Status CheckMemory(const Setup& s, int64_t tokens) {
  const double layers = static_cast<double>(s.layers.size());
  const double expert = static_cast<double>(kernels::PackedExpertBytes(s.model.ExpertShape()));
  const double shared = s.model.shared_ffn > 0 ? static_cast<double>(kernels::PackedExpertBytes(s.model.SharedShape())) : 0;
  const double step = static_cast<double>(tokens) * (8.0 * s.model.hidden + 4.0 * s.model.num_experts) * 4;  // hidden, outputs, logits, dispatch
  const double need = layers * (s.topology.slots_per_rank() * expert + shared) + step;
  const double have = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  const int local = std::max(1, s.launch.local_size);
  if (have > 0 && need * local > 0.9 * have) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d ranks on this node need %.1f GiB each (%d slots x %.0f layers of %.1f MiB experts, plus %.1f GiB for "
        "%lld tokens per step); the machine has %.1f GiB. Use --scale, fewer --layers or --slots-per-rank, or more ranks",
        s.model.name, local, need / (1 << 30), s.topology.slots_per_rank(), layers, expert / (1 << 20), step / (1 << 30),
        static_cast<long long>(tokens), have / (1 << 30)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Setup> Prepare() {
  Setup s;
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required (preset:NAME or config.json)");
  SY_ASSIGN_OR_RETURN(model::ModelConfig model, model::LoadModel(absl::GetFlag(FLAGS_model)));
  SY_ASSIGN_OR_RETURN(s.model, model::ScaleModel(model, absl::GetFlag(FLAGS_scale)));
  const std::string type = absl::GetFlag(FLAGS_weight_type);
  if (type != "fp32" && type != "bf16") return absl::InvalidArgumentError(absl::StrCat("--weight-type '", type, "': use fp32 or bf16"));
  s.model.weights = type == "bf16" ? kernels::WeightType::kBF16 : kernels::WeightType::kF32;
  SY_ASSIGN_OR_RETURN(s.device, ParseDevice(absl::GetFlag(FLAGS_device)));
  // The rows live where the layers run: GPU memory goes over NCCL, host memory over the others.
  if (s.device == Device::kCuda) {
    if (absl::Status usable = CudaDeviceUsable(); !usable.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("--device cuda: ", usable.message()));
    }
    if (absl::GetFlag(FLAGS_backend) != "nccl") {
      return absl::InvalidArgumentError("--device cuda exchanges the layers' rows in GPU memory: use --backend nccl");
    }
    if (s.model.weights != kernels::WeightType::kBF16) {
      return absl::InvalidArgumentError("--device cuda runs bf16 expert weights (cuBLAS bf16 GEMMs): add --weight-type bf16");
    }
  } else if (absl::GetFlag(FLAGS_backend) == "nccl" && CudaDeviceUsable().ok()) {  // without a GPU: Connect says so
    return absl::InvalidArgumentError("--backend nccl moves the layers' rows in GPU memory: add --device cuda --weight-type bf16");
  }
  // A forced path this CPU lacks is refused here; the CPU device then takes it (BestCpuIsa).
  SY_RETURN_IF_ERROR(kernels::CpuIsaFromEnvironment().status());
  SY_RETURN_IF_ERROR(kernels::Bf16DotFromEnvironment().status());
  s.cpu_threads = absl::GetFlag(FLAGS_threads);
  if (s.cpu_threads < 0 || s.cpu_threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("--threads ", s.cpu_threads, ": use 1..1024, or 0 for the default"));
  }
  if (s.cpu_threads == 0) s.cpu_threads = kernels::DefaultCpuThreads();
  const int n_layers = absl::GetFlag(FLAGS_layers);
  if (n_layers < 0) return absl::InvalidArgumentError("--layers must be >= 0");
  s.layers = s.model.moe_layers;
  if (n_layers > 0 && n_layers < static_cast<int>(s.layers.size())) s.layers.resize(n_layers);
  if (absl::GetFlag(FLAGS_tokens_per_rank) < 1 || absl::GetFlag(FLAGS_tokens_per_rank) > kMaxTokensPerRank) {
    return absl::InvalidArgumentError(absl::StrCat("--tokens-per-rank ", absl::GetFlag(FLAGS_tokens_per_rank), ": must be in 1..",
                                                   kMaxTokensPerRank));
  }
  if (absl::GetFlag(FLAGS_steps) < 1) return absl::InvalidArgumentError("--steps must be >= 1");
  SY_ASSIGN_OR_RETURN(s.workload, Workload::Create(absl::GetFlag(FLAGS_workload), s.model, s.layers, absl::GetFlag(FLAGS_seed)));
  SY_ASSIGN_OR_RETURN(s.launch, cluster::DetectLaunch());
  if (const int world = absl::GetFlag(FLAGS_world_size); world != 0) {
    // No launcher: meet the other workers at the coordinator, which says where we sit.
    const std::string coordinator = absl::GetFlag(FLAGS_coordinator);
    if (world < 1 || world > placement::kMaxRanks) {
      return absl::InvalidArgumentError(absl::StrCat("--world-size ", world, ": 1..", placement::kMaxRanks));
    }
    if (s.launch.launcher != "none") {
      return absl::InvalidArgumentError(absl::StrCat("--world-size: this process was started by ", s.launch.launcher,
                                                     ", which already says where it sits; leave --world-size out"));
    }
    if (coordinator.empty() || coordinator == "embedded" || coordinator.find(':') == std::string::npos) {
      return absl::InvalidArgumentError("--world-size needs --coordinator HOST:PORT: the workers meet there");
    }
    if (absl::GetFlag(FLAGS_backend) == "mpi") {
      return absl::InvalidArgumentError("--world-size joins through the coordinator: use --backend ucx (mpi needs its launcher)");
    }
    cluster::CoordinatorJoin join;
    join.address = coordinator;
    join.world_size = world;
    // What every member must run alike (the collectives and the outputs depend on it): a
    // worker started with another one is refused by name instead of breaking the job.
    join.fingerprint = absl::StrFormat(
        "model %s (hidden %lld, expert FFN %lld, %d experts, top-%d), layers %s, %s weights %s, %lld tokens/rank, %d steps, "
        "%s shares, workload %s, seed %llu",
        s.model.name, static_cast<long long>(s.model.hidden), static_cast<long long>(s.model.expert_ffn), s.model.num_experts,
        s.model.top_k, absl::StrJoin(s.layers, ","), type, absl::GetFlag(FLAGS_weights).empty() ? "seeded" : absl::GetFlag(FLAGS_weights),
        static_cast<long long>(absl::GetFlag(FLAGS_tokens_per_rank)), absl::GetFlag(FLAGS_steps), absl::GetFlag(FLAGS_shares),
        absl::StrJoin(absl::GetFlag(FLAGS_workload), " "), static_cast<unsigned long long>(absl::GetFlag(FLAGS_seed)));
    join.job_key = absl::GetFlag(FLAGS_job_key);
    if (join.job_key.empty()) return absl::InvalidArgumentError("--world-size needs --job-key, the same for the job's workers");
    if (!absl::GetFlag(FLAGS_coordinator_token_file).empty()) {
      SY_ASSIGN_OR_RETURN(join.token, rpc::ReadTokenFile(absl::GetFlag(FLAGS_coordinator_token_file)));
    }
    if (!absl::GetFlag(FLAGS_coordinator_tls_ca).empty()) {
      SY_ASSIGN_OR_RETURN(join.tls_ca_pem, ReadFile(absl::GetFlag(FLAGS_coordinator_tls_ca)));
    }
    // A worker restarted right after its predecessor died finds the job full until the loss
    // is detected (the heartbeat timeout): it asks again for a while before giving up.
    const absl::Time give_up = absl::Now() + std::min(absl::Seconds(absl::GetFlag(FLAGS_timeout_s)), absl::Seconds(10));
    while (true) {
      auto joined = cluster::JoinedJob::Join(join, absl::Seconds(absl::GetFlag(FLAGS_timeout_s)));
      if (joined.ok()) {
        s.job = *std::move(joined);
        break;
      }
      if (!absl::IsResourceExhausted(joined.status()) || absl::Now() >= give_up || g_stop_signal.load()) return joined.status();
      absl::SleepFor(absl::Milliseconds(500));
    }
    s.launch = s.job->launch_info();
  }
  const int R = s.launch.size, E = s.model.num_experts;
  int nodes = absl::GetFlag(FLAGS_nodes);
  if (nodes == 0) {
    nodes = s.launch.ranks_per_node > 0 ? s.launch.nodes : 1;
    if (s.launch.ranks_per_node == 0 && s.launch.nodes > 1 && s.launch.rank == 0) {
      LogWarning("the ", s.launch.nodes, " nodes hold different numbers of ranks (", s.launch.nodes_from,
                 "): placement treats the job as one node; launch the same number of ranks on every node for node-aware placement");
    }
  } else if (s.launch.launcher == "srun" && (nodes != s.launch.nodes || s.launch.ranks_per_node == 0)) {
    return absl::InvalidArgumentError(
        nodes != s.launch.nodes
            ? absl::StrCat("--nodes ", nodes, " but ", s.launch.nodes_from, " puts the ranks on ", s.launch.nodes,
                           " nodes: leave --nodes out under srun")
            : absl::StrCat("--nodes ", nodes, ": Slurm gave the nodes different numbers of ranks (", s.launch.nodes_from,
                           "), placement's nodes are equal blocks: leave --nodes out, or launch as many ranks on every node"));
  }
  // A newcomer to a running joined job takes the placement its members agree on (Regroup).
  const bool newcomer = s.job != nullptr && s.job->generation() > 0;
  const std::string& file = newcomer ? std::string() : absl::GetFlag(FLAGS_placement);
  if (!file.empty()) {
    SY_ASSIGN_OR_RETURN(placement::Placement p, placement::ReadPlacementJson(file));
    if (p.topology.ranks() != R) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": placement is for ", p.topology.ranks(), " ranks, the job has ", R));
    }
    if (p.num_experts != E) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": placement has ", p.num_experts, " experts, the model has ", E));
    }
    for (int layer : s.layers) {
      if (p.FindLayer(layer) == nullptr) return absl::InvalidArgumentError(absl::StrCat(file, ": placement has no layer ", layer));
    }
    // A plan of more layers than this run: the run's layers (routing indexes them in order).
    std::erase_if(p.layers, [&](const placement::LayerPlacement& l) {
      return std::find(s.layers.begin(), s.layers.end(), l.layer_id) == s.layers.end();
    });
    s.topology = p.topology;
    s.placement = std::move(p);
    s.placement_name = file;
  } else {
    const std::string policy = absl::GetFlag(FLAGS_policy);
    if (policy != "contiguous" && policy != "eplb" && policy != "incremental") {
      return absl::InvalidArgumentError(absl::StrCat("--policy '", policy, "': use contiguous, eplb or incremental"));
    }
    int slots = absl::GetFlag(FLAGS_slots_per_rank);
    if (slots == 0) slots = (E + R - 1) / R + (policy == "contiguous" ? 0 : 1);
    if (newcomer) slots = std::max(slots, (E + R - 1) / R);  // a placeholder: the members' placement replaces it
    SY_ASSIGN_OR_RETURN(s.topology, placement::Topology::Create(R, nodes, slots));
    if (R * slots < E) return absl::InvalidArgumentError(absl::StrCat(R, " ranks x ", slots, " slots cannot hold ", E, " experts"));
    s.placement_name = policy;
  }
  SY_RETURN_IF_ERROR(CheckMemory(s, absl::GetFlag(FLAGS_tokens_per_rank)));
  const std::string coordinator = absl::GetFlag(FLAGS_coordinator);
  s.embedded = coordinator == "embedded";
  if (!coordinator.empty() && !s.embedded && coordinator.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--coordinator '", coordinator, "': use HOST:PORT or embedded"));
  }
  if (s.embedded && s.launch.local_size < R && absl::StartsWith(absl::GetFlag(FLAGS_embedded_listen), "127.")) {
    return absl::InvalidArgumentError("--coordinator embedded with ranks on several nodes: set --embedded-listen to an "
                                      "address the other nodes reach (e.g. 0.0.0.0:7070) and --coordinator-token-file");
  }
  if (absl::GetFlag(FLAGS_window_steps) < 1) return absl::InvalidArgumentError("--window-steps must be >= 1");
  const std::string rebalance = absl::GetFlag(FLAGS_rebalance);
  if (rebalance != "on" && rebalance != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--rebalance '", rebalance, "': use on or off"));
  }
  s.rebalance = rebalance == "on";
  const std::string shares = absl::GetFlag(FLAGS_shares);
  if (shares != "epoch" && shares != "step") return absl::InvalidArgumentError(absl::StrCat("--shares '", EchoValue(shares), "': use epoch or step"));
  s.shares = shares == "step" ? ShareMode::kStep : ShareMode::kEpoch;
  if (absl::GetFlag(FLAGS_resume) && (coordinator.empty() || s.embedded)) {
    return absl::InvalidArgumentError("--resume needs --coordinator HOST:PORT (a coordinator with --state-dir keeps the placement)");
  }
  if (s.rebalance && coordinator.empty()) {
    return absl::InvalidArgumentError("--rebalance on needs --coordinator (HOST:PORT or embedded)");
  }
  s.embedded_policy = coordinator::DefaultPolicy();
  s.embedded_policy.set_auto_rebalance(s.rebalance);
  SY_RETURN_IF_ERROR(rpc::ApplyPolicySettings(absl::GetFlag(FLAGS_embedded_policy), s.embedded_policy));
  if (absl::Status valid = coordinator::ValidatePolicy(s.embedded_policy); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--embedded-policy: ", valid.message()));
  }
  s.migration.bytes_per_step = absl::GetFlag(FLAGS_migration_bytes_per_step);
  if (s.migration.bytes_per_step < 4096) return absl::InvalidArgumentError("--migration-bytes-per-step must be >= 4096");
  const double timeout = absl::GetFlag(FLAGS_migration_timeout_s);
  SY_RETURN_IF_ERROR(CheckFlagRange("migration-timeout-s", timeout, 0.001, 1e6));
  SY_RETURN_IF_ERROR(CheckFlagRange("timeout-s", absl::GetFlag(FLAGS_timeout_s), 1, 86400));
  s.migration.timeout = absl::Seconds(timeout);
  s.control.address = s.embedded ? "" : coordinator;
  if (absl::GetFlag(FLAGS_coordinator_max_auth_failures) < 0) {
    return absl::InvalidArgumentError("--coordinator-max-auth-failures must be >= 0");
  }
  s.control.max_auth_failures = absl::GetFlag(FLAGS_coordinator_max_auth_failures);
  if (!absl::GetFlag(FLAGS_coordinator_token_file).empty()) {
    SY_ASSIGN_OR_RETURN(s.control.token, rpc::ReadTokenFile(absl::GetFlag(FLAGS_coordinator_token_file)));
  }
  if (!absl::GetFlag(FLAGS_coordinator_tls_ca).empty()) {
    SY_ASSIGN_OR_RETURN(s.control.tls_ca_pem, ReadFile(absl::GetFlag(FLAGS_coordinator_tls_ca)));
  }
  return s;
}

// The same bytes on every rank: rank `root`'s `value` (the others' are ignored).
absl::StatusOr<std::string> ShareFromRank(comm::Communicator& c, int root, const std::string& value) {
  int64_t bytes = c.rank() == root ? static_cast<int64_t>(value.size()) : 0;
  SY_RETURN_IF_ERROR(c.AllReduce(&bytes, 1, comm::ReduceOp::kMax));
  std::vector<char> mine(bytes + 1, 0), all((bytes + 1) * static_cast<size_t>(c.size()));
  if (c.rank() == root) std::copy(value.begin(), value.end(), mine.begin());
  SY_RETURN_IF_ERROR(c.AllGather(mine.data(), bytes + 1, all.data()));
  return std::string(all.data() + static_cast<size_t>(root) * (bytes + 1), bytes);
}
absl::StatusOr<std::string> ShareFromRankZero(comm::Communicator& c, const std::string& value) { return ShareFromRank(c, 0, value); }

// The model's shape as the control API names it (registration, Resume).
switchyard::types::v1::ModelShape ModelShapeOf(const Setup& s) {
  switchyard::types::v1::ModelShape m;
  m.set_name(s.model.name);
  m.set_num_experts(s.model.num_experts);
  m.set_top_k(s.model.top_k);
  m.set_hidden(s.model.hidden);
  m.set_expert_ffn(s.model.expert_ffn);
  for (int layer : s.layers) m.add_moe_layers(layer);
  m.set_expert_bytes(static_cast<int64_t>(kernels::PackedExpertBytes(s.model.ExpertShape())));
  return m;
}

// --resume: rank 0 asks the coordinator for the committed placement of a job of this shape
// and every rank starts from the answer. nullopt: nothing to resume (rank 0 says why).
absl::StatusOr<std::optional<std::pair<placement::Placement, int64_t>>> ResumePlacement(const Setup& s, comm::Communicator& c) {
  std::string answer;  // rank 0: "!"+error, "?"+reason, or "="+ResumeResponse bytes
  if (c.rank() == 0) {
    control::ResumeRequest request;
    *request.mutable_model() = ModelShapeOf(s);
    request.set_world_size(s.topology.ranks());
    request.set_nodes(s.topology.nodes());
    request.set_slots_per_rank(s.topology.slots_per_rank());
    auto response = RequestResume(s.control, request, absl::Seconds(absl::GetFlag(FLAGS_timeout_s)),
                                  [] { return g_stop_signal.load(); });
    answer = response.ok()                           ? (response->found() ? absl::StrCat("=", response->SerializeAsString())
                                                                          : absl::StrCat("?", response->reason()))
             : absl::IsUnauthenticated(response.status()) ? absl::StrCat("#", response.status().message())
             : absl::IsCancelled(response.status())       ? absl::StrCat("~", response.status().message())
                                                          : absl::StrCat("!", response.status().message());
  }
  SY_ASSIGN_OR_RETURN(answer, ShareFromRankZero(c, answer));
  if (answer.empty()) return absl::InternalError("--resume: no answer from rank 0");
  if (answer[0] == '#') return BadInput(absl::UnauthenticatedError(answer.substr(1)));
  if (answer[0] == '~') return absl::CancelledError(answer.substr(1));
  if (answer[0] == '!') return absl::UnavailableError(answer.substr(1));
  if (answer[0] == '?') {
    if (c.rank() == 0) std::printf("switchyard-worker: --resume: nothing to resume (%s); starting fresh\n", answer.c_str() + 1);
    return std::nullopt;
  }
  control::ResumeResponse response;
  if (!response.ParseFromString(answer.substr(1))) return absl::InternalError("--resume: cannot parse the shared answer");
  auto p = rpc::FromProto(response.placement());
  if (!p.ok()) return absl::InternalError(absl::StrCat("--resume: the coordinator's placement: ", p.status().message()));
  if (!(p->topology == s.topology) || p->num_experts != s.model.num_experts) {
    return absl::InternalError("--resume: the coordinator's placement is not for this job's topology");
  }
  for (int layer : s.layers) {
    if (p->FindLayer(layer) == nullptr) return absl::InternalError(absl::StrCat("--resume: no layer ", layer, " in the placement"));
  }
  return std::make_optional(std::make_pair(*std::move(p), response.placement().epoch()));
}

// The coordinator connection: every rank learns the address (rank 0 starts an embedded
// coordinator first), then starts its control thread and registers.
struct Control {
  std::unique_ptr<coordinator::CoordinatorServer> embedded;  // rank 0 with --coordinator embedded
  std::unique_ptr<ControlClient> client;
};

absl::StatusOr<Control> StartControl(Setup& s, comm::Communicator& c, const placement::Placement& start,
                                     int64_t start_epoch) {
  Control out;
  std::string address = s.control.address;
  if (s.embedded) {
    std::string shared;
    if (c.rank() == 0) {
      coordinator::ServerOptions options;
      options.listen = absl::GetFlag(FLAGS_embedded_listen);
      options.initial_policy = s.embedded_policy;
      options.auth_token = s.control.token;  // the ranks send it; a non-loopback listen needs one
      auto server = coordinator::CoordinatorServer::Start(options);
      // "!" marks a failure for the other ranks, "!!" one of the user's input (exit 2 everywhere).
      shared = server.ok() ? (*server)->address()
                           : absl::StrCat(absl::IsInvalidArgument(server.status()) ? "!!" : "!", server.status().message());
      if (server.ok()) out.embedded = *std::move(server);
    }
    SY_ASSIGN_OR_RETURN(shared, ShareFromRankZero(c, shared));
    if (absl::StartsWith(shared, "!!")) {
      return BadInput(absl::InvalidArgumentError(absl::StrCat("embedded coordinator: ", shared.substr(2))));
    }
    if (absl::StartsWith(shared, "!")) return absl::UnavailableError(absl::StrCat("embedded coordinator: ", shared.substr(1)));
    address = shared;
    if (absl::StartsWith(address, "0.0.0.0:")) {  // tell the other ranks a name they can reach
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      address = absl::StrCat(host, address.substr(7));
    }
    if (c.rank() == 0) {
      std::printf("switchyard-worker: embedded coordinator at %s (switchyard status --coordinator %s)\n",
                  address.c_str(), address.c_str());
      std::fflush(stdout);
    }
  }
  std::random_device rd;
  std::string job_id;
  if (s.job) {
    job_id = s.job->membership().job_id();  // the same in every generation
  } else {
    SY_ASSIGN_OR_RETURN(job_id, ShareFromRankZero(c, absl::StrFormat("%08x%08x", rd(), rd())));
  }
  control::RegisterRequest r;
  r.set_rank(c.rank());
  r.set_world_size(c.size());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  r.set_host(host);
  r.set_node(s.topology.NodeOf(c.rank()));
  r.set_node_name(s.launch.node_name);
  r.set_local_rank(c.local_rank());
  r.set_backend(std::string(c.backend()));
  *r.mutable_model() = ModelShapeOf(s);
  *r.mutable_placement() = rpc::ToProto(start, start_epoch);
  r.set_job_id(job_id);
  r.set_tokens_per_step(absl::GetFlag(FLAGS_tokens_per_rank));
  r.set_resumed(s.resumed);
  r.set_shares(ShareModeName(s.shares));
  if (s.job) {
    r.set_job_key(s.job->job_key());
    r.set_instance(s.job->instance());
    r.set_generation(s.job->generation());
    r.set_job_world_size(s.job->membership().job_world_size());
    *r.mutable_members() = s.job->membership().members();
  }
  s.control.address = address;
  out.client = std::make_unique<ControlClient>(s.control, std::move(r));
  return out;
}

// Every rank must route the same way (the collectives of the two --shares modes differ):
// collective; BadInput naming the flag when the ranks differ. Run at every (re)connect.
absl::Status AgreeOnShares(const Setup& s, comm::Communicator& c) {
  int64_t modes[2] = {s.shares == ShareMode::kStep ? 1 : 0, s.shares == ShareMode::kEpoch ? 1 : 0};
  SY_RETURN_IF_ERROR(c.AllReduce(modes, 2, comm::ReduceOp::kMax));
  if (modes[0] == 1 && modes[1] == 1) {
    return BadInput(absl::InvalidArgumentError(absl::StrCat("the ranks were started with different --shares (this rank: ",
                                                            ShareModeName(s.shares), "): give every rank the same")));
  }
  return absl::OkStatus();
}

// After a regroup (a rank lost, a newcomer, a removal) the members of the new generation
// agree, over the new communicator, on where to go on (DESIGN.md section 8):
//   - the step: the lowest next step of the members that ran the job (ranks may differ by
//     one: a step's exchange can complete on some ranks and not on others); a rank re-runs a
//     step it did without counting it twice (RunProgress);
//   - the placement: the highest epoch any member runs (all who run it hold the same one),
//     regrouped onto the new ranks (placement/regroup.h: survivors keep their slots, experts
//     with no replica left are loaded again from the weight source), under an epoch above
//     every epoch a member ran or was offered;
//   - the load the orphans are placed by: the members' counts so far.
struct Regrouped {
  placement::Placement placement;
  int64_t epoch = 0;
  int resume_step = 0;
  int replaced = 0, evicted = 0;
  std::string why;
};

absl::StatusOr<Regrouped> AgreeAfterRegroup(Setup& s, comm::Communicator& c, const placement::Placement* running,
                                             int64_t running_epoch, int64_t highest_epoch, const RunProgress& progress,
                                             WeightStore& store, WeightSource& source) {
  const int R = c.size(), L = static_cast<int>(s.layers.size()), E = s.model.num_experts;
  // [has state, next step, running epoch, highest epoch]
  int64_t mine[4] = {running != nullptr ? 1 : 0, progress.next_step, running_epoch, highest_epoch};
  std::vector<int64_t> all(4 * static_cast<size_t>(R));
  SY_RETURN_IF_ERROR(c.AllGather(mine, sizeof mine, all.data()));
  int root = -1;
  int64_t resume = std::numeric_limits<int64_t>::max(), epoch = 0, newest = -1;
  for (int r = 0; r < R; ++r) {
    const int64_t* x = &all[4 * static_cast<size_t>(r)];
    epoch = std::max({epoch, x[2], x[3]});
    if (x[0] == 0) continue;
    resume = std::min(resume, x[1]);
    if (x[2] > newest) {
      newest = x[2];
      root = r;
    }
  }
  if (root < 0) return absl::NotFoundError("regroup: no member of the new generation ran the job (all of them are new)");
  std::string bytes;
  if (c.rank() == root) bytes = rpc::ToProto(*running, newest).SerializeAsString();
  SY_ASSIGN_OR_RETURN(bytes, ShareFromRank(c, root, bytes));
  switchyard::types::v1::Placement proto;
  if (!proto.ParseFromString(bytes)) return absl::InternalError("regroup: cannot parse the shared placement");
  SY_ASSIGN_OR_RETURN(placement::Placement base, rpc::FromProto(proto));
  // The load so far (pairs chosen per expert over the members' steps), to place orphans by.
  std::vector<int64_t> load(static_cast<size_t>(L) * E, 0);
  for (int li = 0; li < L && li < static_cast<int>(progress.whole.size()); ++li) {
    for (int e = 0; e < E; ++e) load[static_cast<size_t>(li) * E + e] = progress.whole[li].chosen[e];
  }
  SY_RETURN_IF_ERROR(c.AllReduce(load.data(), L * E, comm::ReduceOp::kSum));
  placement::LoadMatrix matrix{s.layers, std::vector<std::vector<double>>(L, std::vector<double>(E))};
  for (int li = 0; li < L; ++li) {
    for (int e = 0; e < E; ++e) matrix.values[li][e] = static_cast<double>(load[static_cast<size_t>(li) * E + e]) + 1.0;
  }
  const control::JoinResponse& m = s.job->membership();
  std::vector<int> previous(R, -1);
  int survivors = 0;
  for (int q = 0; q < R; ++q) {
    previous[q] = m.members(q).previous_rank();
    survivors += previous[q] >= 0;
  }
  const int nodes = m.ranks_per_node() > 0 ? m.nodes() : 1;
  // Without spare slots the survivors cannot hold the lost rank's experts: each rank takes
  // more (memory permitting) rather than the job ending.
  int slots = base.topology.slots_per_rank();
  if (static_cast<int64_t>(R) * slots < E) {
    const int grown = (E + R - 1) / R;
    if (c.rank() == 0) {
      LogWarning("regroup: ", R, " ranks x ", slots, " slots cannot hold the ", E, " experts; each rank now holds up to ", grown,
                 " (start the job with spare slots, --slots-per-rank, to survive a loss without growing)");
    }
    slots = grown;
  }
  SY_ASSIGN_OR_RETURN(placement::Topology topology, placement::Topology::Create(R, nodes, slots));
  s.topology = topology;
  if (absl::Status memory = CheckMemory(s, absl::GetFlag(FLAGS_tokens_per_rank)); !memory.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("regroup: ", memory.message()));
  }
  SY_ASSIGN_OR_RETURN(placement::RegroupResult regrouped, placement::RegroupPlacement(base, previous, topology, &matrix));
  int packed = 0;
  if (absl::Status loaded = store.Load(regrouped.placement, c.rank(), source, &packed); !loaded.ok()) {
    return absl::IsInvalidArgument(loaded) || absl::IsNotFound(loaded) ? BadInput(loaded) : loaded;
  }
  s.topology = topology;
  Regrouped out;
  out.placement = std::move(regrouped.placement);
  out.epoch = epoch + 1;
  out.resume_step = static_cast<int>(resume);
  out.replaced = regrouped.replaced;
  out.evicted = regrouped.evicted;
  out.why = absl::StrCat(survivors, " continue, ", R - survivors, " new, from ", base.topology.ranks());
  return out;
}

control::LoadReport ToReport(int rank, const std::vector<int>& layers, const LoadWindow& w) {
  control::LoadReport r;
  r.set_rank(rank);
  r.set_epoch(w.epoch);
  r.set_first_step(w.first_step);
  r.set_end_step(w.end_step);
  r.mutable_step_ms()->Add(w.step_ms.begin(), w.step_ms.end());
  r.set_alltoall_bytes_intra_node(w.alltoall_bytes_intra_node);
  r.set_alltoall_bytes_inter_node(w.alltoall_bytes_inter_node);
  for (size_t i = 0; i < layers.size(); ++i) {
    auto* l = r.add_layers();
    l->set_layer(layers[i]);
    l->mutable_chosen()->Add(w.counts[i].chosen.begin(), w.counts[i].chosen.end());
    l->mutable_processed()->Add(w.counts[i].processed.begin(), w.counts[i].processed.end());
    if (i < w.step_balance.size()) {
      l->set_step_balancedness_p50(w.step_balance[i].first);
      l->set_step_balancedness_p99(w.step_balance[i].second);
    }
  }
  return r;
}

// The placement at start: the file, or the policy planned on the workload's expected load.
absl::StatusOr<placement::Placement> StartPlacement(const Setup& s) {
  if (s.placement) return *s.placement;
  const std::string policy = absl::GetFlag(FLAGS_policy);
  if (policy == "contiguous") return placement::ContiguousPlacement(s.topology, s.model.num_experts, s.layers);
  placement::LoadMatrix load{s.layers, s.workload->Expected(0)};
  const double pairs = static_cast<double>(s.topology.ranks()) * absl::GetFlag(FLAGS_tokens_per_rank) * s.model.top_k;
  for (auto& row : load.values) {
    for (double& x : row) x *= pairs;  // expected pairs per step, count units
  }
  SY_ASSIGN_OR_RETURN(auto planner, placement::CreatePlanner(policy));
  placement::PlanRequest request{s.topology, load, nullptr, {}, {}};
  request.options.eplb_groups = s.model.num_groups;
  auto planned = planner->Plan(request);
  if (!planned.ok() && policy == "eplb") {  // groups that do not fit the node layout: global EPLB
    request.options.eplb_groups = 1;
    planned = planner->Plan(request);
  }
  return planned;
}

void OnStopSignal(int) { g_stop_signal.store(true); }

int Main(int argc, char** argv) {
  SetLogPrefix("switchyard-worker");
  // From the start, so that a stop (scancel, Slurm's time-limit warning) that comes while the
  // rank starts up ends it cleanly instead of killing it; set again after the launcher's
  // set-up below, which may install its own.
  for (int signal : {SIGTERM, SIGINT, SIGUSR1}) std::signal(signal, OnStopSignal);
  auto parsed = ParseFlags(argc, argv);
  if (!parsed.ok()) Fail(kExitBadInput, parsed.status(), false);
  if (parsed->help) {
    std::printf("usage: switchyard-worker --model M --workload W [flags]\n%s", FlagsHelp({"worker/"}).c_str());
    return 0;
  }
  if (!parsed->positional.empty()) {
    Fail(kExitBadInput, absl::InvalidArgumentError(absl::StrCat("unexpected argument '", parsed->positional[0], "'")), false);
  }
  auto setup = Prepare();
  if (!setup.ok()) {  // bad input, except a join that timed out or found no coordinator
    const bool runtime = absl::IsDeadlineExceeded(setup.status()) || absl::IsUnavailable(setup.status());
    Fail(runtime ? kExitRuntime : kExitBadInput, setup.status(), false);
  }
  Setup& s = *setup;
  auto start = StartPlacement(s);
  if (!start.ok()) Fail(kExitBadInput, start.status(), false);

  cluster::ConnectOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  options.rendezvous_dir = absl::GetFlag(FLAGS_rendezvous_dir);
  if (s.job) options.bootstrap = std::shared_ptr<comm::Bootstrap>(&s.job->bootstrap(), [](comm::Bootstrap*) {});
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.survive_peer_loss = s.job != nullptr;
  auto comm = cluster::Connect(options);
  // A wrong setting (a backend with no GPU or no way to find its peers) is the user's to fix: exit 2.
  if (!comm.ok()) {
    Fail(absl::IsInvalidArgument(comm.status()) || absl::IsFailedPrecondition(comm.status()) ? kExitBadInput : kExitRuntime,
         comm.status(), false);
  }
  // A joined job replaces its communicator when it regroups; `c` is the first one's.
  std::unique_ptr<comm::Communicator> current_comm = *std::move(comm);
  comm::Communicator& c = *current_comm;
  // After the launcher's own set-up, so that these handlers are the ones in force.
  struct sigaction stop_action {};
  stop_action.sa_handler = OnStopSignal;
  sigemptyset(&stop_action.sa_mask);
  stop_action.sa_flags = SA_RESTART;
  // SIGUSR1 is Slurm's time-limit warning (sbatch --signal=USR1@SECONDS): drain the same way.
  for (int signal : {SIGTERM, SIGINT, SIGUSR1}) sigaction(signal, &stop_action, nullptr);
  if (c.size() != s.topology.ranks()) {
    Fail(kExitBadInput,
         absl::InvalidArgumentError(absl::StrCat(
             "the launch environment (", s.launch.launcher, ") says ", s.topology.ranks(), " ranks but ", c.size(),
             " started together (", c.backend(), "): start the workers with their launcher (srun --mpi=pmix, mpirun), "
             "not by hand in a batch script")),
         true);
  }
  if (absl::Status agreed = AgreeOnShares(s, c); !agreed.ok()) Fail(IsBadInput(agreed) ? kExitBadInput : kExitRuntime, agreed, true);
  int64_t start_epoch = 0;
  if (absl::GetFlag(FLAGS_resume) && !(s.job != nullptr && s.job->generation() > 0)) {  // a newcomer takes the running job's
    auto resumed = ResumePlacement(s, c);
    if (absl::IsCancelled(resumed.status())) {  // scancel before the first step: nothing to end
      if (c.rank() == 0) std::printf("switchyard-worker: %s; no step run\n", std::string(resumed.status().message()).c_str());
      current_comm.reset();
      return 0;
    }
    if (!resumed.ok()) Fail(IsBadInput(resumed.status()) ? kExitBadInput : kExitRuntime, resumed.status(), true);
    if (*resumed) {
      start = std::move((*resumed)->first);
      start_epoch = (*resumed)->second;
      s.placement_name = absl::StrCat("resumed epoch ", start_epoch, " from the coordinator");
      s.resumed = true;
    }
  }
  auto run = [&]() -> absl::StatusOr<RunReport> {
    WeightStore store(s.model, s.layers);
    std::unique_ptr<WeightSource> source;
    if (absl::GetFlag(FLAGS_weights).empty()) {
      source = SeededWeights(s.model, absl::GetFlag(FLAGS_seed));
    } else {
      auto opened = CheckpointWeights(s.model, absl::GetFlag(FLAGS_weights));
      if (!opened.ok()) return BadInput(opened.status());
      source = *std::move(opened);
    }
    placement::Placement running = *start;  // the placement and epoch this rank runs
    int64_t running_epoch = start_epoch, highest_epoch = start_epoch;
    RunProgress progress;
    // A newcomer to a running job waits for the members' agreement before it loads anything.
    const bool agree_first = s.job != nullptr && s.job->generation() > 0;
    if (!agree_first) {
      // A checkpoint that is missing, malformed or of another model is the user's input.
      if (absl::Status loaded = store.Load(running, c.rank(), *source); !loaded.ok()) {
        return absl::IsInvalidArgument(loaded) || absl::IsNotFound(loaded) ? BadInput(loaded) : loaded;
      }
    }
    bool has_state = !agree_first;  // this rank ran the job's steps (a newcomer has none yet)
    if (agree_first) ++progress.regroups;  // it joins a running job: its counts cover part of the run
    int failed_regroups = 0;       // regroups in a row that completed no step
    // Removed by the operator: leave after the agreed step (its own heartbeat may not have
    // said so yet; then the regroup's join does), with the step log of the steps it did.
    auto leave_removed = [&]() -> absl::Status {
      std::printf("switchyard-worker: token stream %d left the job after step %d: removed by the operator\n", s.job->origin(),
                  progress.next_step);
      std::fflush(stdout);
      if (!absl::GetFlag(FLAGS_step_log).empty()) SY_RETURN_IF_ERROR(WriteStepLog(absl::GetFlag(FLAGS_step_log), s.job->origin(), progress));
      return absl::CancelledError("removed");
    };
    // Joins the next generation and connects to it (the communicator of the last one is gone
    // first: its endpoints close without waiting for dead peers). A connection that fails (a
    // member lost again, the coordinator restarting) joins the one after, a few times.
    auto join_next_generation = [&](std::string why) -> absl::Status {
      for (int attempt = 0;; ++attempt) {
        current_comm.reset();
        if (absl::Status joined = s.job->Regroup(why, absl::Seconds(absl::GetFlag(FLAGS_timeout_s))); !joined.ok()) {
          if (absl::IsCancelled(joined)) return leave_removed();
          return absl::UnavailableError(absl::StrCat("this worker cannot continue the job: ", joined.message()));
        }
        ++progress.regroups;
        s.launch = s.job->launch_info();
        cluster::ConnectOptions again = options;
        again.bootstrap = std::shared_ptr<comm::Bootstrap>(&s.job->bootstrap(), [](comm::Bootstrap*) {});
        absl::StatusOr<std::unique_ptr<comm::Communicator>> connected = cluster::Connect(again);
        absl::Status ready = connected.ok() ? AgreeOnShares(s, **connected) : connected.status();
        if (ready.ok()) {
          current_comm = *std::move(connected);
          return absl::OkStatus();
        }
        if (IsBadInput(ready) || attempt >= 3) return ready;
        why = std::string(ready.message());
        std::fprintf(stderr, "switchyard-worker: token stream %d: %s; regrouping again\n", s.job->origin(), why.c_str());
      }
    };
    for (int generation_runs = 0;; ++generation_runs) {
      comm::Communicator& cc = *current_comm;
      const auto regroup_started = std::chrono::steady_clock::now();
      if (s.job != nullptr && (generation_runs > 0 || agree_first)) {
        absl::StatusOr<Regrouped> agreement =
            AgreeAfterRegroup(s, cc, has_state ? &running : nullptr, running_epoch, highest_epoch, progress, store, *source);
        if (!agreement.ok() && !IsBadInput(agreement.status()) && !absl::IsResourceExhausted(agreement.status()) &&
            !absl::IsNotFound(agreement.status())) {  // a member failed while they agreed: regroup again
          SY_RETURN_IF_ERROR(join_next_generation(std::string(agreement.status().message())));
          continue;
        }
        SY_ASSIGN_OR_RETURN(const Regrouped agreed, std::move(agreement));
        running = agreed.placement;
        running_epoch = highest_epoch = agreed.epoch;
        progress.resume_step = agreed.resume_step;
        has_state = true;
        if (agree_first && generation_runs == 0) {  // a newcomer says where it landed (rank 0 prints the rest)
          std::printf("switchyard-worker: joined the running job '%s' at step %d: rank %d of %d, token stream %d (generation %lld)\n",
                      s.job->job_key().c_str(), agreed.resume_step, cc.rank(), cc.size(), s.job->origin(),
                      static_cast<long long>(s.job->generation()));
          std::fflush(stdout);
        }
        if (cc.rank() == 0) {
          std::printf("switchyard-worker: generation %lld: %d ranks (%s), resuming at step %d under epoch %lld; %d experts had no "
                      "replica left and were loaded again, %d extra replicas given up (%.0f ms)\n",
                      static_cast<long long>(s.job->generation()), cc.size(), agreed.why.c_str(), agreed.resume_step,
                      static_cast<long long>(agreed.epoch), agreed.replaced, agreed.evicted,
                      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - regroup_started).count());
          std::fflush(stdout);
        }
      }
      SY_ASSIGN_OR_RETURN(placement::RoutingTable table, placement::RoutingTable::Build(running, running_epoch));
      auto cancel = std::make_shared<std::atomic<bool>>(false);
      if (s.job) cc.set_cancel(cancel);
      Control control;
      if (s.embedded || !s.control.address.empty()) {
        s.control.cancel = cancel;
        SY_ASSIGN_OR_RETURN(control, StartControl(s, cc, running, running_epoch));
      }
      // The GPU device queues on the communicator's stream: its gathers run before the
      // all-to-alls that send their rows with no host wait in between.
      SY_ASSIGN_OR_RETURN(std::unique_ptr<LayerDevice> device,
                          CreateLayerDevice(s.device, s.model, s.cpu_threads, cc.cuda_stream()));
      const std::string kernel_path = device->KernelName();
      if (cc.rank() == 0 && generation_runs == 0) {
        auto score = placement::ScorePlacement(running, placement::LoadMatrix{s.layers, s.workload->Expected(0)});
        std::printf("switchyard-worker: %s, %d MoE layers x %d experts (top-%d, hidden %lld, expert FFN %lld) on %d ranks "
                    "(%s backend, %s), %lld tokens/rank/step, placement %s (expected balancedness %.3f), "
                    "%s shares\n",
                    s.model.name.c_str(), static_cast<int>(s.layers.size()), s.model.num_experts, s.model.top_k,
                    static_cast<long long>(s.model.hidden), static_cast<long long>(s.model.expert_ffn), cc.size(),
                    std::string(cc.backend()).c_str(),
                    s.device == Device::kCpu ? absl::StrFormat("CPU path %s x %d threads", kernel_path, s.cpu_threads).c_str()
                                             : kernel_path.c_str(),
                    static_cast<long long>(absl::GetFlag(FLAGS_tokens_per_rank)),
                    agree_first ? "of the running job" : s.placement_name.c_str(), score.ok() ? score->balancedness_mean : 0.0,
                    ShareModeName(s.shares));
        std::fflush(stdout);
      }
      DriverOptions d;
      d.steps = absl::GetFlag(FLAGS_steps);
      d.tokens_per_rank = absl::GetFlag(FLAGS_tokens_per_rank);
      d.log_every = absl::GetFlag(FLAGS_log_every);
      d.log = [](const std::string& line) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      };
      if (control.client) {
        ControlClient* client = control.client.get();
        d.window_steps = absl::GetFlag(FLAGS_window_steps);
        d.ranks_per_node = running.topology.ranks() / std::max(1, running.topology.nodes());
        d.on_window = [client, rank = cc.rank(), &s](LoadWindow w) { client->SubmitReport(ToReport(rank, s.layers, w)); };
        d.on_step = [client](int64_t step, int64_t epoch) { client->SetProgress(step, epoch); };
        if (s.job) d.regroup_requested = [client] { return client->regroup_requested(); };
      }
      if (s.job) d.origin = s.job->origin();
      d.step_log = absl::GetFlag(FLAGS_step_log);
      // SIGTERM/SIGINT/SIGUSR1 (scancel, a signal to mpirun, a time-limit warning) or a coordinator that refuses us: every
      // rank ends after the same step, reports, says Leave and writes its report.
      d.stop_requested = [client = control.client.get()] {
        return g_stop_signal.load(std::memory_order_relaxed) || (client != nullptr && client->gave_up());
      };
      d.cpu_threads = s.cpu_threads;
      Driver driver(s.model, cc, *s.workload, store, std::make_shared<placement::RoutingTable>(std::move(table)), d,
                    std::move(device));
      driver.layer().set_share_mode(s.shares);
      std::unique_ptr<EpochManager> epochs;
      if (s.rebalance) {
        ControlClient* client = control.client.get();
        epochs = std::make_unique<EpochManager>(cc, store, driver.layer(), running, running_epoch, s.migration);
        epochs->set_on_update([client, rank = cc.rank()](const MigrationUpdate& u) {
          control::MigrationReport r;
          r.set_rank(rank);
          r.set_epoch(u.record.epoch);
          r.set_phase(u.phase);
          r.set_step(u.phase == "started" ? u.record.start_step : u.record.commit_step >= 0 ? u.record.commit_step : u.record.abort_step >= 0 ? u.record.abort_step : u.record.start_step);
          r.set_moved_replicas(u.record.moved_replicas);
          r.set_bytes(u.record.bytes);
          r.set_rank_bytes(u.rank_bytes);
          r.set_seconds(u.seconds);
          r.set_error(u.record.error);
          r.set_done_bytes(u.done_bytes);
          client->SubmitMigration(std::move(r));
          if (u.phase == "committed") {
            client->SetPlacement(rpc::ToProto(u.placement, u.record.epoch));
          } else if (u.phase == "aborted") {
            client->ResetOrders();  // the coordinator may publish the same epoch number again
          }
        });
        driver.set_epochs(epochs.get(), [client] { return client->TakeOrders(); });
      }
      const int done_before = progress.next_step;
      absl::StatusOr<RunReport> result = driver.Run(&progress);
      if (!result.ok() && s.job != nullptr && !IsBadInput(result.status())) {
        // A joined job survives: a rank was lost (the communicator failed or was cancelled) or
        // the ranks agreed to regroup (a newcomer, a removal). Keep what this rank runs.
        const RegroupOrder order = control.client ? control.client->regroup() : RegroupOrder{};
        if (epochs) {
          running = epochs->placement();
          running_epoch = epochs->epoch();
          highest_epoch = std::max(highest_epoch, epochs->highest_epoch_seen());
        }
        epochs.reset();
        if (control.client) control.client->Stop(absl::Milliseconds(500), /*leave=*/order.removed && !order.now);
        control.client.reset();
        if (order.removed && absl::IsAborted(result.status()) && result.status().message() == kRegroupMessage) return leave_removed();
        failed_regroups = progress.next_step > done_before ? 0 : failed_regroups + 1;
        if (failed_regroups > 3) {
          return absl::UnavailableError(absl::StrCat("gave up: 4 regroups in a row completed no step; the last failure: ",
                                                     result.status().message()));
        }
        std::fprintf(stderr, "switchyard-worker: token stream %d at step %d: %s%s; regrouping\n", s.job->origin(), progress.next_step,
                     std::string(result.status().message()).c_str(),
                     order.reason.empty() ? "" : absl::StrCat(" (coordinator: ", order.reason, ")").c_str());
        SY_RETURN_IF_ERROR(join_next_generation(std::string(result.status().message())));
        continue;
      }
      SY_ASSIGN_OR_RETURN(RunReport report, std::move(result));
      if (control.client && control.client->gave_up()) {
        return BadInput(absl::UnauthenticatedError(control.client->stats().fatal_error));
      }
      if (report.stopped_early && cc.rank() == 0) {
        std::printf("switchyard-worker: stopped after step %d of %d (signal)\n", progress.next_step, absl::GetFlag(FLAGS_steps));
      }
      if (control.client) {
        // Deliver the last windows, then let rank 0 stop the embedded coordinator after all
        // ranks are done with it.
        control.client->Stop(absl::Seconds(5), /*leave=*/true);
        const ControlStats stats = control.client->stats();
        if (stats.reports_dropped > 0 || stats.reports_rejected > 0 || stats.reports_sent == 0) {
          std::fprintf(stderr, "switchyard-worker: rank %d: %lld load windows sent, %lld dropped, %lld rejected (%s)\n", cc.rank(),
                       static_cast<long long>(stats.reports_sent), static_cast<long long>(stats.reports_dropped),
                       static_cast<long long>(stats.reports_rejected), stats.last_error.c_str());
        }
        SY_RETURN_IF_ERROR(cc.Barrier());
        epochs.reset();
        control.client.reset();
        if (control.embedded) {
          const auto status = control.embedded->core().Status();
          std::printf("embedded coordinator: %lld load windows aggregated, epoch %lld committed\n",
                      static_cast<long long>(status.windows()), static_cast<long long>(status.committed_epoch()));
          control.embedded.reset();
        }
      }
      report.model = s.model.name;
      report.backend = std::string(cc.backend());
      report.placement_policy = s.placement_name;
      report.shares = ShareModeName(s.shares);
      report.workload = absl::StrJoin(absl::GetFlag(FLAGS_workload), " ");
      report.device = DeviceName(s.device);
      report.cpu_isa = kernel_path;
      report.cpu_threads = s.device == Device::kCpu ? s.cpu_threads : 0;
      return report;
    }
  };
  auto report = run();
  if (absl::IsCancelled(report.status()) && s.job != nullptr) return 0;  // removed by the operator: left cleanly
  if (!report.ok()) Fail(IsBadInput(report.status()) ? kExitBadInput : kExitRuntime, report.status(), true);
  if (current_comm->rank() == 0) {
    double worst = 1;
    for (const LayerReport& l : report->layers) worst = std::min(worst, l.balancedness);
    std::printf("summary: %.0f tokens/s, step ms p50 %.2f p99 %.2f max %.2f; per step (slowest rank each): gate %.2f dispatch %.2f ffn %.2f "
                "combine %.2f ms; worst-layer balancedness %.3f; tokens conserved: %s; output checksum %016llx\n",
                report->tokens_per_s, report->step_ms_p50, report->step_ms_p99, report->step_ms_max, report->phase_ms_gate,
                report->phase_ms_dispatch, report->phase_ms_ffn, report->phase_ms_combine, worst,
                report->tokens_conserved ? "yes" : "NO", static_cast<unsigned long long>(report->output_checksum));
    std::printf("critical path: %.0f tokens/s, step ms p50 %.2f p99 %.2f (%s)\n", report->critical_tokens_per_s,
                report->critical_step_ms_p50, report->critical_step_ms_p99,
                report->migration_steps > 0
                    ? absl::StrFormat("steady p99 %.2f, during migrations p99 %.2f over %d steps", report->critical_steady_ms_p99,
                                      report->critical_migration_ms_p99, report->migration_steps)
                          .c_str()
                    : "no migration");
    for (const MigrationRecord& m : report->migrations) {
      const std::string steps =
          m.commit_step >= 0 ? absl::StrCat("steps ", m.start_step, "-", m.commit_step)
          : m.abort_step >= 0 ? absl::StrCat("started at step ", m.start_step, ", aborted at step ", m.abort_step)
                              : absl::StrCat("started at step ", m.start_step, ", unfinished at the end");
      std::printf("migration to epoch %lld: %s, %d replicas (from scratch: %d), %.1f MiB%s%s\n",
                  static_cast<long long>(m.epoch), steps.c_str(), m.moved_replicas, m.scratch_moved_replicas,
                  static_cast<double>(m.bytes) / (1 << 20), m.commit_step < 0 && !m.error.empty() ? ", ABORTED: " : "",
                  m.error.c_str());
    }
    if (!absl::GetFlag(FLAGS_report).empty()) {
      absl::Status written = WriteFileAtomically(absl::GetFlag(FLAGS_report), report->ToJson());
      if (!written.ok()) Fail(kExitRuntime, written, true);
    }
  }
  current_comm.reset();
  return report->tokens_conserved ? 0 : kExitRuntime;
}

}  // namespace
}  // namespace switchyard::worker

int main(int argc, char** argv) { return switchyard::worker::Main(argc, argv); }
