#!/usr/bin/env python3
# Writes the seed corpus of fuzz_vhost (tests/fuzz/corpus/fuzz_vhost/), in
# the operations tests/fuzz/fuzz_vhost.cpp reads: run it after changing them.
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_vhost")

MRG, EVENT_IDX, PROTO, V1 = 1 << 15, 1 << 29, 1 << 30, 1 << 32


def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)


def msg(req, payload=b"", fds=0):
    return bytes([0, req, fds, len(payload)]) + payload


def ring(r, num_log2, desc, avail, used, base=0):
    return bytes([2, r, num_log2]) + u16(desc // 16) + u16(avail // 2) + u16(used // 4) + u16(base)


def desc(r, i, addr, length, flags, nxt=0, raw=False):
    kind = flags | (0x80 if raw else 0)
    a = u16(0) + u64(addr) if raw else u16(addr // 16)
    return bytes([4, r]) + u16(i) + bytes([kind]) + a + u16(length) + u16(nxt)


def avail(r, head): return bytes([5, r]) + u16(head) + bytes([1])
def deliver(p, n): return bytes([6, p]) + u16(n)
def next_tx(p, cap): return bytes([7, p]) + u16(cap)
def flush(p): return bytes([8, p])
def write(at, data): return bytes([3]) + u32(at) + bytes([len(data)]) + data


def handshake(features=MRG | PROTO | V1):
    return (msg(1) + msg(2, u64(features)) + msg(15) + msg(16, u64(1)) + msg(17) +
            bytes([1, 0]) +  # the memory table: one region, exact, with the memfd
            ring(0, 3, 0x1000, 0x2000, 0x3000) + ring(1, 3, 0x4000, 0x5000, 0x6000))


seeds = {
    # 1 pair, 64 KiB at GPA 0: a frame received, one sent (header and data
    # in two chained buffers), the rings stopped.
    "handshake_rx_tx": bytes([0]) + handshake() +
        desc(0, 0, 0x8000, 2048, 2) + avail(0, 0) + deliver(0, 100) + flush(0) +
        write(0x9100, bytes(range(100))) +
        desc(1, 0, 0x9000, 12, 1, 1) + desc(1, 1, 0x9100, 100, 0) + avail(1, 0) +
        next_tx(0, 2048) + flush(0) + msg(11, u32(0) + u32(0)) + msg(11, u32(1) + u32(0)),
    # VIRTIO_RING_F_EVENT_IDX: the guest's used_event (after ring 0's 8
    # avail entries at 0x2000) asks for a call after the first buffer; two
    # frames received, one sent, each flushed (avail_event written).
    "event_idx": bytes([0]) + handshake(MRG | EVENT_IDX | PROTO | V1) + write(0x2014, u16(1)) +
        desc(0, 0, 0x8000, 2048, 2) + avail(0, 0) + desc(0, 1, 0x8800, 2048, 2) + avail(0, 1) +
        deliver(0, 100) + flush(0) + deliver(0, 100) + flush(0) +
        write(0x9100, bytes(range(100))) +
        desc(1, 0, 0x9000, 12, 1, 1) + desc(1, 1, 0x9100, 100, 0) + avail(1, 0) + next_tx(0, 2048) + flush(0),
    # A receive buffer outside the memory, one not writable; a transmit
    # buffer the device would write; a head past the ring.
    "bad_descriptor": bytes([0]) + handshake() +
        desc(0, 0, 0xdead0000000, 2048, 2, raw=True) + avail(0, 0) + deliver(0, 64) +
        desc(0, 1, 0x8000, 2048, 0) + avail(0, 1) + deliver(0, 64) +
        desc(1, 0, 0x9000, 64, 2) + avail(1, 0) + avail(1, 200) + next_tx(0, 2048),
    # Chains that loop: on transmit 0 -> 1 -> 0; on receive without
    # mergeable buffers, 0 -> 1 -> 0 with buffers too small for the frame.
    "looping_chain": bytes([0]) + handshake(PROTO | V1) +
        desc(1, 0, 0x9000, 64, 1, 1) + desc(1, 1, 0x9100, 64, 1, 0) + avail(1, 0) + next_tx(0, 4096) +
        desc(0, 0, 0x8000, 16, 3, 1) + desc(0, 1, 0x8100, 16, 3, 0) + avail(0, 0) + deliver(0, 1000) + flush(0),
    # 2 pairs, 128 KiB at GPA 1 MiB, a table claiming twice the memfd's
    # size, then one with no fd; rings past the file's end.
    "mem_table_wrong_size": bytes([0x0b]) + msg(1) + msg(2, u64(MRG | V1)) + bytes([1, 1]) +
        ring(2, 4, 0x1f000, 0x1f800, 0x1fc00) + desc(2, 0, 0x30000, 1024, 2) + avail(2, 0) +
        deliver(1, 60) + bytes([1, 4]) + deliver(1, 60) + bytes([10]) + msg(1),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
