#include "switchd/control.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

namespace xvmq::control {
namespace {

using json = nlohmann::json;

constexpr std::array<std::string_view, 8> kKindNames = {
    "usage", "not_found", "wrong_state", "exists", "exhausted", "kernel", "unsupported_version", "permission"};

Error sys_error(int err, const std::string& context) { return Error{err, context + ": " + std::strerror(err)}; }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return Error{ENAMETOOLONG, "socket path '" + path + "' must be 1 to " + std::to_string(sizeof(a.sun_path) - 1) +
                                   " bytes long"};
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

int connect_to(int fd, const sockaddr_un& a) { return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)); }

Status make_directories(const std::filesystem::path& dir) {
  if (dir.empty()) return {};
  struct stat st{};
  if (::stat(dir.c_str(), &st) == 0)
    return S_ISDIR(st.st_mode) ? Status{} : Status{Error{ENOTDIR, dir.string() + " is not a directory"}};
  if (errno != ENOENT) return sys_error(errno, "stat " + dir.string());
  if (auto s = make_directories(dir.parent_path()); !s) return s;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return sys_error(errno, "create directory " + dir.string());
  ::chmod(dir.c_str(), 0755);  // mkdir's mode went through the umask
  return {};
}

// A stale socket file refuses connections; a live server accepts them (or
// has a full backlog, which a non-blocking connect reports as EAGAIN).
Result<bool> someone_listens(const std::string& path, const sockaddr_un& a) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return sys_error(errno, "socket");
  if (connect_to(fd.get(), a) == 0 || errno == EAGAIN) return true;
  if (errno == ECONNREFUSED) return false;
  return sys_error(errno, "probe " + path);
}

Result<gid_t> group_id(const std::string& name) {
  std::vector<char> buf(4096);
  for (;;) {
    group g{};
    group* found = nullptr;
    int rc = ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
    if (rc == ERANGE) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (found) return found->gr_gid;
    if (rc != 0) return sys_error(rc, "look up group '" + name + "'");
    return Error{ENOENT, "group '" + name + "' does not exist (see --group)"};
  }
}

// The groups of the peer's account (/etc/group and NSS), as a login would get them.
bool may_connect(const ucred& peer, gid_t group) {
  if (peer.uid == 0 || peer.gid == group) return true;
  std::vector<char> buf(4096);
  passwd pw{};
  passwd* found = nullptr;
  while (::getpwuid_r(peer.uid, &pw, buf.data(), buf.size(), &found) == ERANGE) buf.resize(buf.size() * 2);
  if (!found) return false;
  int n = 64;
  std::vector<gid_t> groups(n);
  while (::getgrouplist(found->pw_name, peer.gid, groups.data(), &n) < 0) {
    if (static_cast<size_t>(n) <= groups.size()) return false;
    groups.resize(n);
  }
  return std::find(groups.begin(), groups.begin() + n, group) != groups.begin() + n;
}

std::string line_of(const json& response) {
  return response.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string ok_line(const json& id, json result) {
  if (result.is_null()) result = json::object();
  return line_of({{"v", kProtocolVersion}, {"id", id}, {"ok", true}, {"result", std::move(result)}});
}

std::string error_line(const json& id, ErrorKind kind, const std::string& message) {
  return line_of({{"v", kProtocolVersion},
                  {"id", id},
                  {"ok", false},
                  {"error", {{"kind", to_string(kind)}, {"message", message}}}});
}

}  // namespace

std::string answer(const Handler& handler, std::string_view line, bool& close,
                   const std::function<void(const std::string&)>& log) {
  json req = json::parse(line, nullptr, false);
  if (req.is_discarded()) {
    close = true;
    return error_line(nullptr, ErrorKind::Usage, "request line is not JSON; closing the connection");
  }
  if (!req.is_object()) return error_line(nullptr, ErrorKind::Usage, "request must be a JSON object");
  auto it = req.find("id");
  json id = it != req.end() && it->is_number_integer() ? *it : json();
  auto v = req.find("v");
  if (v == req.end() || !v->is_number_integer() || *v != kProtocolVersion)
    return error_line(id, ErrorKind::UnsupportedVersion,
                      (v == req.end() ? std::string("request has no \"v\"") : "protocol version " + v->dump()) +
                          " is not supported; this switchd speaks version " + std::to_string(kProtocolVersion));
  if (id.is_null()) return error_line(id, ErrorKind::Usage, "\"id\" must be an integer");
  auto op = req.find("op");
  if (op == req.end() || !op->is_string()) return error_line(id, ErrorKind::Usage, "\"op\" must be a string");
  auto args = req.find("args");
  if (args != req.end() && !args->is_object()) return error_line(id, ErrorKind::Usage, "\"args\" must be an object");
  const std::string& name = op->get_ref<const std::string&>();
  try {
    return ok_line(id, handler(name, args != req.end() ? *args : json::object()));
  } catch (const ControlError& e) {
    return error_line(id, e.kind(), e.what());
  } catch (const json::exception& e) {
    return error_line(id, ErrorKind::Usage, name + ": bad arguments: " + e.what());
  } catch (const std::exception& e) {
    if (log) log("control: " + name + " failed: " + e.what());
    return error_line(id, ErrorKind::Kernel, name + ": internal error: " + e.what());
  }
}

