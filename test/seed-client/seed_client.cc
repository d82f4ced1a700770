// A client built from the seed's schema (test/seed-client/seed.proto) with the C++ protobuf
// runtime, as the brief's own test client would be. It checks pipelining,
// byte-exact non-UTF-8 keys and values, not_found, and that a request missing
// required fields is answered with internal on a connection that stays usable.
//
// Usage: seed_client PORT        Exit 0 and print "seed client: all checks passed" on success.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include "kv.pb.h"

using google::protobuf::io::FileInputStream;
using google::protobuf::io::FileOutputStream;
using google::protobuf::util::ParseDelimitedFromZeroCopyStream;
using google::protobuf::util::SerializeDelimitedToZeroCopyStream;
using kv::proto::req_envelope;

static void fail(const std::string& why) {
  std::fprintf(stderr, "seed client: FAIL: %s\n", why.c_str());
  std::exit(1);
}

static std::string key_of(int i) { return std::string("seed\xff\x00", 6) + std::to_string(i); }

static std::string value_of(int i) {
  // Invalid UTF-8 (lone continuation bytes, an overlong NUL) and, every tenth, over 4 KB.
  std::string v = std::string("\x80\xc0\x80\xfe", 4) + std::to_string(i);
  if (i % 10 == 0) v += std::string(6000, static_cast<char>(i));
  return v;
}

static req_envelope set_req(const std::string& k, const std::string& v) {
  req_envelope e;
  e.set_type(req_envelope::set_request_t);
  e.mutable_set_req()->mutable_req()->set_key(k);
  e.mutable_set_req()->mutable_req()->set_value(v);
  return e;
}

static req_envelope get_req(const std::string& k) {
  req_envelope e;
  e.set_type(req_envelope::get_request_t);
  e.mutable_get_req()->set_key(k);
  return e;
}

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: seed_client PORT");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("connect");

  FileOutputStream out(fd);
  FileInputStream in(fd);
  const int n = 100;

  // 1. A pipelined burst: every request written before any response is read.
  for (int i = 0; i < n; i++) {
    if (!SerializeDelimitedToZeroCopyStream(set_req(key_of(i), value_of(i)), &out)) fail("write set");
    if (!SerializeDelimitedToZeroCopyStream(get_req(key_of(i)), &out)) fail("write get");
  }
  // 2. A missing key, then a set_request_t without set_req (partial: required fields unset).
  if (!SerializeDelimitedToZeroCopyStream(get_req("seed-missing-key"), &out)) fail("write get missing");
  req_envelope broken;
  broken.set_type(req_envelope::set_request_t);
  std::string partial = broken.SerializePartialAsString();
  {
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.WriteVarint32(static_cast<uint32_t>(partial.size()));
    coded.WriteRaw(partial.data(), static_cast<int>(partial.size()));
  }
  // 3. The connection must still serve after that.
  if (!SerializeDelimitedToZeroCopyStream(get_req(key_of(7)), &out)) fail("write get after bad");
  if (!out.Flush()) fail("flush");

  for (int i = 0; i < n; i++) {
    req_envelope r;
    bool eof = false;
    if (!ParseDelimitedFromZeroCopyStream(&r, &in, &eof)) fail("read set response " + std::to_string(i));
    if (r.type() != req_envelope::set_response_t || r.set_resp().error() != kv::proto::set_response::ok) {
      fail("set " + std::to_string(i) + " not ok");
    }
    if (!ParseDelimitedFromZeroCopyStream(&r, &in, &eof)) fail("read get response " + std::to_string(i));
    if (r.type() != req_envelope::get_response_t || r.get_resp().error() != kv::proto::get_response::ok) {
      fail("get " + std::to_string(i) + " not ok");
    }
    if (r.get_resp().req().key() != key_of(i)) fail("get " + std::to_string(i) + ": key differs");
    if (r.get_resp().req().value() != value_of(i)) fail("get " + std::to_string(i) + ": value differs");
  }
  req_envelope r;
  bool eof = false;
  if (!ParseDelimitedFromZeroCopyStream(&r, &in, &eof)) fail("read not_found response");
  if (r.get_resp().error() != kv::proto::get_response::not_found) fail("missing key not answered not_found");
  if (!ParseDelimitedFromZeroCopyStream(&r, &in, &eof)) fail("read response to the broken request");
  if (r.type() != req_envelope::set_response_t || r.set_resp().error() != kv::proto::set_response::internal) {
    fail("broken request not answered set_response internal");
  }
  if (!ParseDelimitedFromZeroCopyStream(&r, &in, &eof)) fail("read get after broken request");
  if (r.get_resp().error() != kv::proto::get_response::ok || r.get_resp().req().value() != value_of(7)) {
    fail("connection unusable after the broken request");
  }
  close(fd);
  std::printf("seed client: all checks passed\n");
  return 0;
}
