#include "tools/classify/table.h"

#include <algorithm>
#include <cstdio>

namespace xvmq::classify {

void Table::print() const {
  std::vector<size_t> width(columns_.size());
  for (size_t i = 0; i < columns_.size(); i++) width[i] = columns_[i].title.size();
  for (const auto& row : rows_)
    for (size_t i = 0; i < row.size() && i < width.size(); i++) width[i] = std::max(width[i], row[i].size());

  auto line = [&](auto cell) {
    std::string out;
    for (size_t i = 0; i < columns_.size(); i++) {
      std::string text = cell(i);
      std::string pad(width[i] - std::min(width[i], text.size()), ' ');
      if (i) out += "  ";
      out += columns_[i].align == Align::Right ? pad + text : text + pad;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::printf("%s\n", out.c_str());
  };
  line([&](size_t i) { return columns_[i].title; });
  for (const auto& row : rows_) line([&](size_t i) { return i < row.size() ? row[i] : std::string(); });
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string json_object(std::initializer_list<std::pair<const char*, std::string>> fields) {
  std::string out = "{";
  for (const auto& [key, value] : fields) out += (out.size() > 1 ? ", \"" : "\"") + std::string(key) + "\": " + value;
  return out + "}";
}

std::string json_array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); i++) out += (i ? ", " : "") + items[i];
  return out + "]";
}

}  // namespace xvmq::classify
