// DynamicLibrary (blockrep/base/dynlib.h): a library opened at run time, and the errors an operator
// meets when one is missing or too old.
#include "blockrep/base/dynlib.h"

#include <gtest/gtest.h>

#include <cstring>

namespace blockrep {
namespace {

// A bound function is the library's own: strlen from libc answers as strlen does.
TEST(DynamicLibrary, BindsAFunctionOfTheLibrary) {
  auto libc = DynamicLibrary::Open("libc.so.6", "libc6", "this test");
  ASSERT_TRUE(libc.ok()) << libc.status().message();
  decltype(&::strlen) fn = nullptr;
  ASSERT_TRUE(libc->Bind("strlen", &fn).ok());
  EXPECT_EQ(fn("blockrep"), 8u);
}

// A library that is not installed: the error says who needs it and which package to install.
TEST(DynamicLibrary, MissingLibraryNamesItsPackage) {
  auto lib = DynamicLibrary::Open("libblockrep-no-such-library.so.1", "blockrep-no-such-package", "the test's feature");
  ASSERT_FALSE(lib.ok());
  EXPECT_NE(lib.status().message().find("the test's feature needs libblockrep-no-such-library.so.1"), std::string::npos)
      << lib.status().message();
  EXPECT_NE(lib.status().message().find("install the Debian package blockrep-no-such-package"), std::string::npos);
}

// A library without a function the build expects (an older version): an error, never a null call.
TEST(DynamicLibrary, MissingFunctionIsAnError) {
  auto libc = DynamicLibrary::Open("libc.so.6", "libc6", "this test");
  ASSERT_TRUE(libc.ok());
  void (*fn)() = nullptr;
  Status st = libc->Bind("blockrep_no_such_function", &fn);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(fn, nullptr);
  EXPECT_NE(st.message().find("libc.so.6 lacks blockrep_no_such_function"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace blockrep
