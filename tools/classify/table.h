// Aligned text tables and JSON strings for the command output.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace xvmq::classify {

enum class Align { Left, Right };

struct Column {
  std::string title;
  Align align = Align::Left;
};

class Table {
 public:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  // Columns two spaces apart; trailing blanks trimmed.
  void print() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

std::string json_string(std::string_view s);
// {"key": value, ...}, of values that are JSON text already.
std::string json_object(std::initializer_list<std::pair<const char*, std::string>> fields);
// [item, ...], of items that are JSON text already.
std::string json_array(const std::vector<std::string>& items);
inline std::string json_bool(bool b) { return b ? "true" : "false"; }

}  // namespace xvmq::classify
