// admin/browser_guard.hpp: which admin requests a web browser could have been made to send, and which pass.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "admin/browser_guard.hpp"

namespace pgward::admin {
namespace {

const std::vector<std::string> kOwn = {"10.1.2.3", "127.0.0.1"};

RequestFacts post(std::string_view host) {
  RequestFacts r;
  r.safe_method = false;
  r.host_headers = 1;
  r.host = host;
  return r;
}

RequestFacts get(std::string_view path_kind_probe, std::string_view host) {
  RequestFacts r = post(host);
  r.safe_method = true;
  r.probe = path_kind_probe == "probe";
  return r;
}

TEST(BrowserGuard, HostsOfThisAdminPort) {
  for (const char* ok :
       {"localhost", "LocalHost:9930", "127.0.0.1", "127.0.0.1:9930", "127.4.5.6:1", "[::1]", "[::1]:9930",
        "[0:0:0:0:0:0:0:1]:80", "10.1.2.3:9930", "[::ffff:10.1.2.3]:9930", " 127.0.0.1:9930 "})
    EXPECT_TRUE(host_allowed(ok, kOwn)) << ok;
  for (const char* bad : {"", "evil.example", "evil.example:9930", "localhost.evil.example", "10.1.2.4:9930",
                          "::1", "[::1", "[::1]x", "127.0.0.1:99999999", "127.0.0.1:x", "localhost:9930:1",
                          "[::2]:9930", "0.0.0.0:9930", "127.0.0.1@evil.example"})
    EXPECT_FALSE(host_allowed(bad, kOwn)) << bad;
  // "*" (every interface) names no host; a name in [admin] listen is accepted as written.
  EXPECT_FALSE(host_allowed("10.9.9.9", {"*"}));
  EXPECT_TRUE(host_allowed("[::1]:1", {"*"}));
}

TEST(BrowserGuard, SameOrigin) {
  EXPECT_TRUE(same_origin("http://127.0.0.1:9930", "127.0.0.1:9930"));
  EXPECT_TRUE(same_origin("http://LOCALHOST:9930", "localhost:9930"));
  EXPECT_TRUE(same_origin("https://[::1]:9930", "[::1]:9930"));
  EXPECT_FALSE(same_origin("http://evil.example", "127.0.0.1:9930"));
  EXPECT_FALSE(same_origin("http://localhost:8080", "localhost:9930"));
  EXPECT_FALSE(same_origin("http://127.0.0.1:9930", "localhost:9930"));
  EXPECT_FALSE(same_origin("null", "127.0.0.1:9930"));
  EXPECT_FALSE(same_origin("file://", "127.0.0.1:9930"));
  EXPECT_FALSE(same_origin("", "127.0.0.1:9930"));
}

TEST(BrowserGuard, ContentTypes) {
  EXPECT_TRUE(json_content_type("application/json"));
  EXPECT_TRUE(json_content_type("Application/JSON; charset=utf-8"));
  EXPECT_TRUE(json_content_type(" application/json "));
  for (const char* bad : {"application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                          "text/plain", "text/plain;charset=UTF-8", "text/plain; application/json",
                          "application/json, text/plain", "", "application/octet-stream"})
    EXPECT_FALSE(json_content_type(bad)) << bad;
}

TEST(BrowserGuard, ForgedFormPostIsRefused) {
  RequestFacts r = post("127.0.0.1:9930");
  r.origin = "http://evil.example";
  r.content_type = "application/x-www-form-urlencoded";
  auto refused = check_browser_request(r, kOwn);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->reason, Refusal::origin);

  // Without Origin (an old browser), the form's Content-Type still gives it away.
  r.origin.reset();
  refused = check_browser_request(r, kOwn);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->reason, Refusal::content_type);

  r.content_type.reset();
  r.sec_fetch_site = "cross-site";
  ASSERT_TRUE(check_browser_request(r, kOwn).has_value());
  r.sec_fetch_site = "same-site";  // another port of localhost is the same site, not the same origin
  ASSERT_TRUE(check_browser_request(r, kOwn).has_value());
  r.sec_fetch_site = "same-origin";
  EXPECT_FALSE(check_browser_request(r, kOwn).has_value());
}

TEST(BrowserGuard, RebindingIsRefusedExceptOnProbes) {
  // DNS rebinding: the browser believes it talks to evil.example.
  auto refused = check_browser_request(post("evil.example:9930"), kOwn);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->reason, Refusal::host);
  EXPECT_TRUE(check_browser_request(get("view", "evil.example:9930"), kOwn).has_value());
  // Prometheus and kubelet send whatever Host they were given (a pod IP, a Service name).
  EXPECT_FALSE(check_browser_request(get("probe", "pgward.prod.svc:9930"), kOwn).has_value());
  EXPECT_FALSE(check_browser_request(get("probe", ""), kOwn).has_value());
  // ... but a POST to a probe path is checked like any other.
  RequestFacts probe_post = post("evil.example");
  probe_post.probe = true;
  EXPECT_TRUE(check_browser_request(probe_post, kOwn).has_value());
}

TEST(BrowserGuard, MissingOrRepeatedHostIsRefused) {
  RequestFacts r = post("");
  r.host_headers = 0;
  EXPECT_EQ(check_browser_request(r, kOwn)->reason, Refusal::host);
  r = post("127.0.0.1");
  r.host_headers = 2;
  EXPECT_EQ(check_browser_request(r, kOwn)->reason, Refusal::host);
}

TEST(BrowserGuard, TokenExemptsFromHostOnly) {
  RequestFacts r = post("pgward.internal:9930");
  r.token_ok = true;
  EXPECT_FALSE(check_browser_request(r, kOwn).has_value());
  r.content_type = "text/plain";
  EXPECT_EQ(check_browser_request(r, kOwn)->reason, Refusal::content_type);
  r.content_type.reset();
  r.origin = "http://evil.example";
  EXPECT_EQ(check_browser_request(r, kOwn)->reason, Refusal::origin);
}

TEST(BrowserGuard, CommandLineClientsPass) {
  // What curl -X POST http://127.0.0.1:9930/api/pause sends.
  EXPECT_FALSE(check_browser_request(post("127.0.0.1:9930"), kOwn).has_value());
  RequestFacts json = post("localhost:9930");
  json.content_type = "application/json";
  EXPECT_FALSE(check_browser_request(json, kOwn).has_value());
  EXPECT_FALSE(check_browser_request(get("view", "[::1]:9930"), kOwn).has_value());
}

TEST(BrowserGuard, ReasonLabelsAreFixed) {
  EXPECT_EQ(to_string(Refusal::host), "host");
  EXPECT_EQ(to_string(Refusal::origin), "origin");
  EXPECT_EQ(to_string(Refusal::content_type), "content_type");
}

}  // namespace
}  // namespace pgward::admin
