// The control socket's transport (control/control.h) with a fake handler, and
// switchctl's input checks, requests and exit codes, run as the built binary.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "control/control.h"
#include "tests/lib/harness.h"

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
  int fd() const { return fd_; }

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
    if (park_) throw Wait{std::chrono::seconds(10), json::object()};
    if (events_mode_ && op == "events") {  // one event; then nothing, after the wait
      if (args.contains("wait_ms"))
        throw Wait{std::chrono::milliseconds(args["wait_ms"].get<int>()), {{"events", json::array()}}};
      return {{"events", json::array({{{"seq", 1},
                                       {"time", "t"},
                                       {"object", "port vm1"},
                                       {"from", "none"},
                                       {"to", "created"},
                                       {"step", "port.create"}}})}};
    }
    if (reply_.contains(op)) return reply_[op];
    return {{"op", op}, {"args", args}};
  }

  // By default the group is this process's own, so that the tests also pass unprivileged.
  void start(std::string group = "", int max_clients = 16) {
    if (group.empty()) group = ::getgrgid(getegid())->gr_name;
    ServerOptions o{.path = path_, .group = group, .max_clients = max_clients};
    auto s = ControlServer::start(std::move(o),
                                  [this](const std::string& op, const json& args) { return handle(op, args); });
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(s).value();
  }

  // start() with more options; the server's log lines land in logs().
  void start_with(ServerOptions o) {
    o.path = path_;
    if (o.group.empty() || o.group == "root") o.group = ::getgrgid(getegid())->gr_name;
    o.log = [this](const std::string& line) {
      std::lock_guard lock(mu_);
      logs_.push_back(line);
    };
    auto s = ControlServer::start(std::move(o),
                                  [this](const std::string& op, const json& args) { return handle(op, args); });
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(s).value();
  }
  std::vector<std::string> logs() {
    std::lock_guard lock(mu_);
    return logs_;
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
  std::vector<std::string> logs_;
  bool park_ = false;         // every request waits (Wait) 10 s
  bool events_mode_ = false;  // "events" as switchd's: one event, then long polls
};

TEST_F(ControlTest, RoundTripEchoesId) {
  start();
  RawConn raw(path_);
  ASSERT_TRUE(raw.connected());
  raw.send(R"({"v": 1, "id": 4242, "op": "port.create", "args": {"name": "vm1"}})"
           "\n");
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
  raw.send(R"({"v": 1, "id": 1, "op": "show"})"
           "\n"
           R"({"v": 1, "id": 2, "op": "nothing"})"
           "\n");
  EXPECT_EQ(raw.next()["result"]["args"], json::object());
  EXPECT_EQ(raw.next()["result"], json::object());
}

