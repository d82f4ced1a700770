// A client built from the current schema (proto/kv.proto) with the C++ protobuf
// runtime, for the messages added after the seed's: delete, exists, paged
// listing with a prefix, values and a cursor, and clear, all pipelined on one
// connection with the seed's set and get.
//
// Usage: api_client PORT        Exit 0 and print "api client: all checks passed" on success.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include "kv.pb.h"

using google::protobuf::io::FileInputStream;
using google::protobuf::io::FileOutputStream;
using google::protobuf::util::ParseDelimitedFromZeroCopyStream;
using google::protobuf::util::SerializeDelimitedToZeroCopyStream;
using kv::proto::req_envelope;

static void fail(const std::string& why) {
  std::fprintf(stderr, "api client: FAIL: %s\n", why.c_str());
  std::exit(1);
}

static FileOutputStream* out;
static FileInputStream* in;

static void send(const req_envelope& e) {
  if (!SerializeDelimitedToZeroCopyStream(e, out)) fail("write");
}

static req_envelope receive() {
  req_envelope r;
  bool clean_eof = false;
  if (!ParseDelimitedFromZeroCopyStream(&r, in, &clean_eof)) fail("read");
  return r;
}

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: api_client PORT");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("connect");
  FileOutputStream o(fd);
  FileInputStream i(fd);
  out = &o;
  in = &i;

  const std::string binary("api\xff\x00", 5);
  // Pipelined: three sets, exists, delete twice, exists, get; nothing read until all are written.
  for (const std::string& k : {std::string("api/a"), std::string("api/b"), binary}) {
    req_envelope e;
    e.set_type(req_envelope::set_request_t);
    e.mutable_set_req()->mutable_req()->set_key(k);
    e.mutable_set_req()->mutable_req()->set_value("v:" + k);
    send(e);
  }
  req_envelope ex;
  ex.set_type(req_envelope::exists_request_t);
  ex.mutable_exists_req()->set_key("api/a");
  send(ex);
  req_envelope del;
  del.set_type(req_envelope::delete_request_t);
  del.mutable_delete_req()->set_key("api/a");
  send(del);
  send(del);
  send(ex);
  req_envelope get;
  get.set_type(req_envelope::get_request_t);
  get.mutable_get_req()->set_key("api/a");
  send(get);
  o.Flush();
  for (int n = 0; n < 3; n++) {
    req_envelope r = receive();
    if (r.type() != req_envelope::set_response_t || r.set_resp().error() != kv::proto::set_response::ok) fail("set");
  }
  if (receive().exists_resp().error() != kv::proto::exists_response::ok) fail("exists before delete");
  if (receive().delete_resp().error() != kv::proto::delete_response::ok) fail("first delete");
  if (receive().delete_resp().error() != kv::proto::delete_response::not_found) fail("second delete");
  if (receive().exists_resp().error() != kv::proto::exists_response::not_found) fail("exists after delete");
  if (receive().get_resp().error() != kv::proto::get_response::not_found) fail("get after delete");

  // Paged listing with values, one entry a page, under the prefix "api".
  std::set<std::string> seen;
  std::string cursor;
  bool first = true;
  while (first || !cursor.empty()) {
    req_envelope l;
    l.set_type(req_envelope::list_request_t);
    l.mutable_list_req()->set_prefix("api");
    l.mutable_list_req()->set_limit(1);
    l.mutable_list_req()->set_values(true);
    if (!first) l.mutable_list_req()->set_cursor(cursor);
    first = false;
    send(l);
    o.Flush();
    req_envelope r = receive();
    if (r.type() != req_envelope::list_response_t || r.list_resp().error() != kv::proto::list_response::ok) {
      fail("list");
    }
    for (const auto& d : r.list_resp().entries()) {
      if (d.value() != "v:" + d.key()) fail("listed value");
      if (!seen.insert(d.key()).second) fail("a key listed twice");
    }
    cursor = r.list_resp().has_cursor() ? r.list_resp().cursor() : "";
    if (seen.size() > 2) fail("more keys listed than exist");
  }
  if (seen != std::set<std::string>{"api/b", binary}) fail("listing missed a key");

  req_envelope bad;
  bad.set_type(req_envelope::list_request_t);
  bad.mutable_list_req()->set_cursor("not a cursor");
  send(bad);
  req_envelope clear;
  clear.set_type(req_envelope::clear_request_t);
  clear.mutable_clear_req();
  send(clear);
  send(get);
  o.Flush();
  if (receive().list_resp().error() != kv::proto::list_response::bad_cursor) fail("bad cursor");
  req_envelope c = receive();
  if (c.clear_resp().error() != kv::proto::clear_response::ok || c.clear_resp().removed() != 2) fail("clear");
  if (receive().get_resp().error() != kv::proto::get_response::not_found) fail("get after clear");
  std::printf("api client: all checks passed\n");
  close(fd);
  return 0;
}
