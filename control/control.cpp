#include "control/control.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/epoll.h>
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
#include <list>
#include <map>
#include <utility>
#include <vector>

#include "common/fd.h"

namespace xvmq::control {
namespace {

using json = nlohmann::json;

constexpr std::array<std::string_view, 8> kKindNames = {"usage",     "not_found", "wrong_state",         "exists",
                                                        "exhausted", "kernel",    "unsupported_version", "permission"};

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return Error{ENAMETOOLONG,
                 "socket path '" + path + "' must be 1 to " + std::to_string(sizeof(a.sun_path) - 1) + " bytes long"};
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

int connect_to(int fd, const sockaddr_un& a) { return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)); }

Status make_directories(const std::filesystem::path& dir) {
  if (dir.empty()) return {};
  struct stat st {};
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

std::string check_shape(std::string_view text, const Limits& limits) {
  std::size_t depth = 0, values = 1;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limits.max_depth)
          return "request nests arrays and objects more than " + std::to_string(limits.max_depth) +
                 " deep; the nesting depth limit is " + std::to_string(limits.max_depth);
        ++values;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      case ',':
        ++values;
        break;
      default:
        continue;
    }
    if (values > limits.max_values)
      return "request holds more than " + std::to_string(limits.max_values) +
             " values (arrays, objects and their elements); that is the limit";
  }
  return {};
}

namespace {

// What became of one request: answered, or parked (a Wait) with what it
// takes to call its handler again.
struct Outcome {
  std::string line;  // the response, when answered
  bool parked = false;
  json id;
  std::string op;
  json args;
  std::chrono::milliseconds wait{0};
  json timeout_result;
};

Outcome answered(std::string line) {
  Outcome o;
  o.line = std::move(line);
  return o;
}

Outcome call_handler(const Handler& handler, const json& id, const std::string& name, const json& args,
                     const std::function<void(const std::string&)>& log) {
  Outcome o;
  try {
    o.line = ok_line(id, handler(name, args));
  } catch (const Wait& w) {
    o.parked = true;
    o.wait = std::clamp(w.wait, std::chrono::milliseconds(0), kMaxWait);
    o.timeout_result = w.result;
  } catch (const ControlError& e) {
    o.line = error_line(id, e.kind(), e.what());
  } catch (const json::exception& e) {
    o.line = error_line(id, ErrorKind::Usage, name + ": bad arguments: " + e.what());
  } catch (const std::exception& e) {
    if (log) log("control: " + name + " failed: " + e.what());
    o.line = error_line(id, ErrorKind::Kernel, name + ": internal error: " + e.what());
  } catch (...) {
    if (log) log("control: " + name + " failed: an exception of unknown type");
    o.line = error_line(id, ErrorKind::Kernel, name + ": internal error: an exception of unknown type");
  }
  return o;
}

Outcome serve(const Handler& handler, std::string_view line, bool& close,
              const std::function<void(const std::string&)>& log, const Limits& limits) {
  // Before parsing: nlohmann's parser and destructor recurse per level.
  if (std::string bad = check_shape(line, limits); !bad.empty())
    return answered(error_line(nullptr, ErrorKind::Usage, bad));
  json req = json::parse(line, nullptr, false);
  if (req.is_discarded()) {
    close = true;
    return answered(error_line(nullptr, ErrorKind::Usage, "request line is not JSON; closing the connection"));
  }
  if (!req.is_object()) return answered(error_line(nullptr, ErrorKind::Usage, "request must be a JSON object"));
  auto it = req.find("id");
  json id = it != req.end() && it->is_number_integer() ? *it : json();
  auto v = req.find("v");
  if (v == req.end() || !v->is_number_integer() || *v != kProtocolVersion)
    return answered(
        error_line(id, ErrorKind::UnsupportedVersion,
                   (v == req.end() ? std::string("request has no \"v\"") : "protocol version " + v->dump()) +
                       " is not supported; this switchd speaks version " + std::to_string(kProtocolVersion)));
  if (id.is_null()) return answered(error_line(id, ErrorKind::Usage, "\"id\" must be an integer"));
  auto op = req.find("op");
  if (op == req.end() || !op->is_string()) return answered(error_line(id, ErrorKind::Usage, "\"op\" must be a string"));
  auto args = req.find("args");
  if (args != req.end() && !args->is_object())
    return answered(error_line(id, ErrorKind::Usage, "\"args\" must be an object"));
  const std::string& name = op->get_ref<const std::string&>();
  json a = args != req.end() ? std::move(*args) : json::object();
  Outcome o = call_handler(handler, id, name, a, log);
  if (o.parked) {
    o.id = id;
    o.op = name;
    o.args = std::move(a);
  }
  return o;
}

}  // namespace

