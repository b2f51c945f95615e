// Runs a fuzz target over files, without libFuzzer: the normal build
// replays each seed corpus as a test (ctest fuzz_*_replay), so the targets
// keep compiling with gcc and every seed, and every finding added to the
// corpus, stays checked.
//
//   <target>_replay [--needs-root] FILE_OR_DIR...
//
// --needs-root: the target moves itself into new namespaces; without root
// the replay is skipped (exit 77), or fails under CI=true.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> files;
  bool needs_root = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--needs-root") {
      needs_root = true;
    } else if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::directory_iterator(a))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.push_back(a);
    }
  }
  if (needs_root && geteuid() != 0) {
    const char* ci = std::getenv("CI");
    std::fprintf(stderr, "replay: needs root (network namespaces)%s\n",
                 ci && std::string(ci) == "true" ? "" : "; skipped");
    return ci && std::string(ci) == "true" ? 1 : 77;
  }
  std::sort(files.begin(), files.end());
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay %s (%zu bytes)\n", f.c_str(), data.size());
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  std::fprintf(stderr, "replay: %zu input(s), no finding\n", files.size());
  return 0;
}
