// xvmq-cni: a CNI 1.0.0 plugin that attaches a container's interface to
// switchd (docs/cni.md). Run by a container runtime: CNI_* variables, the
// network configuration on stdin, the result or the spec's error on stdout.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "tools/cni/netconf.h"
#include "tools/cni/plugin.h"

namespace {

using namespace xvmq::cni;

constexpr std::size_t kMaxConfig = 1 << 20;

int fail(const CniError& e) {
  std::cout << print_json(e.to_json()) << std::endl;
  return 1;
}

bool read_stdin(std::string* out) {
  char buf[65536];
  for (ssize_t n; (n = ::read(0, buf, sizeof(buf))) != 0;) {
    if (n < 0) return false;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > kMaxConfig) return false;
  }
  return true;
}

}  // namespace

int main() {
  CniError err;
  auto env = parse_env(&err);
  if (!env) return fail(err);
  if (env->command == "VERSION") {
    std::cout << print_json(version_result()) << std::endl;
    return 0;
  }
  std::string text;
  if (!read_stdin(&text))
    return fail({kIoFailure, "cannot read the network configuration on stdin",
                 "at most " + std::to_string(kMaxConfig) + " bytes"});
  auto conf = parse_netconf(text, &err);
  if (!conf) return fail(err);
  std::optional<nlohmann::json> result;
  if (env->command == "ADD")
    result = cmd_add(*conf, *env, text, &err);
  else if (env->command == "DEL")
    result = cmd_del(*conf, *env, text, &err);
  else
    result = cmd_check(*conf, *env, text, &err);
  if (!result) return fail(err);
  if (!result->is_null()) std::cout << print_json(*result) << std::endl;
  return 0;
}
