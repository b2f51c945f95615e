// The command line parse shared by xvmq's CLIs (switchctl, xvmq-classify):
// --help to stdout (exit 0), a usage error as one line on stderr (exit 2).
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

namespace xvmq::cli {

// Parses argv into `app`. nullopt when the command is to run; otherwise the
// exit code, after printing the help or the error.
inline std::optional<int> parse(CLI::App& app, int argc, char** argv, const char* program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "%s: %s (see %s --help)\n", program, what.c_str(), program);
    return 2;
  }
  return std::nullopt;
}

}  // namespace xvmq::cli
