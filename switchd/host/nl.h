// The exchange under every rtnetlink and generic netlink request xvmq
// makes (libmnl): a message built in place, sent on a socket of the calling
// thread's network namespace, its answer read to the ack or the end of the
// dump, the kernel's extended ack in the error. switchd's host room
// (netlink.h) and xvmq-cni's own requests (tools/cni/rtnl.h) are built on it.
#pragma once

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"

namespace xvmq::switchd::netlink {

inline constexpr size_t kBufSize = 32768;
using OnMessage = std::function<void(const nlmsghdr*)>;

// One request and its answer (an ack, or every message of a dump, each
// given to `on_message`). The error names `what` and carries the kernel's
// own words when it gave some.
Status talk(nlmsghdr* nlh, const std::string& what, OnMessage on_message = nullptr, int protocol = NETLINK_ROUTE);

// The index of netdev `dev` in the calling thread's namespace.
Result<int> index_of(const std::string& dev);

// A request being built: the header, then its family's header, then attributes.
struct Msg {
  std::vector<char> buf = std::vector<char>(kBufSize);
  nlmsghdr* nlh;
  Msg(uint16_t type, uint16_t flags) {
    nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  }
  template <class T>
  T* header() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh, sizeof(T)));
  }
};

// libmnl's mnl_attr_for_each, typed for C++.
template <class F>
void for_each_attr(const nlmsghdr* nlh, size_t offset, F&& f) {
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, offset));
       mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a))
    f(a);
}

// libmnl's mnl_attr_for_each_nested, typed for C++.
template <class F>
void for_each_nested(const nlattr* nest, F&& f) {
  const char* end = static_cast<const char*>(mnl_attr_get_payload(nest)) + mnl_attr_get_payload_len(nest);
  for (auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
       mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a))
    f(a);
}

}  // namespace xvmq::switchd::netlink
