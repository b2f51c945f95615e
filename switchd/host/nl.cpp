#include "switchd/host/nl.h"

#include <net/if.h>

#include <cerrno>
#include <ctime>
#include <memory>

namespace xvmq::switchd::netlink {
namespace {

struct Exchange {
  OnMessage on_message;
  int err = 0;
  std::string kernel_says;  // the extended ack's message, if any
};

int on_data(const nlmsghdr* nlh, void* data) {
  auto* x = static_cast<Exchange*>(data);
  if (x->on_message) x->on_message(nlh);
  return MNL_CB_OK;
}

int on_error(const nlmsghdr* nlh, void* data) {
  auto* x = static_cast<Exchange*>(data);
  const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  if (e->error == 0) return MNL_CB_STOP;  // the ack
  x->err = -e->error;
  if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
    size_t off = sizeof(*e);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += e->msg.nlmsg_len - sizeof(nlmsghdr);
    const char* end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
    const char* at = reinterpret_cast<const char*>(e) + MNL_ALIGN(off);
    for (auto* a = reinterpret_cast<const nlattr*>(at);
         mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a))
      if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG) x->kernel_says = mnl_attr_get_str(a);
  }
  return MNL_CB_STOP;
}

}  // namespace

Status talk(nlmsghdr* nlh, const std::string& what, OnMessage on_message, int protocol) {
  std::unique_ptr<mnl_socket, decltype(&mnl_socket_close)> nl(mnl_socket_open(protocol), mnl_socket_close);
  if (!nl) return make_error(errno, what + ": netlink socket");
  int one = 1;
  (void)mnl_socket_setsockopt(nl.get(), NETLINK_EXT_ACK, &one, sizeof(one));
  if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) return make_error(errno, what + ": bind netlink socket");
  const uint32_t portid = mnl_socket_get_portid(nl.get());
  nlh->nlmsg_seq = static_cast<uint32_t>(time(nullptr));
  nlh->nlmsg_flags |= NLM_F_ACK;
  if (mnl_socket_sendto(nl.get(), nlh, nlh->nlmsg_len) < 0) return make_error(errno, what);
  Exchange x;
  x.on_message = std::move(on_message);
  mnl_cb_t ctl[NLMSG_ERROR + 1] = {};
  ctl[NLMSG_ERROR] = on_error;
  std::vector<char> buf(kBufSize);
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(nl.get(), buf.data(), buf.size());
    if (n < 0) return make_error(errno, what);
    int ret =
        mnl_cb_run2(buf.data(), static_cast<size_t>(n), nlh->nlmsg_seq, portid, on_data, &x, ctl, NLMSG_ERROR + 1);
    if (ret < 0) return make_error(errno, what);
    if (ret == MNL_CB_STOP) break;
  }
  if (x.err) {
    Error e = make_error(x.err, what);
    if (!x.kernel_says.empty()) e.message += " (" + x.kernel_says + ")";
    return e;
  }
  return {};
}

Result<int> index_of(const std::string& dev) {
  unsigned idx = if_nametoindex(dev.c_str());
  if (!idx) return make_error(errno, "netdev " + dev);
  return static_cast<int>(idx);
}

}  // namespace xvmq::switchd::netlink
