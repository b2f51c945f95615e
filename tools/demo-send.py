#!/usr/bin/python3
"""Send the demo's frames out of one netdev: a fixed, bounded set.

Run by tools/demo-classifier.sh inside its external namespace. Frames are built with
scapy and sent with AF_PACKET, bypassing the qdisc, alternately from the
first two CPUs: on a veth the frame then arrives on the peer's receive queue
(CPU % queues), so both receive queues get some.
"""
import logging
import os
import socket
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import Dot1Q, Ether, Raw  # noqa: E402  (Debian's python3-scapy)

SOL_PACKET = getattr(socket, "SOL_PACKET", 263)  # Python 3.11's socket lacks it
PACKET_QDISC_BYPASS = 20
SRC = "02:00:00:00:00:fe"
ETHERTYPE = 0x88B5  # IEEE local experimental: no host stack cares

# (count, label, destination MAC, VLAN or None)
PLAN = [
    (5, "to VM1, untagged", "02:00:00:00:00:01", None),
    (5, "to VM2 on VLAN 10", "02:00:00:00:00:02", 10),
    (5, "to VM2 on VLAN 20", "02:00:00:00:00:02", 20),
    (3, "broadcast", "ff:ff:ff:ff:ff:ff", None),
    (2, "to an unknown MAC", "02:00:00:00:00:99", None),
]


def frame(dst, vlan, seq):
    eth = Ether(dst=dst, src=SRC)
    if vlan is None:
        eth.type = ETHERTYPE
    else:
        eth = eth / Dot1Q(vlan=vlan, type=ETHERTYPE)
    # 46 bytes of payload: 60-byte frames, 64 with a tag.
    return bytes(eth / Raw(bytes([seq]) * 46))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: demo-send.py IFNAME")
    ifname = sys.argv[1]
    cpus = sorted(os.sched_getaffinity(0))[:2]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    # Say what goes out first: the receiving side prints as frames arrive.
    for count, label, dst, vlan in PLAN:
        tag = "untagged" if vlan is None else f"VLAN {vlan}"
        size = len(frame(dst, vlan, 0))
        print(f"  {count} {label:<18} dst {dst}  {tag:<8}  {size} bytes")
    print(f"  from CPU{'s' if len(cpus) > 1 else ''} {' and '.join(map(str, cpus))} in turn", flush=True)
    seq = 0
    for count, label, dst, vlan in PLAN:
        for _ in range(count):
            os.sched_setaffinity(0, {cpus[seq % len(cpus)]})
            s.send(frame(dst, vlan, seq))
            seq += 1

if __name__ == "__main__":
    main()