std::string answer(const Handler& handler, std::string_view line, bool& close,
                   const std::function<void(const std::string&)>& log, const Limits& limits) {
  Outcome o = serve(handler, line, close, log, limits);
  // No server to park it: what the wait would end with, now.
  return o.parked ? ok_line(o.id, std::move(o.timeout_result)) : std::move(o.line);
}

namespace {

using Clock = std::chrono::steady_clock;

// Lines one connection may have answered in a row before the others' turn.
constexpr int kBurst = 8;
// Refusals are logged once per burst: the first, then a count at most this often.
constexpr auto kLogEvery = std::chrono::seconds(5);

struct Parked {
  json id;
  std::string op;
  json args;
  Clock::time_point deadline;
  json timeout_result;
};

struct Conn {
  int fd = -1;
  uid_t uid = 0;
  std::string in;           // bytes received, not yet answered
  std::size_t scanned = 0;  // of `in`, known to hold no '\n'
  std::string out;          // one response, being written
  std::size_t sent = 0;     // of `out`
  std::optional<Parked> parked;
  bool closing = false;      // write out, then close
  bool eof = false;          // the peer sent all it will
  bool dead = false;         // close now
  bool ready = false;        // complete lines wait in `in` (its burst was used up)
  Clock::time_point active;  // accepted, or its last response written: the idle deadline's start
  Clock::time_point begun;   // the unfinished line in `in` began: the read deadline's start
  Clock::time_point queued;  // `out` was queued: the write deadline's start
  uint32_t interest = 0;     // registered with epoll

  bool has_line() const { return in.find('\n', scanned) != std::string::npos; }
  bool done() const { return dead || (out.empty() && !parked && (closing || (eof && !has_line()))); }

  void reply(std::string line, Clock::time_point now) {
    out = std::move(line);
    sent = 0;
    queued = now;
  }

  void flush(Clock::time_point now) {
    while (sent < out.size()) {
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) dead = true;
        return;
      }
      sent += static_cast<std::size_t>(n);
    }
    if (!out.empty()) {
      out.clear();
      sent = 0;
      active = now;
      if (!in.empty()) begun = now;  // an unfinished line counts from now
    }
  }

  void receive(Clock::time_point now) {
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      if (in.empty()) begun = now;
      in.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      eof = true;
    } else if (errno != EAGAIN && errno != EINTR) {
      dead = true;
    }
  }

  // Answers the complete lines in `in`, one at a time: the next is read
  // only once the previous response is written (so a peer that does not
  // read stalls only itself) and never while one is parked.
  void pump(const Handler& handler, const ServerOptions& o, Clock::time_point now) {
    ready = false;
    for (int served = 0;;) {
      if (!out.empty()) flush(now);
      if (dead || closing || parked || !out.empty()) return;
      std::size_t nl = in.find('\n', scanned);
      if (nl == std::string::npos) {
        scanned = in.size();
        if (in.size() <= kMaxLine) return;
      }
      if (nl == std::string::npos || nl > kMaxLine) {
        in.clear();
        scanned = 0;
        reply(error_line(nullptr, ErrorKind::Usage, "request line longer than 1 MiB; closing the connection"), now);
        closing = true;
        continue;
      }
      if (served++ == kBurst) {
        ready = true;
        return;
      }
      bool close = false;
      Outcome r = serve(handler, std::string_view(in.data(), nl), close, o.log, o.limits);
      in.erase(0, nl + 1);
      scanned = 0;
      if (!in.empty()) begun = now;
      closing = close;
      if (r.parked)
        parked = Parked{std::move(r.id), std::move(r.op), std::move(r.args), now + r.wait, std::move(r.timeout_result)};
      else
        reply(std::move(r.line), now);
    }
  }

  // The next time something is due on this connection, or nullopt.
  std::optional<Clock::time_point> deadline(const ServerOptions& o) const {
    if (dead) return std::nullopt;
    if (!out.empty()) return queued + o.write_timeout;
    if (parked) return parked->deadline;
    if (closing || eof) return std::nullopt;
    if (in.empty()) return active + o.idle_timeout;
    return begun + o.read_timeout;
  }

  // What is due at `now`: a parked request answers with its timeout result;
  // the deadlines close.
  void expire(const ServerOptions& o, Clock::time_point now) {
    if (dead) return;
    if (!out.empty()) {
      if (now >= queued + o.write_timeout) dead = true;  // the peer does not read
    } else if (parked) {
      if (now >= parked->deadline) {
        reply(ok_line(parked->id, std::move(parked->timeout_result)), now);
        parked.reset();
      }
    } else if (!closing && !eof) {
      if (in.empty()) {
        if (now >= active + o.idle_timeout) dead = true;
      } else if (now >= begun + o.read_timeout) {
        in.clear();
        scanned = 0;
        reply(error_line(nullptr, ErrorKind::Usage,
                         "request line not ended within " + std::to_string(o.read_timeout.count()) +
                             " ms; closing the connection"),
              now);
        closing = true;
      }
    }
  }

  uint32_t wanted() const {
    if (dead) return 0;
    if (!out.empty()) return EPOLLOUT;
    if (parked) return eof ? 0u : uint32_t{EPOLLRDHUP};  // only to notice the peer leaving
    if (closing || eof) return 0;
    return EPOLLIN | EPOLLRDHUP;
  }
};

