// BR_CHECK (blockrep/base/check.h): a broken invariant stops the process with one line naming it, in
// every build type; the message is built only when the check fails.
#include <gtest/gtest.h>

#include <string>

#include "blockrep/base/check.h"

namespace blockrep {
namespace {

TEST(CheckDeathTest, FailureNamesFileLineAndCondition) {
  int two = 2;
  EXPECT_DEATH(BR_CHECK(two == 3), "internal error at .*check_test.cc:[0-9]+: check failed: two == 3");
  EXPECT_DEATH(BR_CHECK_MSG(two < 0, "two is " + std::to_string(two)), "check failed: two < 0: two is 2");
}

TEST(Check, MessageIsBuiltOnlyOnFailure) {
  int built = 0;
  auto message = [&] {
    ++built;
    return std::string("never");
  };
  BR_CHECK_MSG(1 + 1 == 2, message());
  BR_CHECK(true);
  EXPECT_EQ(built, 0);
}

}  // namespace
}  // namespace blockrep
