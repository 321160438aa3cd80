#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "signaling/signaling.h"
#include "tests/support/test_server.h"

namespace parley::signaling {
namespace {

class StaticFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/web";
    std::filesystem::create_directories(root_ + "/js");
    std::filesystem::create_directories(root_ + "/empty");
    std::ofstream(root_ + "/index.html") << "<html>home</html>";
    std::ofstream(root_ + "/js/app.js") << "console.log(1)";
    std::ofstream(root_ + "/.env") << "SECRET=1";
    std::ofstream(dir_.path() + "/secret.txt") << "outside";
    std::filesystem::create_symlink(dir_.path() + "/secret.txt", root_ + "/link.txt");
  }
  testing::TempDir dir_;
  std::string root_;
};

TEST(Mime, KnowsTheTypesThePageUses) {
  EXPECT_EQ(MimeTypeFor("a.html"), "text/html; charset=utf-8");
  EXPECT_EQ(MimeTypeFor("x/app.JS"), "text/javascript; charset=utf-8");
  EXPECT_EQ(MimeTypeFor("s.css"), "text/css; charset=utf-8");
  EXPECT_EQ(MimeTypeFor("m.wasm"), "application/wasm");
  EXPECT_EQ(MimeTypeFor("r.json"), "application/json");
  EXPECT_EQ(MimeTypeFor("p.png"), "image/png");
  EXPECT_EQ(MimeTypeFor("noext"), "application/octet-stream");
  EXPECT_EQ(MimeTypeFor("dir.d/noext"), "application/octet-stream");
}

TEST_F(StaticFilesTest, ServesFilesAndIndexForDirectories) {
  StaticFiles files(root_);
  auto r = files.Serve("/js/app.js");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "console.log(1)");
  EXPECT_EQ(r.content_type, "text/javascript; charset=utf-8");
  r = files.Serve("/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "<html>home</html>");
}

TEST_F(StaticFilesTest, NeverListsADirectory) {
  EXPECT_EQ(StaticFiles(root_).Serve("/empty/").status, 404);
  EXPECT_EQ(StaticFiles(root_).Serve("/js").status, 404);
}

TEST_F(StaticFilesTest, RefusesTraversalDotfilesAndSymlinksOutOfTheRoot) {
  StaticFiles files(root_);
  for (const char* p :
       {"/../secret.txt", "/js/../../secret.txt", "/..", "/.env", "/link.txt",
        "/js/..%2f..%2fsecret.txt", "/js\\..\\..\\secret.txt", "relative.txt", ""}) {
    EXPECT_FALSE(files.Resolve(p).has_value()) << p;
    EXPECT_EQ(files.Serve(p).status, 404) << p;
  }
  std::string with_nul = "/index.html";
  with_nul.push_back('\0');
  EXPECT_FALSE(files.Resolve(with_nul).has_value());
}

}  // namespace
}  // namespace parley::signaling
