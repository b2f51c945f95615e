// switchd: the daemon that owns the uplink's classifier, the queues, the
// AF_XDP sockets and the lifecycle of every port and VM NIC.
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "loader/log.h"
#include "control/control.h"
#include "switchd/app/control_handler.h"
#include "switchd/app/metrics.h"
#include "switchd/host/service.h"
#include "switchd/app/switch.h"

using namespace xvmq;
using namespace xvmq::switchd;

namespace {

// "0:1,1:0" -> {0: 1, 1: 0}
bool parse_queue_cpus(const std::string& text, std::map<uint32_t, int>* out) {
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto colon = item.find(':');
    if (colon == std::string::npos) return false;
    try {
      (*out)[static_cast<uint32_t>(std::stoul(item.substr(0, colon)))] = std::stoi(item.substr(colon + 1));
    } catch (const std::exception&) {
      return false;
    }
  }
  return true;
}

// The command line, as parsed.
struct Cli {
  SwitchOptions opts;
  control::ServerOptions ctl;
  std::string queue_cpus, flow_rules = "ethtool", config_file, metrics_listen, log_level = "info";
  bool verbose = false, detach_on_exit = false;
  double idle_s = 0, read_s = 0, write_s = 0;
  CLI::Option* reserved_opt = nullptr;
  CLI::Option* umem_frames = nullptr;
};

void add_control_options(CLI::App& app, Cli& c) {
  app.add_option("--state-dir", c.opts.state_dir, "where the configuration is kept")->capture_default_str();
  app.add_option("--socket", c.ctl.path, "control socket")->capture_default_str();
  app.add_option("--group", c.ctl.group, "group allowed on the control socket besides root")->capture_default_str();
  app.add_option("--max-clients", c.ctl.max_clients,
                 "control connections at once; one more is refused as full (the last --root-reserved are root's)")
      ->capture_default_str()
      ->check(CLI::Range(2, 65536));
  app.add_option("--max-clients-per-uid", c.ctl.max_clients_per_uid, "control connections of one uid other than root")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  c.reserved_opt = app.add_option("--root-reserved", c.ctl.root_reserved,
                                  "of --max-clients, kept for root (uid 0); default 16, at "
                                  "most a quarter of --max-clients")
                       ->check(CLI::Range(0, 65535));
  c.idle_s = c.ctl.idle_timeout.count() / 1000.0;
  c.read_s = c.ctl.read_timeout.count() / 1000.0;
  c.write_s = c.ctl.write_timeout.count() / 1000.0;
  app.add_option("--idle-timeout", c.idle_s, "seconds: a control connection with no request under way is closed")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--read-timeout", c.read_s,
                 "seconds: a request line begun and not ended is refused, its connection closed")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--write-timeout", c.write_s, "seconds: a response the client does not read closes its connection")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 3600.0));
}

void add_datapath_options(CLI::App& app, Cli& c) {
  app.add_option("--max-vmqs", c.opts.max_vmqs, "size of the vmq pool")
      ->capture_default_str()
      ->check(CLI::Range(1, XVMQ_MAX_VMQS - 1));
  app.add_option("--pin-root", c.opts.datapath.pin_root, "bpffs directory of the uplinks' maps")->capture_default_str();
  c.umem_frames =
      app.add_option("--umem-frames", c.opts.datapath.worker.frames,
                     "receive buffers per queue (default: the buffer rule's minimum for --max-nics: uplink reserve "
                     "+ headroom + burst budget + max-nics x floor; see docs/architecture.md)")
          ->check(CLI::Range(256, 1 << 20));
  app.add_option("--max-nics", c.opts.datapath.max_nics,
                 "VM NICs connected at once, at most: every queue's UMEM keeps --nic-floor buffers for each")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--nic-floor", c.opts.datapath.worker.nic_floor,
                 "buffers always in the fill ring of each socket on a VM NIC's backend")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--nic-ring-size", c.opts.datapath.worker.nic_ring_size,
                 "rx/tx ring entries of the sockets on VM NICs' backends (kernel memory per socket)")
      ->capture_default_str()
      ->check(CLI::IsMember({256, 512, 1024, 2048, 4096}));
  app.add_option("--frame-size", c.opts.datapath.worker.frame_size, "bytes per buffer (2048 or 4096)")
      ->capture_default_str()
      ->check(CLI::IsMember({2048, 4096}));
  app.add_option("--ring-size", c.opts.datapath.worker.ring_size, "AF_XDP ring entries")
      ->capture_default_str()
      ->check(CLI::IsMember({256, 512, 1024, 2048, 4096}));
  app.add_option("--nic-inflight", c.opts.datapath.worker.nic_inflight, "frames in flight to one NIC per queue")
      ->capture_default_str();
  app.add_option("--queue-cpus", c.queue_cpus,
                 "receive queue to its worker's CPU, e.g. 0:1,1:0 (default: the CPU after the queue's interrupt's, else after CPU QUEUE among the allowed)");
  app.add_option("--dedicated-queues", c.opts.datapath.dedicated_queues,
                 "the highest N receive queues are kept for hardware-steered vmqs")
      ->capture_default_str();
  app.add_option("--flow-rules", c.flow_rules,
                 "ethtool: program the NIC's RX flow rule for each hardware-steered vmq; external: the NIC "
                 "already steers (rules made by other tooling)")
      ->capture_default_str()
      ->check(CLI::IsMember({"ethtool", "external"}));
  app.add_option("--vmq-umem-frames", c.opts.datapath.vmq_umem_frames, "buffers of a hardware-steered vmq's own UMEM")
      ->capture_default_str()
      ->check(CLI::Range(256, 1 << 20));
  app.add_option("--fdb-size", c.opts.datapath.fdb_size, "MACs learned behind the uplink, at most")
      ->capture_default_str()
      ->check(CLI::Range(16, 1 << 22));
  app.add_option("--fdb-age", c.opts.datapath.fdb_age_s, "seconds before an unseen learned MAC is forgotten")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_flag("--busy-poll", c.opts.datapath.worker.busy_poll,
               "workers spin instead of sleeping (then at the normal scheduler unless --rt-priority is given)");
  app.add_option("--rt-priority", c.opts.datapath.worker.rt_priority,
                 "SCHED_FIFO priority of the queue workers and of the vmq processors' delivery threads (1-99; 0: "
                 "the normal scheduler): like the kernel's softirq, they run ahead of the VMs' threads on a busy CPU, "
                 "so a CPU-bound VM does not make them drop frames")
      ->capture_default_str()
      ->check(CLI::Range(0, 99));
  app.add_option("--spread-above", c.opts.datapath.spread_above,
                 "frames a second a receiving CPU delivers to kernel-delivered vmqs from which they go through "
                 "their processors (a CPU that is one spills to the next); below half of it the receiving CPU "
                 "delivers them itself, with no hop (0: always through their processors)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000000));
  app.add_option("--cpu-queue", c.opts.datapath.cpu_queue,
                 "frames each vmq processor's delivery queue (its CPUMAP entry) holds")
      ->capture_default_str()
      ->check(CLI::Range(64, 16384));
}

