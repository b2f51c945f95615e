// The control socket's transport (switchd/control.h) with a fake handler, and
// switchctl's input checks, requests and exit codes, run as the built binary.
#include <fcntl.h>
#include <grp.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "switchd/control.h"
#include "tests/harness.h"

extern char** environ;

namespace {

using namespace xvmq::control;
using json = nlohmann::json;
namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Bytes as given, responses as they come: for the framing tests.
class RawConn {
 public:
  explicit RawConn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawConn() { ::close(fd_); }
  bool connected() const { return connected_; }

  void send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close first; its answer is still there to read
      data.remove_prefix(n);
    }
  }

  // The next response, or null at EOF or after 5 s.
  json next() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        json j = json::parse(buf_.substr(0, nl), nullptr, false);
        buf_.erase(0, nl + 1);
        return j;
      }
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return nullptr;
      buf_.append(chunk, n);
    }
  }

  // EOF, or a reset because the server closed before reading all we sent.
  bool closed_by_peer() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return buf_.empty() && (n == 0 || (n < 0 && errno == ECONNRESET));
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/xvmq-control-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);  // the privileged tests connect as nobody
    path_ = dir_ + "/run/xvmq/switchd.sock";
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  // Echoes op and args; "fail" throws the kind named by args.kind;
  // "bad_args" reads a missing argument; "crash" throws something else.
  json handle(const std::string& op, const json& args) {
    std::lock_guard lock(mu_);
    calls_.push_back({{"op", op}, {"args", args}});
    if (op == "fail") throw ControlError(*parse_error_kind(args.at("kind").get<std::string>()), "refused as asked");
    if (op == "bad_args") return args.at("port").get<std::string>();
    if (op == "crash") throw std::runtime_error("boom");
    if (op == "port.create") {  // a port named after an error kind is refused with it
      std::string name = args.value("name", "");
      auto kind = parse_error_kind(name == "unsupported" ? "unsupported_version" : name);
      if (kind) throw ControlError(*kind, "port " + name + ": refused as asked");
    }
    if (reply_.contains(op)) return reply_[op];
    return {{"op", op}, {"args", args}};
  }

  // By default the group is this process's own, so that the tests also pass unprivileged.
  void start(std::string group = "", int max_clients = 16) {
    if (group.empty()) group = ::getgrgid(getegid())->gr_name;
    ServerOptions o{.path = path_, .group = group, .max_clients = max_clients};
    auto s = ControlServer::start(std::move(o), [this](const std::string& op, const json& args) {
      return handle(op, args);
    });
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(s).value();
  }

  ControlClient client() {
    auto c = ControlClient::connect(path_, std::chrono::seconds(5));
    EXPECT_TRUE(c.ok()) << c.error().message;
    return std::move(c).value();
  }

  size_t call_count() {
    std::lock_guard lock(mu_);
    return calls_.size();
  }
  json last_call() {
    std::lock_guard lock(mu_);
    return calls_.empty() ? json() : calls_.back();
  }

  std::string dir_, path_;
  std::unique_ptr<ControlServer> server_;
  std::mutex mu_;
  std::vector<json> calls_;
  json reply_ = json::object();  // op -> canned result
};

TEST_F(ControlTest, RoundTripEchoesId) {
  start();
  RawConn raw(path_);
  ASSERT_TRUE(raw.connected());
  raw.send(R"({"v": 1, "id": 4242, "op": "port.create", "args": {"name": "vm1"}})" "\n");
  json r = raw.next();
  EXPECT_EQ(r, json::parse(R"({"v": 1, "id": 4242, "ok": true,
                                "result": {"op": "port.create", "args": {"name": "vm1"}}})"));

  ControlClient c = client();
  auto resp = c.call("show");
  ASSERT_TRUE(resp.ok()) << resp.error().message;
  EXPECT_TRUE(resp->ok);
  EXPECT_EQ(resp->id, 1);
  EXPECT_EQ(resp->result, json::parse(R"({"op": "show", "args": {}})"));
}

TEST_F(ControlTest, MissingArgsArriveAsEmptyObjectAndNullResultAsObject) {
  reply_["nothing"] = nullptr;
  start();
  RawConn raw(path_);
  raw.send(R"({"v": 1, "id": 1, "op": "show"})" "\n" R"({"v": 1, "id": 2, "op": "nothing"})" "\n");
  EXPECT_EQ(raw.next()["result"]["args"], json::object());
  EXPECT_EQ(raw.next()["result"], json::object());
}