TEST_F(ControlTest, SeveralRequestsOnOneConnectionAnsweredInOrder) {
  start();
  RawConn raw(path_);
  std::string batch;
  for (int i = 0; i < 20; ++i)
    batch +=
        json{{"v", 1}, {"id", 100 + i}, {"op", "nic.connect"}, {"args", {{"port", "vm" + std::to_string(i)}}}}.dump() +
        "\n";
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
  raw.send(R"({"v": 2, "id": 7, "op": "show"})"
           "\n"
           R"({"id": 8, "op": "show"})"
           "\n"
           R"({"v": "1", "id": 9, "op": "show"})"
           "\n");
  for (int id : {7, 8, 9}) {
    json r = raw.next();
    EXPECT_EQ(r["id"], id);
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["error"]["kind"], "unsupported_version");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("version 1"), std::string::npos) << r;
  }
  raw.send(R"({"v": 1, "id": 10, "op": "show"})"
           "\n");  // the connection stays usable
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
  raw.send(R"({"v": 1, "id": 11, "op": "show"})"
           "\n");
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
    raw.send(std::string(line) + "\n" +
             R"({"v": 1, "id": 2, "op": "show"})"
             "\n");
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
                           std::string(3 * kMaxLine, 'y')}) {                                    // no newline at all
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

TEST_F(ControlTest, ClientsBeyondTheLimitAreRefusedAsFull) {
  start("", 1);
  auto first = std::make_unique<ControlClient>(client());
  ASSERT_TRUE(first->call("show")->ok);
  {
    auto second = ControlClient::connect(path_, std::chrono::seconds(5));
    ASSERT_TRUE(second.ok());  // accepted, then refused before its request is read
    auto refused = second->call("show");
    ASSERT_TRUE(refused.ok()) << refused.error().message;
    EXPECT_FALSE(refused->ok);
    EXPECT_TRUE(refused->id.is_null());
    EXPECT_EQ(refused->kind, "exhausted");
    EXPECT_NE(refused->message.find("switchd is full: 1 connections open, the bound is 1"), std::string::npos)
        << refused->message;
  }
  EXPECT_EQ(call_count(), 1u);
  first.reset();
  // The slot is free again once the first is gone.
  for (int i = 0; i < 50; ++i) {
    auto third = ControlClient::connect(path_, std::chrono::seconds(5));
    ASSERT_TRUE(third.ok());
    auto r = third->call("show");
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (r->ok) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "the freed slot was not given to a new client";
}

using xvmq::test::close_all;
using xvmq::test::connect_as;
using xvmq::test::Crowd;
using xvmq::test::read_crowd;

std::string nested(const std::string& open, const std::string& close, size_t n, const std::string& inner = "1") {
  std::string s;
  s.reserve(n * (open.size() + close.size()) + inner.size());
  for (size_t i = 0; i < n; ++i) s += open;
  s += inner;
  for (size_t i = 0; i < n; ++i) s += close;
  return s;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// 300 idle connections of one uid other than root: 64 (its bound) are held,
// the rest refused as full; root is served at once; one log line.
TEST_F(ControlTest, IdleCrowdOfOneUidIsBoundedAndRootIsServed) {
  XVMQ_REQUIRE_PRIVILEGES();
  ASSERT_NO_FATAL_FAILURE(start_with({}));
  std::vector<int> crowd = connect_as(path_, 65534, 300);
  ASSERT_EQ(crowd.size(), 300u);
  Crowd c = read_crowd(crowd, 1000);
  EXPECT_EQ(c.open, 64u);
  ASSERT_EQ(c.refusals.size(), 236u);
  expect_refused_as_full(c,
                         "switchd is full for uid 65534: 64 of 64 open connections are its, the bound is 64 per uid");
  auto t0 = std::chrono::steady_clock::now();
  auto r = client().call("show");
  double took = ms_since(t0);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->ok);
  EXPECT_LT(took, 1000.0);
  std::printf("show with 300 idle connections of uid 65534 open: %.1f ms\n", took);
  size_t refused_lines = 0;
  for (const auto& l : logs()) refused_lines += l.find("switchd is full") != std::string::npos;
  EXPECT_EQ(refused_lines, 1u);
  close_all(crowd);
}

// Uids other than root share max_clients - root_reserved; root fills the
// rest; then even root is refused, and served again once a slot frees.
TEST_F(ControlTest, TotalBoundKeepsRoomForRoot) {
  XVMQ_REQUIRE_PRIVILEGES();
  ASSERT_NO_FATAL_FAILURE(start_with({.max_clients = 40, .max_clients_per_uid = 1000, .root_reserved = 8}));
  std::vector<int> others = connect_as(path_, 65534, 40);
  Crowd c = read_crowd(others, 500);
  EXPECT_EQ(c.open, 32u);
  ASSERT_EQ(c.refusals.size(), 8u);
  EXPECT_NE(c.refusals[0].find("switchd is full for uids other than root: 32 of 32 open connections are theirs, the "
                               "bound is 32 (switchd --max-clients 40 less 8 kept for root)"),
            std::string::npos)
      << c.refusals[0];
  std::vector<int> root = connect_as(path_, 0, 9);
  Crowd rc = read_crowd(root, 500);
  EXPECT_EQ(rc.open, 8u);
  ASSERT_EQ(rc.refusals.size(), 1u);
  EXPECT_NE(rc.refusals[0].find("switchd is full: 40 connections open, the bound is 40 (switchd --max-clients)"),
            std::string::npos)
      << rc.refusals[0];
  ::close(root.front());
  root.erase(root.begin());
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    auto r = client().call("show");
    served = r.ok() && r->ok;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(served);
  close_all(others);
  close_all(root);
}

// Clients that hold half a line, trickle one byte per 200 ms, or pipeline
// 1,000 requests without reading delay no one; their deadlines close them.
TEST_F(ControlTest, SlowClientsDelayNoOneAndTheirDeadlinesCloseThem) {
  ASSERT_NO_FATAL_FAILURE(start_with({.idle_timeout = std::chrono::milliseconds(1500),
                                      .read_timeout = std::chrono::milliseconds(1000),
                                      .write_timeout = std::chrono::milliseconds(1000)}));
  reply_["big"] = {{"blob", std::string(8192, 'x')}};
  RawConn half(path_), trickle(path_), hog(path_), idle(path_);
  ASSERT_TRUE(half.connected() && trickle.connected() && hog.connected() && idle.connected());
  auto t0 = std::chrono::steady_clock::now();
  half.send(R"({"v": 1, "id": 1, "op": )");
  const std::string request = R"({"v": 1, "id": 7, "op": "big"})"
                              "\n";
  std::string pipelined;
  for (int i = 0; i < 1000; ++i) pipelined += request;
  // Sent from a thread, which would block if the socket did not take them all
  // (the server stops reading while a response waits to be written).
  int hog_fd = hog.fd();
  std::atomic<size_t> hog_sent{0};
  std::atomic<int> hog_errno{0};
  std::thread hogger([&] {
    while (hog_sent < pipelined.size()) {
      ssize_t n = ::send(hog_fd, pipelined.data() + hog_sent, pipelined.size() - hog_sent, MSG_NOSIGNAL);
      if (n <= 0) {
        hog_errno = errno;
        return;
      }
      hog_sent += n;
    }
  });
  std::atomic<bool> trickling{true};
  std::thread slow([&] {
    for (char ch : std::string(R"({"v": 1, "id": 9, "op": "show", "args": {"padding": "......"}})")) {
      if (!trickling) return;
      trickle.send(std::string_view(&ch, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  // Meanwhile another client is answered at once, every time.
  ControlClient other = client();
  double worst = 0;
  for (int i = 0; i < 10; ++i) {
    auto s = std::chrono::steady_clock::now();
    auto r = other.call("show");
    ASSERT_TRUE(r.ok()) << r.error().message;
    worst = std::max(worst, ms_since(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LT(worst, 100.0);
  std::printf("show beside half a line, a trickler and a non-reader: worst of 10 %.1f ms\n", worst);

  // The read deadline: half a line and the trickle are refused, then closed.
  for (RawConn* c : {&half, &trickle}) {
    json r = c->next();
    EXPECT_EQ(r["error"]["kind"], "usage") << r;
    EXPECT_NE(r.dump().find("not ended within 1000 ms"), std::string::npos) << r;
    EXPECT_TRUE(c->closed_by_peer());
  }
  EXPECT_LT(ms_since(t0), 2500.0);
  trickling = false;
  slow.join();
  // The write deadline: the server closed the non-reader, which finds fewer
  // than its 1,000 responses before EOF.
  hogger.join();
  int answered = 0;
  for (json r; !(r = hog.next()).is_null();) answered += r["ok"] == true;
  EXPECT_GT(answered, 0);
  EXPECT_LT(answered, 1000);
  std::printf("non-reader: %zu of %zu bytes of requests sent, %d answered, then closed by the write deadline\n",
              hog_sent.load(), pipelined.size(), answered);
  // The idle deadline: closed with nothing said.
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_GE(ms_since(t0), 1400.0);
  // The other client, idle since its last call, is closed too; a new one is served.
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(2400));
  EXPECT_FALSE(other.call("show").ok());
  EXPECT_TRUE(client().call("show")->ok);
}

// Nesting deeper than the limit, or too many values, is refused on the
// bytes before parsing (nlohmann's parser and destructor recurse per level).
TEST_F(ControlTest, DeepOrHugeRequestsAreUsageAndTheServerLives) {
  start();
  RawConn raw(path_);
  ASSERT_TRUE(raw.connected());
  const std::string head = R"({"v": 1, "id": 5, "op": "show", "args": {"x": )";
  std::string arrays = "[";
  for (int i = 0; i < 2000; ++i) arrays += (i ? "," : "") + nested("[", "]", 40);
  arrays += "]";
  std::string flat = "[";
  for (int i = 0; i < 200000; ++i) flat += (i ? ",0" : "0");
  flat += "]";
  const std::pair<std::string, std::string> cases[] = {
      {head + nested("{\"a\": ", "}", 100000) + "}}", "nesting depth limit is 32"},
      {head + nested("[", "]", 100000) + "}}", "nesting depth limit is 32"},
      {head + arrays + "}}", "nesting depth limit is 32"},
      {head + nested("[", "]", 31) + "}}", ""},  // 33 deep with the request and args
      {head + flat + "}}", "more than 100000 values"},
      {head + R"("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[")" + "}}", "ok"},
      {head + nested("[", "]", 30) + "}}", "ok"},
  };
  for (const auto& [line, words] : cases) {
    SCOPED_TRACE(line.substr(0, 80) + " (" + std::to_string(line.size()) + " bytes)");
    ASSERT_LE(line.size(), kMaxLine);
    raw.send(line + "\n");
    json r = raw.next();
    if (words == "ok") {
      EXPECT_EQ(r["ok"], true) << r.dump().substr(0, 200);
      continue;
    }
    EXPECT_EQ(r["ok"], false) << r.dump().substr(0, 200);
    EXPECT_EQ(r["error"]["kind"], "usage");
    EXPECT_NE(r["error"]["message"].get<std::string>().find(words.empty() ? "nesting depth limit is 32" : words),
              std::string::npos)
        << r;
  }
  // The same connection, and the server, go on.
  raw.send(R"({"v": 1, "id": 6, "op": "show"})"
           "\n");
  EXPECT_EQ(raw.next()["id"], 6);
  // answer(), the fuzzers' entry, too.
  bool close = false;
  std::string a =
      answer([](const std::string&, const json&) { return json(); }, head + nested("[", "]", 100000) + "}}", close);
  EXPECT_NE(a.find("nesting depth limit is 32"), std::string::npos) << a;
  EXPECT_FALSE(close);
}

// A handler's Wait parks the request until notify() or its wait ends;
// meanwhile every other client is served, and the parked one is not idle.
TEST_F(ControlTest, ParkedRequestAnswersOnNotifyOrAfterItsWait) {
  std::atomic<int> happened{0};
  ServerOptions o{
      .path = path_, .group = ::getgrgid(getegid())->gr_name, .idle_timeout = std::chrono::milliseconds(400)};
  auto s = ControlServer::start(o, [&](const std::string& op, const json& args) -> json {
    if (op == "wait") {
      if (happened.load() > args.value("since", 0)) return {{"seen", happened.load()}};
      throw Wait{std::chrono::milliseconds(args.value("wait_ms", 0)), {{"seen", nullptr}}};
    }
    return {{"op", op}};
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  server_ = std::move(s).value();

  // Woken: answers within 100 ms of the notify().
  ControlClient waiter = client();
  std::chrono::steady_clock::time_point notified;
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));  // past the idle deadline: parked is not idle
    // Meanwhile others are served at once.
    ControlClient c = client();
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(c.call("show")->ok);
    EXPECT_LT(ms_since(t0), 100.0);
    happened = 1;
    notified = std::chrono::steady_clock::now();
    server_->notify();
  });
  auto r = waiter.call("wait", {{"since", 0}, {"wait_ms", 5000}});
  auto woke = std::chrono::steady_clock::now();
  later.join();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->result["seen"], 1);
  double lag = std::chrono::duration<double, std::milli>(woke - notified).count();
  EXPECT_LT(lag, 100.0);
  std::printf("parked request answered %.1f ms after notify()\n", lag);

  // Not woken: the wait's result after wait_ms; a notify that changes
  // nothing for it leaves it parked.
  auto t0 = std::chrono::steady_clock::now();
  std::thread noise([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server_->notify();
  });
  r = waiter.call("wait", {{"since", 1}, {"wait_ms", 300}});
  noise.join();
  double took = ms_since(t0);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->result["seen"].is_null()) << r->result;
  EXPECT_GE(took, 290.0);
  EXPECT_LT(took, 600.0);

  // answer() has no server to park in: the wait's result at once.
  bool close = false;
  std::string line = answer(
      [](const std::string&, const json&) -> json {
        throw Wait{std::chrono::milliseconds(5000), {{"events", json::array()}}};
      },
      R"({"v": 1, "id": 3, "op": "events"})", close);
  EXPECT_EQ(json::parse(line), json::parse(R"({"v": 1, "id": 3, "ok": true, "result": {"events": []}})"));
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
  struct stat st {};
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
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--delivery", "dpdk"},
      {"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--vmq-cpu", "-1"},
      {"vmq", "allocate", "vm1", "--cpu", "x"},
      {"vmq", "set", "vm1"},  // neither --cpu nor --spread
      {"vmq", "set", "vm1", "--cpu", "1", "--spread"},
      {"vmq", "set", "vm1", "--cpu", "1024"},
      {"vmq", "set", "--cpu", "1"},  // no port
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
  reply_["vmq.set"] = {{"port", "vm1"}, {"state", "connected"}, {"vmq", 3}, {"vmq_cpu", 2}};
  start();
  struct Case {
    std::vector<std::string> args;
    std::string op;
    json sent;
    std::string out;
  } cases[] = {
      {{"uplink", "attach", "eth0", "--mode", "skb"},
       "uplink.attach",
       {{"name", "eth0"}, {"mode", "skb"}},
       "uplink eth0: attached (mode skb)\n"},
      {{"uplink", "attach", "eth0"}, "uplink.attach", {{"name", "eth0"}}, "uplink eth0: attached (mode skb)\n"},
      {{"uplink", "detach"}, "uplink.detach", json::object(), "uplink: detached\n"},
      {{"port", "create", "vm1"}, "port.create", {{"name", "vm1"}}, "port vm1: created\n"},
      {{"port", "teardown", "vm1"}, "port.teardown", {{"name", "vm1"}}, "port vm1: torn down\n"},
      {{"port", "delete", "vm1"}, "port.delete", {{"name", "vm1"}}, "port vm1: deleted\n"},
      {{"nic", "create", "vm1", "--mac", "02:AA:00:00:00:01", "--backend", "vm1-host"},
       "nic.create",
       {{"port", "vm1"}, {"mac", "02:aa:00:00:00:01"}, {"backend", "vm1-host"}},
       "nic vm1: created\n"},
      {{"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "tap0", "--vmq", "off", "--vlan", "4094",
        "--steering", "hardware"},
       "nic.create",
       {{"port", "vm1"},
        {"mac", "02:00:00:00:00:01"},
        {"backend", "tap0"},
        {"vmq", "off"},
        {"vlan", 4094},
        {"steering", "hardware"}},
       "nic vm1: created\n"},
      {{"nic", "connect", "vm1"}, "nic.connect", {{"port", "vm1"}}, "nic vm1: connected (vmq 2)\n"},
      {{"nic", "disconnect", "vm1"}, "nic.disconnect", {{"port", "vm1"}}, "nic vm1: disconnected\n"},
      {{"nic", "delete", "vm1"}, "nic.delete", {{"port", "vm1"}}, "nic vm1: deleted\n"},
      {{"vmq", "allocate", "vm1"},
       "vmq.allocate",
       {{"port", "vm1"}},
       "nic vm1: vmq allocated (vmq 3, state connected)\n"},
      {{"vmq", "free", "vm1"}, "vmq.free", {{"port", "vm1"}}, "nic vm1: vmq freed\n"},
      {{"nic", "create", "vm1", "--mac", "02:00:00:00:00:01", "--backend", "vm1-host", "--delivery", "kernel",
        "--vmq-cpu", "2"},
       "nic.create",
       {{"port", "vm1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "vm1-host"}, {"delivery", "kernel"}, {"vmq_cpu", 2}},
       "nic vm1: created\n"},
      {{"vmq", "allocate", "vm1", "--cpu", "1"},
       "vmq.allocate",
       {{"port", "vm1"}, {"cpu", 1}},
       "nic vm1: vmq allocated (vmq 3, state connected)\n"},
      {{"vmq", "set", "vm1", "--cpu", "2"},
       "vmq.set",
       {{"port", "vm1"}, {"cpu", 2}},
       "nic vm1: vmq on CPU 2 (vmq 3, state connected)\n"},
      {{"vmq", "set", "vm1", "--spread"},
       "vmq.set",
       {{"port", "vm1"}, {"cpu", nullptr}},
       "nic vm1: vmq spread over the CPUs (vmq 3, state connected)\n"},
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
  const std::tuple<std::string, std::string, int> kinds[] = {{"usage", "usage", 2},
                                                             {"not_found", "not_found", 3},
                                                             {"wrong_state", "wrong_state", 4},
                                                             {"exists", "exists", 5},
                                                             {"exhausted", "exhausted", 6},
                                                             {"kernel", "kernel", 7},
                                                             {"unsupported", "unsupported_version", 8},
                                                             {"permission", "permission", 9}};
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

// Delivery: a column of what each NIC got (xsk* when it asked for more, the
// reason below the table) and its vmq's CPU.
TEST_F(SwitchctlTest, ShowPrintsEachNicsDeliveryAndVmqCpu) {
  reply_["show"] = json::parse(R"({
    "uplink": null,
    "ports": [
      {"name": "vm1", "state": "created", "nic": {"state": "connected", "mac": "02:00:00:00:00:01", "vlan": 0,
                                                  "backend": "vm1-host", "vmq": 1, "path": "vmq",
                                                  "steering": {"mode": "software"}, "affinity": {"cpus": [3]},
                                                  "delivery": "kernel", "delivery_requested": "kernel",
                                                  "delivery_why": "", "vmq_cpu": 3, "vmq_cpu_source": "configured"}},
      {"name": "vm2", "state": "created", "nic": {"state": "connected", "mac": "02:00:00:00:00:02", "vlan": 0,
                                                  "backend": "vm2-host", "vmq": 2, "path": "vmq",
                                                  "steering": {"mode": "software"}, "affinity": {"cpus": [0]},
                                                  "delivery": "kernel", "delivery_requested": "auto",
                                                  "delivery_why": "", "vmq_cpu": 0, "vmq_cpu_source": "spread"}},
      {"name": "vm3", "state": "created", "nic": {"state": "connected", "mac": "02:00:00:00:00:03", "vlan": 0,
                                                  "backend": "tap3", "vmq": null, "path": "default",
                                                  "steering": {"mode": "software"},
                                                  "delivery": "xsk", "delivery_requested": "auto",
                                                  "delivery_why": "tap3 takes no redirected frames",
                                                  "vmq_cpu": null, "vmq_cpu_source": null}},
      {"name": "spare", "state": "created", "nic": null}
    ],
    "vmqs": {"max": 2}})");
  start();
  Exit r = ctl({"show"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "uplink: none\n"
            "PORT   STATE    NIC-STATE  MAC                VLAN  BACKEND   VMQ  PATH     DELIVERY  VMQ-CPU     "
            "STEERING  CPUS\n"
            "vm1    created  connected  02:00:00:00:00:01     0  vm1-host    1  vmq      kernel    3           "
            "software     3\n"
            "vm2    created  connected  02:00:00:00:00:02     0  vm2-host    2  vmq      kernel    0 (spread)  "
            "software     0\n"
            "vm3    created  connected  02:00:00:00:00:03     0  tap3        -  default  xsk*      -           "
            "software     -\n"
            "spare  created  -          -                     -  -           -  -        -         -           "
            "-            -\n"
            "vm3: xsk* delivery (auto requested; tap3 takes no redirected frames)\n"
            "vmqs: max 2\n");
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

// switchd full: exit 6 with a line that says so; switchd down: exit 1.
TEST_F(SwitchctlTest, FullSwitchdIsExit6AndDistinctFromUnreachable) {
  start("", 2);
  ControlClient a = client(), b = client();
  ASSERT_TRUE(a.call("show")->ok);
  ASSERT_TRUE(b.call("show")->ok);
  Exit full = ctl({"show"});
  EXPECT_EQ(full.code, 6) << full.err;
  EXPECT_TRUE(one_line(full.err)) << full.err;
  EXPECT_NE(full.err.find("switchctl: switchd is full: 2 connections open, the bound is 2"), std::string::npos)
      << full.err;
  EXPECT_NE(full.err.find("(exhausted"), std::string::npos) << full.err;
  EXPECT_EQ(full.out, "");
  EXPECT_EQ(call_count(), 2u);  // its request was never read
  server_.reset();
  Exit down = ctl({"show"});
  EXPECT_EQ(down.code, 1) << down.err;
  EXPECT_NE(down.err.find("cannot reach switchd"), std::string::npos) << down.err;
  EXPECT_EQ(down.err.find("full"), std::string::npos) << down.err;
}

// --timeout bounds the wait for an answer.
TEST_F(SwitchctlTest, TimeoutOptionBoundsTheWait) {
  start();
  park_ = true;  // every request waits 10 s
  auto t0 = std::chrono::steady_clock::now();
  Exit r = ctl({"--timeout", "0.5", "show"});
  double took = ms_since(t0);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("no response from switchd within 500 ms (see --timeout)"), std::string::npos) << r.err;
  EXPECT_GE(took, 450.0);
  EXPECT_LT(took, 3000.0);
  Exit bad = ctl({"--timeout", "0", "show"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--timeout"), std::string::npos) << bad.err;
}

// events --follow is a long poll: one request per wait, not one per 200 ms;
// SIGINT ends it at once (exit 0) although its request is parked.
TEST_F(SwitchctlTest, EventsFollowLongPollsAndStopsOnSigint) {
  start();
  events_mode_ = true;
  std::string out = dir_ + "/follow.out";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> args{SWITCHCTL_PATH, "--socket", path_, "events", "--follow", "--json"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, SWITCHCTL_PATH, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  double took = ms_since(t0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(took, 500.0);
  EXPECT_EQ(slurp(out), R"({"from":"none","object":"port vm1","seq":1,"step":"port.create","time":"t","to":"created"})"
                        "\n");
  // The first call without a wait (what there is), then parked ones.
  EXPECT_EQ(call_count(), 2u);
  json last = last_call();
  EXPECT_EQ(last["args"], json::parse(R"({"since": 1, "wait_ms": 30000})")) << last;
}

TEST_F(SwitchctlTest, RefusedPeerExits9) {
  XVMQ_REQUIRE_PRIVILEGES();
  start("root");
  std::string as_nobody =
      "setpriv --reuid=65534 --regid=65534 --clear-groups " SWITCHCTL_PATH " --socket " + path_ + " show";
  std::string out;
  EXPECT_EQ(xvmq::test::sh(as_nobody, &out), 9) << out;  // the file mode refuses
  EXPECT_NE(out.find("Permission denied"), std::string::npos) << out;
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(xvmq::test::sh(as_nobody, &out), 9) << out;  // SO_PEERCRED refuses
  EXPECT_NE(out.find("(permission)"), std::string::npos) << out;
  EXPECT_EQ(call_count(), 0u);
}

TEST_F(SwitchctlTest, EverySubcommandHasHelpWithAnExample) {
  const std::vector<std::vector<std::string>> cmds = {{"uplink", "attach"},
                                                      {"uplink", "detach"},
                                                      {"port", "create"},
                                                      {"port", "teardown"},
                                                      {"port", "delete"},
                                                      {"nic", "create"},
                                                      {"nic", "connect"},
                                                      {"nic", "disconnect"},
                                                      {"nic", "delete"},
                                                      {"vmq", "allocate"},
                                                      {"vmq", "free"},
                                                      {"vmq", "set"},
                                                      {"show"},
                                                      {"stats"},
                                                      {"events"},
                                                      {}};
  for (auto args : cmds) {
    args.push_back("--help");
    Exit r = switchctl(args);
    EXPECT_EQ(r.code, 0) << args[0];
    EXPECT_NE(r.out.find("Example: switchctl"), std::string::npos) << args[0] << "\n" << r.out;
  }
}

}  // namespace
