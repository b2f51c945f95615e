// Test main: privileged tests run in this process's own network and mount
// namespaces, so everything they create is gone when it exits.
#include <gtest/gtest.h>

#include <cstdio>

#include "loader/log.h"
#include "tests/lib/harness.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (auto why = xvmq::test::enter_private_namespaces())
    std::fprintf(stderr, "privileged tests will not run: %s\n", why->c_str());
  xvmq::log::install(std::getenv("XVMQ_VERBOSE") != nullptr);
  return RUN_ALL_TESTS();
}