TEST_F(ControlTest, SeveralRequestsOnOneConnectionAnsweredInOrder) {
  start();
  RawConn raw(path_);
  std::string batch;
  for (int i = 0; i < 20; ++i)
    batch += json{{"v", 1}, {"id", 100 + i}, {"op", "nic.connect"}, {"args", {{"port", "vm" + std::to_string(i)}}}}
                 .dump() + "\n";
  raw.send(batch);  // one write: the server must split it
  for (int i = 0; i < 20; ++i) {
    json r = raw.next();
    ASSERT_TRUE(r.is_object()) << "response " << i;
    EXPECT_EQ(r["id"], 100 + i);
    EXPECT_EQ(r["result"]["args"]["port"], "vm" + std::to_string(i));
  }

  ControlClient c = client();
  for (int i = 1; i <= 5; ++i) {
    auto resp = c.call("port.create", {{"name", "p" + std::to_string(i)}});
    ASSERT_TRUE(resp.ok()) << resp.error().message;
    EXPECT_EQ(resp->id, i);
    EXPECT_EQ(resp->result["args"]["name"], "p" + std::to_string(i));
  }
}

TEST_F(ControlTest, UnsupportedVersionNamesTheOneSpoken) {
  start();
  RawConn raw(path_);
  raw.send(R"({"v": 2, "id": 7, "op": "show"})" "\n" R"({"id": 8, "op": "show"})" "\n"
           R"({"v": "1", "id": 9, "op": "show"})" "\n");
  for (int id : {7, 8, 9}) {
    json r = raw.next();
    EXPECT_EQ(r["id"], id);
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["error"]["kind"], "unsupported_version");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("version 1"), std::string::npos) << r;
  }
  raw.send(R"({"v": 1, "id": 10, "op": "show"})" "\n");  // the connection stays usable
  EXPECT_EQ(raw.next()["ok"], true);
  EXPECT_EQ(call_count(), 1u);
}

TEST_F(ControlTest, BadEnvelopeIsUsageAndKeepsConnection) {
  start();
  RawConn raw(path_);
  struct Case {
    const char* line;
    json id;
  } cases[] = {
      {R"({"v": 1, "op": "show"})", nullptr},
      {R"({"v": 1, "id": "7", "op": "show"})", nullptr},
      {R"({"v": 1, "id": 7.5, "op": "show"})", nullptr},
      {R"({"v": 1, "id": 3})", 3},
      {R"({"v": 1, "id": 4, "op": 12})", 4},
      {R"({"v": 1, "id": 5, "op": "show", "args": [1]})", 5},
      {R"({"v": 1, "id": 6, "op": "show", "args": null})", 6},
      {R"([1, 2])", nullptr},
  };
  for (const Case& c : cases) {
    raw.send(std::string(c.line) + "\n");
    json r = raw.next();
    EXPECT_EQ(r["ok"], false) << c.line;
    EXPECT_EQ(r["error"]["kind"], "usage") << c.line;
    EXPECT_EQ(r["id"], c.id) << c.line;
  }
  EXPECT_EQ(call_count(), 0u);
  raw.send(R"({"v": 1, "id": 11, "op": "show"})" "\n");
  EXPECT_EQ(raw.next()["id"], 11);
}

TEST_F(ControlTest, HandlerErrorsBecomeTypedResponses) {
  start();
  ControlClient c = client();
  for (std::string kind : {"usage", "not_found", "wrong_state", "exists", "exhausted", "kernel", "permission"}) {
    auto r = c.call("fail", {{"kind", kind}});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_FALSE(r->ok);
    EXPECT_EQ(r->kind, kind);
    EXPECT_EQ(r->message, "refused as asked");
  }
  auto bad = c.call("bad_args", {{"port", 3}});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->kind, "usage");
  EXPECT_NE(bad->message.find("bad_args"), std::string::npos) << bad->message;
  auto crash = c.call("crash");
  ASSERT_TRUE(crash.ok());
  EXPECT_EQ(crash->kind, "kernel");
  EXPECT_NE(crash->message.find("internal error: boom"), std::string::npos) << crash->message;
  EXPECT_TRUE(c.call("show")->ok);
}