void add_service_options(CLI::App& app, Cli& c) {
  app.add_flag("--detach-on-exit", c.detach_on_exit,
               "on SIGTERM detach the classifier (default: leave it passing frames)");
  app.add_option("--config", c.config_file,
                 "at start, after the saved state, bring the switch to this configuration "
                 "file (TOML, see README); a bad file: exit 2");
  app.add_flag("-v,--verbose", c.verbose, "libbpf and libxdp messages");
  app.add_option("--metrics-listen", c.metrics_listen,
                 "serve Prometheus metrics on ADDR:PORT (a bare PORT: 127.0.0.1); off when not given");
  app.add_option("--log-level", c.log_level, "error, warn, info or debug; on the journal with <N> priorities")
      ->capture_default_str()
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
}

// The options' checks across each other and against this host: 0, or the
// usage exit code after saying why.
int check_options(Cli& c) {
  if (!c.reserved_opt->count()) c.ctl.root_reserved = std::min(c.ctl.root_reserved, c.ctl.max_clients / 4);
  if (c.ctl.root_reserved >= c.ctl.max_clients) {
    std::fprintf(stderr, "switchd: --root-reserved %d: must be less than --max-clients %d\n", c.ctl.root_reserved,
                 c.ctl.max_clients);
    return 2;
  }
  auto ms = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000 + 0.5)); };
  c.ctl.idle_timeout = ms(c.idle_s);
  c.ctl.read_timeout = ms(c.read_s);
  c.ctl.write_timeout = ms(c.write_s);
  if (!c.metrics_listen.empty())
    if (auto a = parse_listen(c.metrics_listen); !a) {
      std::fprintf(stderr, "switchd: %s\n", a.error().message.c_str());
      return 2;
    }
  if (!c.queue_cpus.empty() && !parse_queue_cpus(c.queue_cpus, &c.opts.datapath.queue_cpus)) {
    std::fprintf(stderr, "switchd: --queue-cpus '%s': use QUEUE:CPU[,QUEUE:CPU...]\n", c.queue_cpus.c_str());
    return 2;
  }
  {
    // A CPU this process may not run on would leave its queue unserved.
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    sched_getaffinity(0, sizeof(allowed), &allowed);
    for (const auto& [q, cpu] : c.opts.datapath.queue_cpus)
      if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
        std::fprintf(stderr,
                     "switchd: --queue-cpus: queue %u on CPU %d: no such CPU among the %d this process may "
                     "use; see nproc\n",
                     q, cpu, CPU_COUNT(&allowed));
        return 2;
      }
  }
  c.opts.datapath.flow_rules = c.flow_rules == "external" ? FlowRules::External : FlowRules::Ethtool;
  if (c.umem_frames->count() == 0) c.opts.datapath.worker.frames = 0;  // the rule's minimum, at attach
  if (c.opts.datapath.worker.nic_inflight > c.opts.datapath.worker.nic_ring_size) {
    std::fprintf(stderr,
                 "switchd: --nic-inflight %u exceeds --nic-ring-size %u: the backend's transmit ring holds the frames "
                 "in flight\n",
                 c.opts.datapath.worker.nic_inflight, c.opts.datapath.worker.nic_ring_size);
    return 2;
  }
  {
    // Checked again at attach with the uplink's queues; here without them
    // (a NIC has one socket per general queue, two or more with --dedicated-queues).
    auto w = general_worker_options(c.opts.datapath, 1, c.opts.datapath.dedicated_queues ? 1 : 0);
    if (!w) {
      std::fprintf(stderr, "switchd: %s\n", w.error().message.c_str());
      return 2;
    }
  }
  return 0;
}

