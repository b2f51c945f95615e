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

}  // namespace xvmq
