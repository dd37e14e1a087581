// Typed, total JSON reading (common/json_reader.h): errors name file, path and a capped,
// escaped value; repeated keys are refused; nothing throws.
#include "common/json_reader.h"

#include <gtest/gtest.h>

namespace switchyard {
namespace {

TEST(JsonReaderTest, TypesRangesAndPathsAreChecked) {
  auto doc = ParseJson(R"({"n": 4294967304, "u": 18446744073709551615, "f": 1.5, "s": "x", "a": [1, "2"], "z": null})", "f.json");
  ASSERT_TRUE(doc.ok()) << doc.status();
  const JsonReader rd("f.json");
  EXPECT_NE(rd.IntField(*doc, "n", "$", 0, 1 << 20).status().message().find("f.json: $.n: 4294967304 is out of range"),
            std::string::npos);
  EXPECT_FALSE(rd.IntField(*doc, "u", "$").ok());
  EXPECT_NE(rd.IntField(*doc, "f", "$").status().message().find("$.f: expected an integer, got number 1.5"), std::string::npos);
  EXPECT_NE(rd.IntField(*doc, "s", "$").status().message().find("expected an integer, got string \"x\""), std::string::npos);
  EXPECT_NE(rd.Int((*doc)["a"][1], JsonPath("$.a", 1)).status().message().find("$.a[1]: expected an integer"), std::string::npos);
  EXPECT_EQ(*rd.IntFieldOr(*doc, "z", "$", 7), 7);  // null is absent
  EXPECT_NE(rd.IntField(*doc, "missing", "$").status().message().find("$.missing: missing"), std::string::npos);
  EXPECT_NE(rd.Field(Json::array(), "x", "$").status().message().find("$: expected an object, got array"), std::string::npos);
  EXPECT_FALSE(rd.NumberField(*doc, "f", "$", 2, 3).ok());
}

TEST(JsonReaderTest, RepeatedKeysAndBadDocumentsAreRefused) {
  auto dup = ParseJson(R"({"a": {"k": 1, "k": 2}})", "d.json");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("d.json: key \"k\" appears twice in one object"), std::string::npos) << dup.status();
  EXPECT_TRUE(ParseJson(R"([{"k": 1}, {"k": 2}])", "ok.json").ok());  // the same key in two objects is fine
  EXPECT_NE(ParseJson("{", "b.json").status().message().find("b.json: not valid JSON"), std::string::npos);
  EXPECT_FALSE(ParseJson(std::string(200000, '['), "deep.json").ok());
}

TEST(JsonReaderTest, EchoedValuesAreCappedAndEscaped) {
  EXPECT_EQ(EchoValue("short"), "short");
  EXPECT_EQ(EchoValue(std::string(100, 'x')), std::string(64, 'x') + "... (100 bytes)");
  EXPECT_EQ(EchoValue(std::string("a\0b\x1b", 4)), "a\\x00b\\x1b");
}

}  // namespace
}  // namespace switchyard