// Each NIC takes a socket per queue and its VM port program's fds: a
// thousand NICs need more than the usual soft limit of 1024.
void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      std::fprintf(stderr, "switchd: raising RLIMIT_NOFILE from %llu to %llu: %s\n",
                   static_cast<unsigned long long>(was), static_cast<unsigned long long>(rl.rlim_max),
                   std::strerror(errno));
  }
}

// --config: the file applied after the restored state; 0, or the exit code.
int apply_config_file(Switch& sw, const std::string& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    service::log(service::Level::Error, "--config %s: cannot read it", file.c_str());
    return 2;
  }
  try {
    sw.handle("config.apply", {{"config", text.str()}, {"source", file}});
  } catch (const Refused& r) {
    service::log(service::Level::Error, "%s", r.error.message.c_str());
    return r.error.kind == ErrorKind::Usage ? 2 : 1;
  }
  return 0;
}

// Metrics, the control socket, readiness; then until SIGTERM or SIGINT,
// and the shutdown in order.
int serve(Switch* s, Cli& c, sigset_t sigs) {
  // Before the control socket: a taken address fails the start before any
  // client sees this switchd.
  std::unique_ptr<MetricsServer> metrics;
  if (!c.metrics_listen.empty()) {
    auto m = MetricsServer::start(c.metrics_listen, [s] { return s->snapshot(); });
    if (!m) {
      service::log(service::Level::Error, "%s", m.error().message.c_str());
      return 1;
    }
    metrics = std::move(m.value());
    service::log(service::Level::Info, "metrics on http://%s/metrics", metrics->address().c_str());
  }
  c.ctl.log = [](const std::string& line) { service::log(service::Level::Warn, "control: %s", line.c_str()); };
  auto server = control::ControlServer::start(c.ctl, [s](const std::string& op, const nlohmann::json& args) {
    service::log(service::Level::Debug, "control: %s %s", op.c_str(), args.dump().c_str());
    return handle_control(*s, op, args);
  });
  if (!server) {
    service::log(service::Level::Error, "%s", server.error().message.c_str());
    return 1;
  }
  // An event wakes the requests parked on `events` (events --follow).
  control::ControlServer* srv = server->get();
  s->on_event([srv] { srv->notify(); });
  // Ready only now: the state is restored, its uplink attached, and the
  // control socket answers.
  const SwitchSnapshot snap = s->snapshot();
  const std::string uplink = snap.uplink ? snap.uplink->name : "none";
  service::log(service::Level::Info, "ready on %s", c.ctl.path.c_str());
  service::notify("READY=1\nSTATUS=serving " + c.ctl.path + ", uplink " + uplink + ", " + std::to_string(snap.ports) +
                  " port(s)");

  sigdelset(&sigs, SIGPIPE);
  int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
  signalfd_siginfo si{};
  while (read(sfd, &si, sizeof(si)) < 0 && errno == EINTR) {
  }
  service::log(service::Level::Info, "signal %u, shutting down", si.ssi_signo);
  service::notify("STOPPING=1\nSTATUS=shutting down");
  metrics.reset();
  s->on_event({});
  (*server)->stop();
  // Filters first, so that no frame is redirected to a socket being closed.
  s->clear_filters();
  if (c.detach_on_exit) s->detach_uplink();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "switchd: Hyper-V's VMQ and extensible switch on XDP and AF_XDP.\n"
      "Example: switchd --state-dir /var/lib/xvmq --max-vmqs 2"};
  Cli c;
  add_control_options(app, c);
  add_datapath_options(app, c);
  add_service_options(app, c);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, and the usage exit code of switchctl.
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "switchd: %s (see switchd --help)\n", what.c_str());
    return 2;
  }
  service::init_log(*service::parse_level(c.log_level));
  // A spinning worker at a real-time priority would starve its CPU.
  if (c.opts.datapath.worker.busy_poll && !app.count("--rt-priority")) c.opts.datapath.worker.rt_priority = 0;
  if (int rc = check_options(c); rc != 0) return rc;
  raise_nofile();
  log::install(c.verbose);

  // Signals are read from a signalfd, so workers never see them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto sw = Switch::start(c.opts);
  if (!sw) {
    service::log(service::Level::Error, "%s", sw.error().message.c_str());
    return 1;
  }
  if (!c.config_file.empty())
    if (int rc = apply_config_file(**sw, c.config_file); rc != 0) return rc;
  if (int rc = serve(sw->get(), c, sigs); rc != 0) return rc;
  sw->reset();
  service::log(service::Level::Info, "stopped (classifier %s)", c.detach_on_exit ? "detached" : "left passing frames");
  return 0;
}