TEST_F(ControlTest, MalformedJsonLineIsUsageThenClose) {
  start();
  for (const char* line : {"{not json", "", "{\"v\": 1, \"id\": 1, \"op\": \"show\"", "\xff\xfe"}) {
    RawConn raw(path_);
    raw.send(std::string(line) + "\n" + R"({"v": 1, "id": 2, "op": "show"})" "\n");
    json r = raw.next();
    EXPECT_EQ(r["ok"], false) << line;
    EXPECT_EQ(r["error"]["kind"], "usage") << line;
    EXPECT_TRUE(r["id"].is_null()) << line;
    EXPECT_TRUE(raw.closed_by_peer()) << line;  // the request after it is not answered
  }
  EXPECT_EQ(call_count(), 0u);
}

TEST_F(ControlTest, LineOfOneMiBIsServedAndLongerIsUsageThenClose) {
  start();
  std::string head = R"({"v": 1, "id": 1, "op": "echo", "args": {"pad": ")", tail = R"("}})";
  std::string fits = head + std::string(kMaxLine - head.size() - tail.size(), 'x') + tail;
  ASSERT_EQ(fits.size(), kMaxLine);
  {
    RawConn raw(path_);
    raw.send(fits + "\n");
    json r = raw.next();
    EXPECT_EQ(r["ok"], true);
    EXPECT_EQ(r["result"]["args"]["pad"].get<std::string>().size(), fits.size() - head.size() - tail.size());
  }
  for (std::string line : {fits.substr(0, head.size()) + "x" + fits.substr(head.size()) + "\n",  // one byte over
                           std::string(3 * kMaxLine, 'y')}) {                                  // no newline at all
    RawConn raw(path_);
    raw.send(line);
    json r = raw.next();
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["error"]["kind"], "usage");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("1 MiB"), std::string::npos);
    EXPECT_TRUE(raw.closed_by_peer());
  }
  EXPECT_EQ(call_count(), 1u);
}

TEST_F(ControlTest, ConcurrentClientsAreServedIndependently) {
  start();
  std::vector<ControlClient> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(client());
  RawConn idle(path_);  // holds a half-written line: must not block the others
  idle.send(R"({"v": 1, "id": 1, "op": )");
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 4; ++i) {
      auto r = clients[i].call("port.create", {{"name", "c" + std::to_string(i)}});
      ASSERT_TRUE(r.ok()) << r.error().message;
      EXPECT_EQ(r->id, round + 1);
      EXPECT_EQ(r->result["args"]["name"], "c" + std::to_string(i));
    }
  idle.send("\"show\"}\n");
  EXPECT_EQ(idle.next()["ok"], true);
}

TEST_F(ControlTest, ClientsBeyondTheLimitWaitForASlot) {
  start("", 1);
  auto first = std::make_unique<ControlClient>(client());
  ASSERT_TRUE(first->call("show")->ok);
  {
    auto second = ControlClient::connect(path_, std::chrono::milliseconds(300));
    ASSERT_TRUE(second.ok());  // in the backlog
    auto waiting = second->call("show");
    EXPECT_FALSE(waiting.ok());
    EXPECT_EQ(waiting.error().code, ETIMEDOUT);
  }
  first.reset();
  auto third = ControlClient::connect(path_, std::chrono::seconds(5));
  ASSERT_TRUE(third.ok());
  auto r = third->call("show");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->ok);
}

TEST_F(ControlTest, UnknownGroupIsAStartError) {
  auto s = ControlServer::start({.path = path_, .group = "xvmq-no-such-group"}, [](auto&&, auto&&) { return json(); });
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("xvmq-no-such-group"), std::string::npos) << s.error().message;
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(ControlTest, SocketHasMode0660AndTheGroupAndItsDirectory0755) {
  // root may give the socket any group; another user only its own.
  group* g = geteuid() == 0 ? ::getgrnam("daemon") : nullptr;
  if (!g) g = ::getgrgid(getegid());
  ASSERT_NE(g, nullptr);
  std::string name = g->gr_name;
  gid_t gid = g->gr_gid;
  start(name);
  struct stat st{};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_EQ(server_->gid(), gid);
  for (auto d : {fs::path(path_).parent_path(), fs::path(path_).parent_path().parent_path()}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u) << d;
  }
}

