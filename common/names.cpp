#include "common/names.h"

#include <algorithm>

namespace xvmq {

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 15 || name[0] == '-' || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

bool is_vhost_user(std::string_view backend) { return backend.starts_with(kVhostUserPrefix); }

std::string_view vhost_user_path(std::string_view backend) {
  return is_vhost_user(backend) ? backend.substr(kVhostUserPrefix.size()) : std::string_view{};
}

bool valid_backend(std::string_view backend) {
  if (!is_vhost_user(backend)) return valid_name(backend);
  const std::string_view path = vhost_user_path(backend);
  return path.size() >= 2 && path.size() <= 107 && path[0] == '/' && path.find('\0') == std::string_view::npos;
}

}  // namespace xvmq