// Refusals logged once per burst: the first at once, then how many more at
// most every kLogEvery.
class BurstLog {
 public:
  void note(const std::function<void(const std::string&)>& log, const std::string& line, Clock::time_point now) {
    if (!logged_ || (more_ == 0 && now - last_ >= kLogEvery)) {
      if (log)
        log(line + " (further refusals are counted, logged every " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kLogEvery).count()) + " s)");
      logged_ = true;
      last_ = now;
      return;
    }
    ++more_;
    latest_ = line;
  }
  std::optional<Clock::time_point> due() const {
    return more_ ? std::optional<Clock::time_point>(last_ + kLogEvery) : std::nullopt;
  }
  void flush(const std::function<void(const std::string&)>& log, Clock::time_point now) {
    if (!more_ || now < last_ + kLogEvery) return;
    if (log)
      log(std::to_string(more_) + " more refused in the last " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - last_).count()) +
          " s; the latest: " + latest_);
    more_ = 0;
    last_ = now;
  }

 private:
  bool logged_ = false;
  std::size_t more_ = 0;
  Clock::time_point last_;
  std::string latest_;
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

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, path + " exists and is not a socket; not removing it"};
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
  if (::listen(fd.get(), SOMAXCONN) != 0) return fail("listen on " + path);
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
    stopping_ = true;
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  {
    std::lock_guard lock(wake_mu_);
    if (wake_fd_ >= 0) ::close(std::exchange(wake_fd_, -1));
  }
  if (listen_fd_ >= 0) ::close(std::exchange(listen_fd_, -1));
  // Leave a successor's socket alone.
  struct stat st {};
  if (ino_ != 0 && ::lstat(options_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(options_.path.c_str());
  ino_ = 0;
}

void ControlServer::notify() {
  std::lock_guard lock(wake_mu_);
  if (wake_fd_ < 0) return;
  notified_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
}

namespace {
// epoll's data: a Conn*, or one of these two markers.
char g_wake_tag, g_listen_tag;
}  // namespace

// Every connection as its bytes arrive, bounded (connections, per uid, for
// root), with deadlines; handlers one at a time; parked requests asked again
// after notify().
class ControlServer::Loop {
 public:
  explicit Loop(ControlServer& s)
      : s_(s),
        o_(s.options_),
        ep_(::epoll_create1(EPOLL_CLOEXEC)),
        max_clients_(std::max(o_.max_clients, 1)),
        root_reserved_(std::clamp(o_.root_reserved, 0, max_clients_ - 1)),
        max_others_(max_clients_ - root_reserved_),
        max_per_uid_(std::max(o_.max_clients_per_uid, 1)) {}
  ~Loop() {
    for (const Conn& c : conns_) ::close(c.fd);
  }
  void run();

 private:
  void say(const std::string& line) const {
    if (o_.log) o_.log(line);
  }
  int add(int fd, uint32_t events, void* tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    return ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  // Accepted, then refused before anything is read: the peer reads the line, then EOF.
  static void refuse(int fd, ErrorKind kind, const std::string& why) {
    std::string line = error_line(nullptr, kind, why);
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
  }
  std::string full_reason(const ucred& peer);
  void admit(int fd, Clock::time_point now);
  void accept_all(Clock::time_point now);
  int timeout(Clock::time_point now) const;
  // The events of one wait; false when the server stops.
  bool dispatch(const epoll_event* events, int n, Clock::time_point now, bool& notified, bool& accept_now);
  void serve(Clock::time_point now, bool notified);
  void sweep();

  ControlServer& s_;
  const ServerOptions& o_;
  Fd ep_;
  bool listening_ = true;
  std::optional<Clock::time_point> listen_again_;  // after EMFILE: accept again then
  std::list<Conn> conns_;
  std::map<uid_t, int> per_uid_;
  int others_ = 0;  // connections of uids other than root
  BurstLog full_log_, permission_log_, accept_log_;
  const int max_clients_, root_reserved_, max_others_, max_per_uid_;
};

std::string ControlServer::Loop::full_reason(const ucred& peer) {
  const int open = static_cast<int>(conns_.size());
  if (open >= max_clients_)
    return "switchd is full: " + std::to_string(open) + " connections open, the bound is " +
           std::to_string(max_clients_) + " (switchd --max-clients); try again later";
  if (peer.uid != 0 && others_ >= max_others_)
    return "switchd is full for uids other than root: " + std::to_string(others_) + " of " + std::to_string(open) +
           " open connections are theirs, the bound is " + std::to_string(max_others_) + " (switchd --max-clients " +
           std::to_string(max_clients_) + " less " + std::to_string(root_reserved_) +
           " kept for root); try again later";
  if (peer.uid != 0 && per_uid_[peer.uid] >= max_per_uid_)
    return "switchd is full for uid " + std::to_string(peer.uid) + ": " + std::to_string(per_uid_[peer.uid]) + " of " +
           std::to_string(open) + " open connections are its, the bound is " + std::to_string(max_per_uid_) +
           " per uid (switchd --max-clients-per-uid); try again later";
  return "";
}

void ControlServer::Loop::admit(int fd, Clock::time_point now) {
  ucred peer{};
  socklen_t len = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 || !may_connect(peer, s_.gid_)) {
    std::string why =
        "uid " + std::to_string(peer.uid) + " is neither root nor in group '" + o_.group + "' of " + o_.path;
    permission_log_.note(o_.log, "control: refused pid " + std::to_string(peer.pid) + ": " + why, now);
    refuse(fd, ErrorKind::Permission, why);
    return;
  }
  if (std::string full = full_reason(peer); !full.empty()) {
    full_log_.note(
        o_.log, "control: refused pid " + std::to_string(peer.pid) + " (uid " + std::to_string(peer.uid) + "): " + full,
        now);
    refuse(fd, ErrorKind::Exhausted, full);
    return;
  }
  Conn& c = conns_.emplace_back();
  c.fd = fd;
  c.uid = peer.uid;
  c.active = now;
  c.interest = EPOLLIN | EPOLLRDHUP;
  if (add(fd, c.interest, &c) != 0) {
    say("control: epoll_ctl: " + std::string(std::strerror(errno)));
    ::close(fd);
    conns_.pop_back();
    return;
  }
  ++per_uid_[peer.uid];
  if (peer.uid != 0) ++others_;
}

void ControlServer::Loop::accept_all(Clock::time_point now) {
  for (int i = 0; i < 4 * max_clients_; ++i) {
    int fd = ::accept4(s_.listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      admit(fd, now);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // The backlog keeps the peer; stop the level-triggered wakeups for a while.
      accept_log_.note(o_.log, "control: accept on " + o_.path + ": " + std::strerror(errno) + "; pausing 100 ms", now);
      ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, s_.listen_fd_, nullptr);
      listening_ = false;
      listen_again_ = now + std::chrono::milliseconds(100);
      return;
    }
    say("control: accept on " + o_.path + ": " + std::strerror(errno));
    return;
  }
}