TEST_F(ControlTest, SecondServerOnTheSamePathIsRefused) {
  start();
  auto second = ControlServer::start({.path = path_}, [](auto&&, auto&&) { return json(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EADDRINUSE);
  EXPECT_NE(second.error().message.find("another switchd is listening on " + path_), std::string::npos)
      << second.error().message;
  auto r = client().call("show");  // the first is untouched
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->ok);
}

TEST_F(ControlTest, StaleSocketFileIsReplaced) {
  fs::create_directories(fs::path(path_).parent_path());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::close(fd);  // as a crashed switchd leaves it
  ASSERT_TRUE(fs::is_socket(path_));
  start();
  auto r = client().call("show");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->ok);
}

TEST_F(ControlTest, NonSocketFileIsNotRemoved) {
  fs::create_directories(fs::path(path_).parent_path());
  std::ofstream(path_) << "keep me";
  auto s = ControlServer::start({.path = path_}, [](auto&&, auto&&) { return json(); });
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("not a socket"), std::string::npos) << s.error().message;
  EXPECT_EQ(slurp(path_), "keep me");
}

TEST_F(ControlTest, StopClosesConnectionsAndRemovesTheSocket) {
  start();
  ControlClient c = client();
  ASSERT_TRUE(c.call("show")->ok);
  server_->stop();
  server_->stop();  // idempotent
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_FALSE(c.call("show").ok());
  EXPECT_FALSE(ControlClient::connect(path_).ok());
  start();  // the path is free again
  EXPECT_TRUE(client().call("show")->ok);
}

// Connects as nobody (65534) with raw syscalls only (the parent has threads)
// and returns the first response line.
json call_as_nobody(const std::string& path) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return nullptr;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
      ::_exit(10);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) ::_exit(11);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    static const char req[] = "{\"v\": 1, \"id\": 1, \"op\": \"show\"}\n";
    (void)!::send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
      (void)!::write(pipefd[1], buf, n);
      if (std::memchr(buf, '\n', n)) break;
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return json::parse(out.substr(0, out.find('\n')), nullptr, false);
}

TEST_F(ControlTest, PeerNeitherRootNorInTheGroupIsRefused) {
  XVMQ_REQUIRE_PRIVILEGES();
  start("root");
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);  // the file mode alone would let nobody in
  json r = call_as_nobody(path_);
  EXPECT_EQ(r["ok"], false) << r;
  EXPECT_EQ(r["error"]["kind"], "permission") << r;
  EXPECT_NE(r["error"]["message"].get<std::string>().find("uid 65534"), std::string::npos) << r;
  EXPECT_EQ(call_count(), 0u);
}

TEST_F(ControlTest, PeerInTheGroupIsServed) {
  XVMQ_REQUIRE_PRIVILEGES();
  group* g = ::getgrgid(65534);
  if (!g) GTEST_SKIP() << "no group 65534";
  start(g->gr_name);
  json r = call_as_nobody(path_);
  EXPECT_EQ(r["ok"], true) << r;
  EXPECT_EQ(r["id"], 1) << r;
}

// switchctl, the built binary.

struct Exit {
  int code = -1;
  std::string out, err;
};