namespace {

struct Conn {
  explicit Conn(int f) : fd(f) {}
  int fd;
  std::string in, out;
  bool closing = false;  // write out, then close
  bool eof = false;      // the peer sent all it will
  bool dead = false;     // close now

  bool done() const { return dead || (out.empty() && (closing || eof)); }

  void flush() {
    while (!out.empty()) {
      ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        dead = true;
        return;
      }
      out.erase(0, n);
    }
  }

  void receive() {
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) in.append(buf, n);
    else if (n == 0) eof = true;
    else if (errno != EAGAIN && errno != EINTR) dead = true;
  }

  // Answers complete lines one at a time: the next is read only once the
  // previous response is written, so a peer that does not read stalls itself.
  void pump(const Handler& handler, const ServerOptions& o) {
    for (;;) {
      flush();
      if (dead || closing || !out.empty()) return;
      size_t nl = in.find('\n');
      if ((nl == std::string::npos && in.size() > kMaxLine) || (nl != std::string::npos && nl > kMaxLine)) {
        in.clear();
        out = error_line(nullptr, ErrorKind::Usage, "request line longer than 1 MiB; closing the connection");
        closing = true;
        continue;
      }
      if (nl == std::string::npos) return;
      std::string line = in.substr(0, nl);
      in.erase(0, nl + 1);
      out = answer(handler, line, closing, o.log);
    }
  }
};

}  // namespace

std::string_view to_string(ErrorKind kind) { return kKindNames.at(static_cast<size_t>(kind)); }

std::optional<ErrorKind> parse_error_kind(std::string_view name) {
  for (size_t i = 0; i < kKindNames.size(); ++i)
    if (kKindNames[i] == name) return static_cast<ErrorKind>(i);
  return std::nullopt;
}

ControlServer::ControlServer(ServerOptions options, Handler handler, gid_t gid)
    : options_(std::move(options)), handler_(std::move(handler)), gid_(gid) {}

ControlServer::~ControlServer() { stop(); }

Result<std::unique_ptr<ControlServer>> ControlServer::start(ServerOptions options, Handler handler) {
  auto gid = group_id(options.group);
  if (!gid) return gid.error();
  const std::string& path = options.path;
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  if (auto s = make_directories(std::filesystem::path(path).parent_path()); !s) return s.error();

  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Error{EEXIST, path + " exists and is not a socket; not removing it"};
    auto live = someone_listens(path, *addr);
    if (!live) return live.error();
    if (*live) return Error{EADDRINUSE, "another switchd is listening on " + path + "; stop it first"};
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return sys_error(errno, "remove stale socket " + path);
  }

  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return sys_error(errno, "socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0)
    return sys_error(errno, "bind " + path);
  // Nobody can connect before listen(), so the umask's mode in between is harmless.
  auto fail = [&](const std::string& what) {
    Error e = sys_error(errno, what);
    ::unlink(path.c_str());
    return e;
  };
  if (::chmod(path.c_str(), 0660) != 0) return fail("chmod 0660 " + path);
  if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) return fail("chgrp " + options.group + " " + path);
  if (::lstat(path.c_str(), &st) != 0) return fail("stat " + path);
  if (::listen(fd.get(), 64) != 0) return fail("listen on " + path);
  Fd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake.get() < 0) return fail("eventfd");

  std::unique_ptr<ControlServer> server(new ControlServer(std::move(options), std::move(handler), *gid));
  server->listen_fd_ = fd.release();
  server->wake_fd_ = wake.release();
  server->dev_ = st.st_dev;
  server->ino_ = st.st_ino;
  server->thread_ = std::thread([s = server.get()] { s->run(); });
  return server;
}

