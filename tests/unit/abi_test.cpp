// The C++ view of every map key and value (loader/abi.h) against the BTF
// of the built classifier object: sizes, member names and offsets, and the
// key and value sizes of each map. Needs no privileges.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstddef>
#include <string>
#include <vector>

#include "loader/abi.h"
#include "tests/lib/harness.h"

namespace xvmq::test {
namespace {

struct Member {
  const char* name;
  size_t offset;
  size_t size;
};

struct Layout {
  const char* type;
  size_t size;
  std::vector<Member> members;
};

#define XVMQ_MEMBER(T, m) \
  Member { #m, offsetof(T, m), sizeof(T::m) }

std::vector<Layout> layouts() {
  return {
      {"xvmq_filter_slot",
       sizeof(xvmq_filter_slot),
       {XVMQ_MEMBER(xvmq_filter_slot, key), XVMQ_MEMBER(xvmq_filter_slot, value)}},
      {"xvmq_counter", sizeof(xvmq_counter), {XVMQ_MEMBER(xvmq_counter, frames), XVMQ_MEMBER(xvmq_counter, bytes)}},
  };
}

class Abi : public ::testing::Test {
 protected:
  void SetUp() override {
    btf_ = btf__parse_elf(XVMQ_UPLINK_OBJECT, nullptr);
    ASSERT_NE(btf_, nullptr) << "BTF of " << XVMQ_UPLINK_OBJECT << ": " << strerror(errno);
  }
  void TearDown() override { btf__free(btf_); }
  btf* btf_ = nullptr;
};

TEST_F(Abi, StructsMatchBtf) {
  for (const auto& l : layouts()) {
    SCOPED_TRACE(l.type);
    int id = btf__find_by_name_kind(btf_, l.type, BTF_KIND_STRUCT);
    ASSERT_GT(id, 0) << "struct " << l.type << " is not in the object's BTF";
    const btf_type* t = btf__type_by_id(btf_, static_cast<uint32_t>(id));
    EXPECT_EQ(t->size, l.size) << "sizeof";
    ASSERT_EQ(btf_vlen(t), l.members.size()) << "member count";
    const btf_member* m = btf_members(t);
    for (size_t i = 0; i < l.members.size(); i++) {
      EXPECT_STREQ(btf__name_by_offset(btf_, m[i].name_off), l.members[i].name);
      EXPECT_EQ(btf_member_bitfield_size(t, static_cast<uint32_t>(i)), 0u) << "no bitfields";
      EXPECT_EQ(btf_member_bit_offset(t, static_cast<uint32_t>(i)) / 8, l.members[i].offset)
          << l.members[i].name << " offset";
      EXPECT_EQ(static_cast<size_t>(btf__resolve_size(btf_, m[i].type)), l.members[i].size)
          << l.members[i].name << " size";
    }
  }
}

TEST(AbiMaps, KeyAndValueSizes) {
  bpf_object* obj = bpf_object__open_file(XVMQ_UPLINK_OBJECT, nullptr);
  ASSERT_NE(obj, nullptr) << strerror(errno);
  struct Want {
    const char* name;
    bpf_map_type type;
    size_t key, value;
    uint32_t entries;
    uint32_t flags = 0;
  };
  const Want wants[] = {
      {XVMQ_MAP_FILTERS, BPF_MAP_TYPE_ARRAY, sizeof(uint32_t), sizeof(xvmq_filter_slot), XVMQ_FILTER_SLOTS,
       BPF_F_MMAPABLE},
      {XVMQ_MAP_XSKS, BPF_MAP_TYPE_XSKMAP, sizeof(uint32_t), sizeof(uint32_t), XVMQ_XSK_SLOTS},
      {XVMQ_MAP_VMQ_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint32_t), sizeof(xvmq_counter), XVMQ_MAX_VMQS},
      {XVMQ_MAP_REASONS, BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint32_t), sizeof(xvmq_counter), XVMQ_REASON_COUNT},
  };
  for (const auto& w : wants) {
    SCOPED_TRACE(w.name);
    bpf_map* m = bpf_object__find_map_by_name(obj, w.name);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(bpf_map__type(m), w.type);
    EXPECT_EQ(bpf_map__key_size(m), w.key);
    EXPECT_EQ(bpf_map__value_size(m), w.value);
    EXPECT_EQ(bpf_map__max_entries(m), w.entries);
    EXPECT_EQ(bpf_map__map_flags(m), w.flags);
  }
  bpf_object__close(obj);
}

TEST(AbiFilterWord, EncodesMacAndVlan) {
  const uint8_t mac[6] = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  EXPECT_EQ(xvmq_filter_word(mac, 10), 0x000a554433221102ull);
  EXPECT_EQ(xvmq_filter_word(mac, XVMQ_VLAN_ANY) >> 48, 0xffffu);
  EXPECT_NE(xvmq_filter_word(mac, 0), XVMQ_FILTER_EMPTY);
  EXPECT_LT(xvmq_filter_hash(0x1234), XVMQ_FILTER_SLOTS);
  EXPECT_EQ(XVMQ_FILTER_VMQ(xvmq_filter_value_word(7, 1)), 7u);
  EXPECT_EQ(XVMQ_FILTER_FLAGS(xvmq_filter_value_word(7, 1)), 1u);
}

TEST(AbiReasons, EveryReasonHasAName) {
  for (uint32_t r = 0; r < XVMQ_REASON_COUNT; r++) EXPECT_NE(reason_name(r), "unknown") << r;
  EXPECT_EQ(reason_name(XVMQ_REASON_COUNT), "unknown");
}

TEST(AbiMac, ParseAndFormat) {
  auto m = parse_mac("02:0A:bc:00:ff:10");
  ASSERT_TRUE(m);
  EXPECT_EQ(format_mac(*m), "02:0a:bc:00:ff:10");
  EXPECT_TRUE(parse_mac("02-0a-bc-00-ff-10"));
  for (const char* bad : {"", "02:0a:bc:00:ff", "02:0a:bc:00:ff:1g", "02:0a:bc:00:ff:100", "020abc00ff10xxxxx"})
    EXPECT_FALSE(parse_mac(bad)) << bad;
  EXPECT_TRUE(is_multicast(*parse_mac("01:00:5e:00:00:01")));
  EXPECT_FALSE(is_multicast(*m));
}

}  // namespace
}  // namespace xvmq::test