class SwitchctlTest : public ControlTest {
 protected:
  Exit switchctl(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
    std::string out = dir_ + "/stdout", err = dir_ + "/stderr";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    args.insert(args.begin(), SWITCHCTL_PATH);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (char** e = environ; *e; ++e)
      if (std::strncmp(*e, "XVMQ_SOCKET=", 12) != 0) envp.push_back(*e);
    for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    pid_t pid;
    Exit r;
    int rc = posix_spawn(&pid, SWITCHCTL_PATH, &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      ADD_FAILURE() << "spawn " << SWITCHCTL_PATH << ": " << std::strerror(rc);
      return r;
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  // switchctl --socket <path_> args...
  Exit ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", path_});
    return switchctl(std::move(args));
  }
};

bool one_line(const std::string& s) { return s.starts_with("switchctl: ") && s.find('\n') == s.size() - 1; }

TEST_F(SwitchctlTest, BadInputExits2WithOneLineAndSendsNothing) {
  start();
  const std::vector<std::vector<std::string>> cases = {
      {"nic", "create", "vm1", "--mac", "01:00:5e:00:00:01", "--backend", "vm1-host"},  // multicast
      {"nic", "create", "vm1", "--mac", "ff:ff:ff:ff:ff:ff", "--backend", "vm1-host"},  // broadcast
      {"nic", "create", "vm1", "--mac", "00:00:00:00:00:00", "--backend", "vm1-host"},  // all-zero
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00", "--backend", "vm1-host"},
      {"nic", "create", "vm1", "--mac", "02-00-00-00-00-01", "--backend", "vm1-host"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:0g", "--backend", "vm1-host"},
      {"nic", "create", "vm1", "--mac", "2:00:00:00:00:001", "--backend", "vm1-host"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--vlan", "4095"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--vlan", "-1"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--vlan", "ten"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--vmq", "on"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--steering", "fpga"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "bad/dev"},
      {"nic", "create", "vm1", "--backend", "vm1-host"},  // no MAC
      {"port", "create", ""},
      {"port", "create", ".vm1"},
      {"port", "create", "--", "-vm1"},
      {"port", "create", "vm-name-too-long"},  // 16 characters
      {"port", "create", "vm 1"},
      {"nic", "connect", "vm/1"},
      {"vmq", "allocate", "vm1", "extra"},
      {"uplink", "attach", "eth0", "--mode", "fast"},
      {"events", "--since", "-1"},
      {"show", "--bogus"},
      {"frobnicate"},
      {"nic"},
      {},
  };
  for (const auto& args : cases) {
    Exit r = ctl(args);
    std::string shown;
    for (const auto& a : args) shown += "'" + a + "' ";
    EXPECT_EQ(r.code, 2) << shown << r.err;
    EXPECT_TRUE(one_line(r.err)) << shown << r.err;
    EXPECT_EQ(r.out, "") << shown;
  }
  EXPECT_EQ(call_count(), 0u);
}

TEST_F(SwitchctlTest, UnreachableSwitchdExits1NamingTheSocket) {
  std::string nowhere = dir_ + "/nothing-listens.sock";
  Exit r = switchctl({"--socket", nowhere, "port", "create", "vm1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find(nowhere), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("switchd running"), std::string::npos) << r.err;

  r = switchctl({"show"}, {"XVMQ_SOCKET=" + nowhere});  // the environment moves the default
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(nowhere), std::string::npos) << r.err;
}

TEST_F(SwitchctlTest, EnvironmentSocketIsUsedAndOptionWins) {
  start();
  Exit r = switchctl({"show"}, {"XVMQ_SOCKET=" + path_});
  EXPECT_EQ(r.code, 0) << r.err;
  r = switchctl({"--socket", path_, "show"}, {"XVMQ_SOCKET=" + dir_ + "/elsewhere.sock"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(call_count(), 2u);
}

TEST_F(SwitchctlTest, SubcommandsSendTheirOpAndArgs) {
  reply_["nic.create"] = {{"port", "vm1"}, {"state", "created"}, {"vmq", nullptr}};
  reply_["nic.connect"] = {{"port", "vm1"}, {"state", "connected"}, {"vmq", 2}};
  reply_["uplink.attach"] = {{"name", "eth0"}, {"mode", "skb"}, {"state", "attached"}};
  reply_["port.delete"] = json::object();
  reply_["uplink.detach"] = json::object();
  reply_["vmq.allocate"] = {{"port", "vm1"}, {"state", "connected"}, {"vmq", 3}};
  start();
  struct Case {
    std::vector<std::string> args;
    std::string op;
    json sent;
    std::string out;
  } cases[] = {
      {{"uplink", "attach", "eth0", "--mode", "skb"}, "uplink.attach", {{"name", "eth0"}, {"mode", "skb"}},
       "uplink eth0: attached (mode skb)\n"},
      {{"uplink", "attach", "eth0"}, "uplink.attach", {{"name", "eth0"}}, "uplink eth0: attached (mode skb)\n"},
      {{"uplink", "detach"}, "uplink.detach", json::object(), "uplink: detached\n"},
      {{"port", "create", "vm1"}, "port.create", {{"name", "vm1"}}, "port vm1: created\n"},
      {{"port", "teardown", "vm1"}, "port.teardown", {{"name", "vm1"}}, "port vm1: torn down\n"},
      {{"port", "delete", "vm1"}, "port.delete", {{"name", "vm1"}}, "port vm1: deleted\n"},
      {{"nic", "create", "vm1", "--mac", "02:AA:00:00:00:01", "--backend", "vm1-host"}, "nic.create",
       {{"port", "vm1"}, {"mac", "02:aa:00:00:00:01"}, {"backend", "vm1-host"}}, "nic vm1: created\n"},
      {{"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "tap0", "--vmq", "off", "--vlan", "4094",
        "--steering", "hardware"},
       "nic.create",
       {{"port", "vm1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "tap0"}, {"vmq", "off"}, {"vlan", 4094},
        {"steering", "hardware"}},
       "nic vm1: created\n"},
      {{"nic", "connect", "vm1"}, "nic.connect", {{"port", "vm1"}}, "nic vm1: connected (vmq 2)\n"},
      {{"nic", "disconnect", "vm1"}, "nic.disconnect", {{"port", "vm1"}}, "nic vm1: disconnected\n"},
      {{"nic", "delete", "vm1"}, "nic.delete", {{"port", "vm1"}}, "nic vm1: deleted\n"},
      {{"vmq", "allocate", "vm1"}, "vmq.allocate", {{"port", "vm1"}}, "nic vm1: vmq allocated (vmq 3, state connected)\n"},
      {{"vmq", "free", "vm1"}, "vmq.free", {{"port", "vm1"}}, "nic vm1: vmq freed\n"},
      {{"events", "--since", "5"}, "events", {{"since", 5}}, "no events\n"},
      {{"events"}, "events", json::object(), "no events\n"},
  };
  for (const Case& c : cases) {
    Exit r = ctl(c.args);
    EXPECT_EQ(r.code, 0) << c.op << ": " << r.err;
    EXPECT_EQ(r.err, "") << c.op;
    EXPECT_EQ(last_call(), json({{"op", c.op}, {"args", c.sent}})) << c.op;
    EXPECT_EQ(r.out, c.out) << c.op;
  }
}

TEST_F(SwitchctlTest, ErrorKindsMapToExitCodes) {
  start();
  const std::tuple<std::string, std::string, int> kinds[] = {
      {"usage", "usage", 2},         {"not_found", "not_found", 3}, {"wrong_state", "wrong_state", 4},
      {"exists", "exists", 5},       {"exhausted", "exhausted", 6}, {"kernel", "kernel", 7},
      {"unsupported", "unsupported_version", 8},                    {"permission", "permission", 9}};
  for (const auto& [port, kind, code] : kinds) {
    Exit r = ctl({"port", "create", port});
    EXPECT_EQ(r.code, code) << kind;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("port " + port + ": refused as asked"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("(" + kind + ")"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(SwitchctlTest, JsonPrintsTheResultAsSent) {
  reply_["show"] = {{"uplink", nullptr}, {"ports", json::array()}, {"vmqs", {{"max", 8}}}};
  start();
  Exit r = ctl({"--json", "show"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out, nullptr, false), reply_["show"]) << r.out;
  r = ctl({"port", "create", "vm1", "--json"});  // after the subcommand too
  EXPECT_EQ(json::parse(r.out, nullptr, false), json({{"op", "port.create"}, {"args", {{"name", "vm1"}}}})) << r.out;
}

// Receive buffers: a table per queue (UMEM and its rule) and the buffers
// reserved for each connected NIC.
TEST_F(SwitchctlTest, ShowPrintsTheBuffersPerQueueAndPerNic) {
  reply_["show"] = json::parse(R"({
    "uplink": {"name": "eth0", "pinned_bytes": 130023424,
               "queues": [{"queue": 0, "cpu": 1, "buffers": {"umem_bytes": 65011712, "frames": 15872, "uplink_reserve": 1024,
                                                             "headroom": 512, "burst_budget": 2048, "nic_floor": 12,
                                                             "nics": 1, "nic_capacity": 1024}}]},
    "ports": [
      {"name": "vm1", "state": "created", "nic": {"state": "connected", "mac": "02:00:00:00:00:01", "vlan": 0,
                                                  "backend": "vm1-host", "vmq": null, "path": "default",
                                                  "steering": {"mode": "software"},
                                                  "buffers": {"sockets": 2, "reserved_frames": 24, "reserved_bytes": 98304}}},
      {"name": "vm2", "state": "created", "nic": {"state": "created", "mac": "02:00:00:00:00:02", "vlan": 0,
                                                  "backend": "vm2-host", "vmq": null, "path": "none",
                                                  "steering": {"mode": "software"}, "buffers": null}}
    ],
    "vmqs": {"max": 8}})");
  start();
  Exit r = ctl({"show"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "uplink eth0: pinned_bytes 130023424\n"
            "QUEUE  CPU  UMEM      FRAMES  RESERVE  HEADROOM  BURST  FLOOR  NICS\n"
            "    0    1  62.0 MiB   15872     1024       512   2048     12  1/1024\n"
            "PORT  STATE    NIC-STATE  MAC                VLAN  BACKEND   VMQ  PATH     STEERING  CPUS  BUFFERS\n"
            "vm1   created  connected  02:00:00:00:00:01     0  vm1-host    -  default  software     -  96 KiB\n"
            "vm2   created  created    02:00:00:00:00:02     0  vm2-host    -  none     software     -  -\n"
            "vmqs: max 8\n");
}

TEST_F(SwitchctlTest, ShowStatsAndEventsPrintTables) {
  reply_["show"] = json::parse(R"({
    "uplink": {"name": "eth0", "mode": "native", "queues": 4},
    "ports": [
      {"name": "vm1", "state": "created", "nic": {"state": "connected", "mac": "02:00:00:00:00:01", "vlan": 10,
                                                  "backend": "vm1-host", "vmq": 2, "path": "vmq",
                                                  "steering": {"mode": "software", "queue": null,
                                                               "reason": "driver 'veth' has no RX flow classification"},
                                                  "affinity": {"cpus": [0, 1]}}},
      {"name": "host0", "state": "created"}
    ],
    "vmqs": {"max": 8, "used": 1}})");
  reply_["stats"] = json::parse(R"({"classifier": {"hit": 12, "miss": 3}, "queues": [{"rx": 7}], "note": "x"})");
  reply_["events"] = json::parse(R"({"events": [
    {"seq": 1, "time": "2025-01-01T00:00:00Z", "object": "port vm1", "from": "none", "to": "created",
     "step": "port.create"}]})");
  start();

  Exit r = ctl({"show"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "uplink eth0: mode native, queues 4\n"
            "PORT   STATE    NIC-STATE  MAC                VLAN  BACKEND   VMQ  PATH  STEERING  CPUS\n"
            "vm1    created  connected  02:00:00:00:00:01    10  vm1-host    2  vmq   software  0,1\n"
            "host0  created  -          -                     -  -           -  -     -         -\n"
            "vm1: software steering (hardware requested; driver 'veth' has no RX flow classification)\n"
            "vmqs: max 8, used 1\n");

  r = ctl({"stats"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "COUNTER          VALUE\n"
            "classifier.hit      12\n"
            "classifier.miss      3\n"
            "queues.0.rx          7\n");

  r = ctl({"events"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "SEQ  TIME                  OBJECT    FROM  TO       STEP\n"
            "  1  2025-01-01T00:00:00Z  port vm1  none  created  port.create\n");
}

TEST_F(SwitchctlTest, RefusedPeerExits9) {
  XVMQ_REQUIRE_PRIVILEGES();
  start("root");
  std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups " SWITCHCTL_PATH " --socket " + path_ +
                          " show";
  std::string out;
  EXPECT_EQ(xvmq::test::sh(as_nobody, &out), 9) << out;  // the file mode refuses
  EXPECT_NE(out.find("Permission denied"), std::string::npos) << out;
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(xvmq::test::sh(as_nobody, &out), 9) << out;  // SO_PEERCRED refuses
  EXPECT_NE(out.find("(permission)"), std::string::npos) << out;
  EXPECT_EQ(call_count(), 0u);
}

TEST_F(SwitchctlTest, EverySubcommandHasHelpWithAnExample) {
  const std::vector<std::vector<std::string>> cmds = {
      {"uplink", "attach"}, {"uplink", "detach"}, {"port", "create"},  {"port", "teardown"}, {"port", "delete"},
      {"nic", "create"},    {"nic", "connect"},   {"nic", "disconnect"}, {"nic", "delete"},  {"vmq", "allocate"},
      {"vmq", "free"},      {"show"},             {"stats"},           {"events"},          {}};
  for (auto args : cmds) {
    args.push_back("--help");
    Exit r = switchctl(args);
    EXPECT_EQ(r.code, 0) << args[0];
    EXPECT_NE(r.out.find("Example: switchctl"), std::string::npos) << args[0] << "\n" << r.out;
  }
}

}  // namespace