void ControlServer::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &wake_fd_})
    if (*fd >= 0) ::close(std::exchange(*fd, -1));
  // Leave a successor's socket alone.
  struct stat st{};
  if (ino_ != 0 && ::lstat(options_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(options_.path.c_str());
  ino_ = 0;
}

void ControlServer::run() {
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    bool room = conns.size() < static_cast<size_t>(std::max(options_.max_clients, 1));
    fds.push_back({room ? listen_fd_ : -1, POLLIN, 0});  // poll ignores a negative fd
    for (const Conn& c : conns)
      fds.push_back({c.fd, static_cast<short>(!c.out.empty() ? POLLOUT : POLLIN), 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      if (options_.log) options_.log("control: poll: " + std::string(std::strerror(errno)));
      break;
    }
    if (fds[0].revents) break;

    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      short re = fds[i + 2].revents;
      if (re & POLLNVAL) c.dead = true;
      if (re & POLLOUT) c.flush();
      if (re & (POLLIN | POLLHUP | POLLERR) && c.out.empty()) c.receive();
      if (re) c.pump(handler_, options_);
    }
    std::erase_if(conns, [](const Conn& c) {
      if (c.done()) ::close(c.fd);
      return c.done();
    });

    while (room && (fds[1].revents & POLLIN) && conns.size() < static_cast<size_t>(options_.max_clients)) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED && options_.log)
          options_.log("control: accept on " + options_.path + ": " + std::strerror(errno));
        break;
      }
      ucred peer{};
      socklen_t len = sizeof(peer);
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 || !may_connect(peer, gid_)) {
        std::string why = "uid " + std::to_string(peer.uid) + " is neither root nor in group '" + options_.group +
                          "' of " + options_.path;
        if (options_.log) options_.log("control: refused pid " + std::to_string(peer.pid) + ": " + why);
        // Before reading anything: the refused peer reads this and then EOF.
        std::string line = error_line(nullptr, ErrorKind::Permission, why);
        (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        continue;
      }
      conns.emplace_back(fd);
    }
  }
  for (const Conn& c : conns) ::close(c.fd);
}

Result<ControlClient> ControlClient::connect(const std::string& path, std::chrono::milliseconds timeout) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return sys_error(errno, "socket");
  // Bounds a blocking connect to a server whose backlog is full.
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect_to(fd.get(), *addr) != 0) return sys_error(errno, "connect to " + path);
  if (::fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0) return sys_error(errno, "fcntl " + path);
  return ControlClient(fd.release(), timeout);
}

ControlClient::ControlClient(ControlClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      timeout_(other.timeout_),
      next_id_(other.next_id_),
      buffered_(std::move(other.buffered_)) {}

ControlClient& ControlClient::operator=(ControlClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    timeout_ = other.timeout_;
    next_id_ = other.next_id_;
    buffered_ = std::move(other.buffered_);
  }
  return *this;
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
}

Status send_all(int fd, std::string_view data, std::chrono::steady_clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return sys_error(errno, "send to switchd");
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) == 0) return Error{ETIMEDOUT, "switchd does not read its socket"};
  }
  return {};
}

}  // namespace

Result<json> ControlClient::read_json(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      json j = json::parse(std::string_view(buffered_).substr(0, nl), nullptr, false);
      buffered_.erase(0, nl + 1);
      if (j.is_discarded() || !j.is_object()) return Error{EPROTO, "switchd sent a line that is not a JSON object"};
      return j;
    }
    if (buffered_.size() > kMaxLine) return Error{EPROTO, "switchd sent a line longer than 1 MiB"};
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, remaining_ms(deadline));
    if (ready == 0)
      return Error{ETIMEDOUT, "no response from switchd within " + std::to_string(timeout_.count()) + " ms"};
    if (ready < 0 && errno != EINTR) return sys_error(errno, "poll");
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) buffered_.append(buf, n);
    else if (n == 0 || errno == ECONNRESET) return Error{ECONNRESET, "switchd closed the connection without a response"};
    else if (errno != EAGAIN && errno != EINTR) return sys_error(errno, "receive from switchd");
  }
}

Result<json> ControlClient::exchange(const std::string& line) {
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  Status sent = send_all(fd_, line + "\n", deadline);
  auto response = read_json(deadline);
  // A refused peer finds the refusal waiting although its send failed.
  if (!sent && !response) return sent.error();
  return response;
}

Result<Response> ControlClient::call(const std::string& op, const json& args) {
  std::int64_t id = next_id_++;
  auto reply = exchange(json{{"v", kProtocolVersion}, {"id", id}, {"op", op}, {"args", args}}.dump());
  if (!reply) return reply.error();
  const json& j = *reply;
  Response r;
  r.id = j.value("id", json());
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) return Error{EPROTO, "switchd's response has no \"ok\""};
  r.ok = ok->get<bool>();
  if (!r.id.is_null() && r.id != id)
    return Error{EPROTO, "switchd answered request " + r.id.dump() + ", expected " + std::to_string(id)};
  if (r.ok) {
    if (r.id.is_null()) return Error{EPROTO, "switchd's response has no \"id\""};
    r.result = j.value("result", json::object());
    return r;
  }
  const json err = j.value("error", json::object());
  r.kind = err.is_object() ? err.value("kind", "") : "";
  r.message = err.is_object() ? err.value("message", "") : "";
  if (r.kind.empty()) return Error{EPROTO, "switchd's error response has no kind"};
  return r;
}

}  // namespace xvmq::control
