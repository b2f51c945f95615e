// The control socket of switchd: transport only (docs/protocol.md, version 1).
// ControlServer frames, checks and answers requests; what an op does is the
// Handler's business. ControlClient is the other end, for switchctl and tests.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace xvmq::control {

inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kMaxLine = 1 << 20;  // bytes of one line, without its '\n'
// The largest configuration file config.apply takes, so that it fits one
// request line escaped (switchd/core/config.h checks it; switchctl before sending).
inline constexpr std::size_t kMaxConfigBytes = 512 << 10;
// What one request may make switchd build: arrays and objects nested at most
// this deep, and at most this many values (containers and their elements).
// Checked on the bytes before parsing, so that no hostile line recurses.
inline constexpr std::size_t kMaxDepth = 32;
inline constexpr std::size_t kMaxValues = 100000;
// The longest a request may be parked (a long poll, see Wait).
inline constexpr std::chrono::milliseconds kMaxWait{60000};
inline constexpr const char* kDefaultSocket = "/run/xvmq/switchd.sock";

enum class ErrorKind { Usage, NotFound, WrongState, Exists, Exhausted, Kernel, UnsupportedVersion, Permission };

// The wire names: "usage", "not_found", ...
std::string_view to_string(ErrorKind kind);
std::optional<ErrorKind> parse_error_kind(std::string_view name);

// How a Handler refuses a request: throw ControlError(kind, message). The
// message is for a person: name the object, its state and what is allowed.
class ControlError : public std::runtime_error {
 public:
  ControlError(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// A handler that has nothing to answer yet (a long poll: `events` with
// `wait_ms`) throws Wait. The server parks the request: it calls the handler
// again with the same op and args after every notify(), and answers `result`
// once `wait` (at most kMaxWait) has passed with the handler still throwing
// Wait. answer(), which has no server around it, answers `result` at once.
// Not a std::exception, so that no catch-all turns it into an error.
struct Wait {
  std::chrono::milliseconds wait{0};
  nlohmann::json result;
};

// Called with a request's op and args (an object, {} when the request had
// none). Returns the result (null becomes {}), or throws:
//   ControlError               -> that kind and message;
//   nlohmann::json::exception  -> usage (an ill-typed or missing argument read with at()/get());
//   any other std::exception   -> kernel, "internal error: ..." (the protocol has no kind for bugs).
//   Wait                       -> the request is parked (above).
// Calls come one at a time from the server's thread, never concurrently, so
// the handler needs no lock of its own against other clients; a slow handler
// delays every client (the clients themselves cannot: see ControlServer).
using Handler = std::function<nlohmann::json(const std::string& op, const nlohmann::json& args)>;

// What a request line may make switchd spend (usage error beyond).
struct Limits {
  std::size_t max_depth = kMaxDepth;
  std::size_t max_values = kMaxValues;
};

// "" when the JSON text nests at most limits.max_depth deep and holds at most
// limits.max_values values, else the usage message naming the limit. Reads
// the bytes only: no recursion, no allocation.
std::string check_shape(std::string_view text, const Limits& limits = {});

// One request line (without its '\n') -> one response line (with its '\n'):
// the framing's checks, then the handler. Sets close when the connection
// must be closed after the response (the framing cannot be trusted). Used by
// the server for every line, and by the fuzzers without a socket. A line
// longer than kMaxLine is the server's to refuse (it never buffers one).
std::string answer(const Handler& handler, std::string_view line, bool& close,
                   const std::function<void(const std::string&)>& log = {}, const Limits& limits = {});

struct ServerOptions {
  std::string path = kDefaultSocket;
  std::string group = "root";  // group that may connect, besides uid 0
  // Connections served at once, all peers together; one more is answered
  // with an `exhausted` error line and closed.
  int max_clients = 256;
  // Of one uid other than root.
  int max_clients_per_uid = 64;
  // The last root_reserved of max_clients are root's (uid 0): the other uids
  // together get at most max_clients - root_reserved.
  int root_reserved = 16;
  // A connection with no request under way (nothing buffered, nothing to
  // write, nothing parked) is closed after idle_timeout; a request line begun
  // and not ended within read_timeout is refused (usage) and the connection
  // closed; a response the peer has not read within write_timeout closes it.
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds read_timeout{10000};
  std::chrono::milliseconds write_timeout{10000};
  Limits limits;
  // Told about refused peers and failures no response can carry; may be empty.
  // Refusals are told once per burst: the first, then a count at most every
  // 5 s.
  std::function<void(const std::string&)> log;
};

class ControlServer {
 public:
  // Creates the socket's parent directory (0755) when missing, replaces a
  // stale socket file (nothing listening) and refuses when another server
  // listens on the path or the path is not a socket. The socket gets mode
  // 0660 and the group; its owner is this process's uid (root for switchd).
  // Serving starts on its own thread before this returns: one thread, an
  // epoll loop, every connection served as its bytes arrive, so that no
  // client (idle, slow, half a line, never reading) delays another.
  static Result<std::unique_ptr<ControlServer>> start(ServerOptions options, Handler handler);

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  ~ControlServer();

  // Closes every connection, joins the thread and removes the socket file
  // (when it is still the one this server bound). Idempotent.
  void stop();

  // Something a parked request waits for may have happened: the server
  // calls the handler of every parked request again. Any thread; cheap.
  void notify();

  const std::string& path() const { return options_.path; }
  gid_t gid() const { return gid_; }

 private:
  ControlServer(ServerOptions options, Handler handler, gid_t gid);
  class Loop;  // the server thread's event loop (control.cpp)
  void run();

  ServerOptions options_;
  Handler handler_;
  gid_t gid_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;    // eventfd: stop() and notify() wake the loop
  std::mutex wake_mu_;  // notify() against stop() closing wake_fd_
  std::atomic<bool> stopping_{false}, notified_{false};
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::thread thread_;
};

// One response as received. kind is kept as sent, which may be a kind this
// build does not know (parse_error_kind() returns nullopt for it).
struct Response {
  nlohmann::json id;
  bool ok = false;
  nlohmann::json result;  // when ok
  std::string kind;       // when !ok
  std::string message;
};

class ControlClient {
 public:
  // The timeout bounds each call() or exchange() as a whole.
  static Result<ControlClient> connect(const std::string& path,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

  ControlClient(ControlClient&& other) noexcept;
  ControlClient& operator=(ControlClient&& other) noexcept;
  ~ControlClient();

  // Sends {"v":1,"id":<next>,"op":op,"args":args} and reads its response.
  // An Error is a transport failure (closed, timeout, garbage), never a refusal.
  // A response with id null is accepted: switchd refuses a peer that way
  // before reading its request.
  Result<Response> call(const std::string& op, const nlohmann::json& args = nlohmann::json::object());

  // Sends one line as is (a '\n' is appended) and returns the next response
  // line, parsed but not checked: for tests and debugging.
  Result<nlohmann::json> exchange(const std::string& line);

  // The bound of the next calls (a long poll's wait plus the usual timeout).
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // A call waiting for its response gives up (EINTR) when a signal
  // interrupts it (a handler installed without SA_RESTART) and *flag is set.
  void interrupt_on(const volatile std::sig_atomic_t* flag) { interrupt_ = flag; }

 private:
  explicit ControlClient(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
  Result<nlohmann::json> read_json(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  std::int64_t next_id_ = 1;
  std::string buffered_;  // bytes after the last response line read
  const volatile std::sig_atomic_t* interrupt_ = nullptr;
};

}  // namespace xvmq::control