// Sleep until the next deadline, or not at all when lines are waiting.
int ControlServer::Loop::timeout(Clock::time_point now) const {
  std::optional<Clock::time_point> next;
  auto consider = [&](std::optional<Clock::time_point> t) {
    if (t && (!next || *t < *next)) next = t;
  };
  bool ready = false;
  for (const Conn& c : conns_) {
    ready |= c.ready;
    consider(c.deadline(o_));
  }
  consider(full_log_.due());
  consider(permission_log_.due());
  consider(accept_log_.due());
  consider(listen_again_);
  if (ready) return 0;
  if (!next) return -1;
  return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(
      std::chrono::ceil<std::chrono::milliseconds>(*next - now).count(), 0, 60000));
}

bool ControlServer::Loop::dispatch(const epoll_event* events, int n, Clock::time_point now, bool& notified,
                                   bool& accept_now) {
  for (int i = 0; i < n; ++i) {
    void* tag = events[i].data.ptr;
    uint32_t re = events[i].events;
    if (tag == &g_wake_tag) {
      uint64_t count;
      (void)!::read(s_.wake_fd_, &count, sizeof(count));
      if (s_.stopping_) return false;
      notified = s_.notified_.exchange(false);
      continue;
    }
    if (tag == &g_listen_tag) {
      accept_now = true;
      continue;
    }
    Conn& c = *static_cast<Conn*>(tag);
    if (re & EPOLLERR) c.dead = true;
    if (re & EPOLLOUT) c.flush(now);
    if (re & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
      if (c.out.empty() && !c.parked && !c.closing && !c.eof)
        c.receive(now);
      else if (c.parked && (re & EPOLLHUP))
        c.dead = true;  // nobody left to answer
      else if (c.parked && (re & EPOLLRDHUP))
        c.eof = true;  // half closed: answer, then close
    }
    c.pump(s_.handler_, o_, now);
  }
  return true;
}

