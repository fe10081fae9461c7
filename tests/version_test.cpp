#include "hms/ffi/version.hpp"

#include <gtest/gtest.h>

namespace hms::ffi {
namespace {

bool in(const char* range, const char* version) {
  auto r = VersionRange::parse(range);
  EXPECT_TRUE(r.ok()) << range << ": " << r.status().toString();
  return r.ok() && r->contains(Version::parse(version).value());
}

TEST(Version, ParsesFullAndPartialVersions) {
  EXPECT_EQ(Version::parse("1.4.2").value(), (Version{1, 4, 2}));
  EXPECT_EQ(Version::parse("3").value(), (Version{3, 0, 0}));
  EXPECT_EQ(Version::parse("1.2.3").value().toString(), "1.2.3");
  for (const char* bad : {"", "1..2", "a.b.c", "1.2.3.4", "-1", "1.2.x"}) {
    auto v = Version::parse(bad);
    EXPECT_FALSE(v.ok()) << bad;
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(VersionRange, CaretAllowsMinorAndPatchUpgrades) {
  EXPECT_TRUE(in("^1.2.0", "1.2.0"));
  EXPECT_TRUE(in("^1.2.0", "1.9.7"));
  EXPECT_FALSE(in("^1.2.0", "1.1.9"));
  EXPECT_FALSE(in("^1.2.0", "2.0.0"));
  EXPECT_TRUE(in("^0.3.1", "0.3.9"));
  EXPECT_FALSE(in("^0.3.1", "0.4.0"));
  EXPECT_TRUE(in("^1", "1.99.0"));
}

TEST(VersionRange, TildeAllowsPatchUpgrades) {
  EXPECT_TRUE(in("~1.2.3", "1.2.9"));
  EXPECT_FALSE(in("~1.2.3", "1.3.0"));
  EXPECT_TRUE(in("~1", "1.5.0"));
}

TEST(VersionRange, ComparatorsAreAnded_AndWildcardsMatchAll) {
  EXPECT_TRUE(in(">=1.0.0 <2.0.0", "1.5.0"));
  EXPECT_FALSE(in(">=1.0.0 <2.0.0", "2.0.0"));
  EXPECT_TRUE(in(">1 <=3", "3.0.0"));
  EXPECT_FALSE(in(">1", "1.0.0"));
  EXPECT_TRUE(in("*", "0.0.1"));
  EXPECT_TRUE(in("", "9.9.9"));
  EXPECT_TRUE(in("1.x", "1.7.0"));
  EXPECT_FALSE(in("1.x", "2.0.0"));
  EXPECT_TRUE(in("1.2", "1.2.5"));
  EXPECT_FALSE(in("1.2", "1.3.0"));
  EXPECT_TRUE(in("=1.2.3", "1.2.3"));
  EXPECT_FALSE(in("1.2.3", "1.2.4"));
}

TEST(VersionRange, RejectsGarbageWithAClearMessage) {
  auto r = VersionRange::parse(">=one");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("MAJOR.MINOR.PATCH"), std::string::npos);
}

}  // namespace
}  // namespace hms::ffi
