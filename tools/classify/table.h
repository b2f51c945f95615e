// Aligned text tables and JSON strings for the command output.
#pragma once

#include <string>
#include <string_view>
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

}  // namespace xvmq::classify