void ControlServer::Loop::serve(Clock::time_point now, bool notified) {
  for (Conn& c : conns_) {
    if (c.ready) c.pump(s_.handler_, o_, now);
    if (notified && c.parked && !c.dead) {
      Outcome r = call_handler(s_.handler_, c.parked->id, c.parked->op, c.parked->args, o_.log);
      if (!r.parked) {
        c.parked.reset();
        c.reply(std::move(r.line), now);
        c.pump(s_.handler_, o_, now);
      }
    }
    c.expire(o_, now);
    if (!c.out.empty() && !c.dead) c.pump(s_.handler_, o_, now);  // a timeout's answer: write it now
  }
  full_log_.flush(o_.log, now);
  permission_log_.flush(o_.log, now);
  accept_log_.flush(o_.log, now);
}

void ControlServer::Loop::sweep() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    Conn& c = *it;
    if (c.done()) {
      ::close(c.fd);  // also leaves the epoll set
      if (--per_uid_[c.uid] == 0) per_uid_.erase(c.uid);
      if (c.uid != 0) --others_;
      it = conns_.erase(it);
      continue;
    }
    uint32_t want = c.wanted();
    if (want != c.interest) {
      epoll_event ev{};
      ev.events = want;
      ev.data.ptr = &c;
      ::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd, &ev);
      c.interest = want;
    }
    ++it;
  }
}

void ControlServer::Loop::run() {
  if (ep_.get() < 0) {
    say("control: epoll_create1: " + std::string(std::strerror(errno)));
    return;
  }
  if (add(s_.wake_fd_, EPOLLIN, &g_wake_tag) != 0 || add(s_.listen_fd_, EPOLLIN, &g_listen_tag) != 0) {
    say("control: epoll_ctl: " + std::string(std::strerror(errno)));
    return;
  }
  std::array<epoll_event, 64> events;
  for (;;) {
    int n = ::epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()), timeout(Clock::now()));
    if (n < 0) {
      if (errno == EINTR) continue;
      say("control: epoll_wait: " + std::string(std::strerror(errno)));
      return;
    }
    const Clock::time_point now = Clock::now();
    bool notified = false, accept_now = false;
    if (!dispatch(events.data(), n, now, notified, accept_now)) return;
    if (listen_again_ && now >= *listen_again_) {
      listen_again_.reset();
      if (!listening_ && add(s_.listen_fd_, EPOLLIN, &g_listen_tag) == 0) listening_ = true;
    }
    serve(now, notified);
    sweep();
    // After the sweep: the slots of closed connections are free again.
    if (accept_now && listening_) accept_all(now);
  }
}

void ControlServer::run() { Loop(*this).run(); }

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
      buffered_(std::move(other.buffered_)),
      interrupt_(other.interrupt_) {}

ControlClient& ControlClient::operator=(ControlClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    timeout_ = other.timeout_;
    next_id_ = other.next_id_;
    buffered_ = std::move(other.buffered_);
    interrupt_ = other.interrupt_;
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
    if (ready < 0 && errno == EINTR && interrupt_ && *interrupt_) return Error{EINTR, "interrupted"};
    if (ready < 0 && errno != EINTR) return sys_error(errno, "poll");
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0)
      buffered_.append(buf, n);
    else if (n == 0 || errno == ECONNRESET)
      return Error{ECONNRESET, "switchd closed the connection without a response"};
    else if (errno != EAGAIN && errno != EINTR)
      return sys_error(errno, "receive from switchd");
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
