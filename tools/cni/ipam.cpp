#include "tools/cni/ipam.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

extern char** environ;

namespace xvmq::cni {

using nlohmann::json;

std::string find_plugin(const std::string& type, const std::string& cni_path) {
  std::stringstream s(cni_path);
  for (std::string dir; std::getline(s, dir, ':');) {
    if (dir.empty()) continue;
    const std::string file = dir + "/" + type;
    if (::access(file.c_str(), X_OK) == 0) return file;
  }
  return "";
}

namespace {

// This process's environment with CNI_COMMAND set to `command`.
std::vector<std::string> plugin_env(const std::string& command) {
  std::vector<std::string> env{"CNI_COMMAND=" + command};
  for (char** e = environ; *e; e++)
    if (std::strncmp(*e, "CNI_COMMAND=", 12) != 0) env.emplace_back(*e);
  return env;
}

// Runs `file` with `input` on stdin; its stdout into *out, its exit status returned.
Result<int> run(const std::string& file, const std::string& command, const std::string& input, std::string* out) {
  Fd in(::memfd_create("xvmq-cni-conf", MFD_CLOEXEC));
  if (in.get() < 0) return sys_error(errno, "memfd for the IPAM plugin's stdin");
  if (::write(in.get(), input.data(), input.size()) != static_cast<ssize_t>(input.size()) ||
      ::lseek(in.get(), 0, SEEK_SET) != 0)
    return sys_error(errno, "write the IPAM plugin's stdin");
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sys_error(errno, "pipe for the IPAM plugin's stdout");
  Fd rd(p[0]), wr(p[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
  std::vector<std::string> env = plugin_env(command);
  std::vector<char*> envp;
  for (auto& v : env) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::string arg0 = file;
  char* argv[] = {arg0.data(), nullptr};
  pid_t pid;
  const int rc = posix_spawn(&pid, file.c_str(), &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return sys_error(rc, "run " + file);
  ::close(wr.release());
  char buf[4096];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (out->size() < (1u << 20)) out->append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::optional<json> run_ipam(const std::string& type, const std::string& cni_path, const std::string& command,
                             const std::string& conf, CniError* err) {
  const std::string file = find_plugin(type, cni_path);
  if (file.empty()) {
    *err = {kIpamFailed, "ipam " + type + ": no such plugin in CNI_PATH", "CNI_PATH=" + cni_path};
    return std::nullopt;
  }
  std::string out;
  auto status = run(file, command, conf, &out);
  if (!status) {
    *err = {kIpamFailed, "ipam " + type + " " + command + ": " + status.error().message, ""};
    return std::nullopt;
  }
  json j = out.empty() ? json(nullptr) : json::parse(out, nullptr, false);
  if (*status != 0) {
    *err = {kIpamFailed, "ipam " + type + " " + command + " exited " + std::to_string(*status), out.substr(0, 512)};
    if (j.is_object() && j.contains("code") && j["code"].is_number_integer()) {
      err->code = j["code"].get<int>();
      err->msg = "ipam " + type + ": " + j.value("msg", "");
      err->details = j.value("details", "");
    }
    return std::nullopt;
  }
  if (command != "ADD") return json(nullptr);
  if (!j.is_object() || !j.contains("ips") || !j["ips"].is_array()) {
    *err = {kIpamFailed, "ipam " + type + " ADD: its result has no ips", out.substr(0, 512)};
    return std::nullopt;
  }
  return j;
}

}  // namespace xvmq::cni
