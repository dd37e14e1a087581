// The settings registry (common/env.h): every SWITCHYARD_* variable once, documented, read one way.
#include "common/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <set>
#include <string>

namespace switchyard {
namespace {

TEST(SettingsTest, EachVariableIsListedOnceWithHelp) {
  std::set<std::string> names;
  for (const SettingInfo& s : Settings()) {
    EXPECT_EQ(std::string(s.name).rfind("SWITCHYARD_", 0), 0u) << s.name;
    EXPECT_TRUE(names.insert(s.name).second) << s.name << " listed twice";
    EXPECT_GT(std::string(s.help).size(), 10u) << s.name;
    EXPECT_EQ(Info(s.setting).name, s.name);
  }
}

TEST(SettingsTest, UnsetAndEmptyAreAbsent) {
  unsetenv("SWITCHYARD_TRACES");
  EXPECT_FALSE(GetSetting(Setting::kTraces).has_value());
  setenv("SWITCHYARD_TRACES", "", 1);
  EXPECT_FALSE(GetSetting(Setting::kTraces).has_value());
  setenv("SWITCHYARD_TRACES", "/data", 1);
  EXPECT_EQ(GetSetting(Setting::kTraces).value_or(""), "/data");
  unsetenv("SWITCHYARD_TRACES");
}

}  // namespace
}  // namespace switchyard
