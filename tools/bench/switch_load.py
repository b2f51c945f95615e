"""The switch benchmark's cases at a fixed offered rate: CPU time per delivered
frame, and loss with a CPU-bound process on every CPU.

Both send with xvmq-pace (tools/bench/pace.cpp), one IPv4/UDP frame at a
steady rate, pinned to the generator's CPU. trafgen cannot pace here: its
--gap sleeps after each frame (about 100 us a sleep on this VM, so 10 to
25 kpps whatever the gap, depending on the machine's load) and its --rate
sends each second's quota as one burst at full speed (about 350 kpps).
"""

import os
import signal
import struct
import time

from benchrun import Failure
from cputime import map_ids, window
from switch_report import counter_delta

# The generator of the hog cases, above every task that handles frames (switchd's
# workers and delivery threads run at SCHED_FIFO 10 by default), as a NIC's
# receive interrupt and softirq are: the offered rate reaches the uplink.
FIFO_PRIORITY = 50


def udp_frame(src_mac, dst_mac, src_ip, dst_ip, size):
    """The frame trafgen_conf describes: IPv4/UDP from port 9 to port 9, a valid
    IPv4 checksum (br_netfilter drops bad ones), 0x55 padding, no FCS."""
    mac = lambda m: bytes(int(b, 16) for b in m.split(":"))
    ip = lambda a: bytes(int(x) for x in a.split("."))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size - 14, 0, 0, 64, 17, 0, ip(src_ip), ip(dst_ip))
    s = sum(struct.unpack("!10H", hdr))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~s & 0xffff) + hdr[12:]
    udp = struct.pack("!HHHH", 9, 9, size - 34, 0)
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + hdr + udp + b"\x55" * (size - 42)


class Load:
    """The paced cases of one Bench (b): its namespaces, procs and counters."""

    def __init__(self, bench):
        self.b = bench
        self.pace_path = os.path.join(bench.build, "tools/bench/xvmq-pace")

    def start_pacer(self, case, rate, size, fifo=False):
        gen_ns, gen_dev, src, dst, src_ip, _, _ = case["gen"]
        frame = udp_frame(src, dst, src_ip, self.b.dark_ip, size).hex()
        out = os.path.join(self.b.tmp, "pace-%s.out" % case["id"])
        argv = [self.pace_path, "--dev", gen_dev, "--frame", frame, "--rate", str(int(rate)),
                "--cpu", str(self.b.gen_cpu)]
        # nsenter and chrt exec: the process started is the generator itself.
        if fifo:
            argv = ["chrt", "-f", str(FIFO_PRIORITY)] + argv
        return self.b.start(self.b.cmd_in(gen_ns, argv), out=out), out

    def check_running(self, p, out):
        if p.poll() is not None:
            raise Failure("xvmq-pace exited:\n" + open(out).read())

    def own_maps(self):
        return map_ids(self.b.switchd.pid) if self.b.switchd else set()

    def background(self, seconds):
        """With no traffic: busy seconds per second of every CPU, and of what is not other programs'."""
        w = window(seconds, self.own_maps())
        return {"busy_per_s": w["busy_s"] / w["seconds"], "own_busy_per_s": w["own_busy_s"] / w["seconds"]}

    def cpu_case(self, case, rate, size, seconds):
        """CPU time at `rate`, in windows of 1 s: other programs' work comes and goes, and
        a window it left alone is worth more than the mean of all (see switch_report.cpu_rows)."""
        gen_ns, gen_dev, _, _, _, cnt_ns, cnt_dev = case["gen"]
        own_maps = self.own_maps()
        p, out = self.start_pacer(case, rate, size)
        windows = []
        try:
            time.sleep(self.b.a.warmup)
            for _ in range(max(1, int(round(seconds)))):
                self.check_running(p, out)
                rx0, tx0 = self.b.netdev(cnt_ns, cnt_dev)[0], self.b.netdev(gen_ns, gen_dev)[1]
                w = window(1.0, own_maps, p.pid)
                rx1, tx1 = self.b.netdev(cnt_ns, cnt_dev)[0], self.b.netdev(gen_ns, gen_dev)[1]
                windows.append(dict(w, sent=tx1 - tx0, delivered=rx1 - rx0))
        finally:
            self.b.stop(p)
        return {"offered_pps": rate, "windows": windows, "sent": sum(w["sent"] for w in windows),
                "delivered": sum(w["delivered"] for w in windows), "seconds": sum(w["seconds"] for w in windows)}

    def start_hogs(self):
        """One busy loop pinned on every CPU, at the normal scheduler (SCHED_OTHER, nice 0)."""
        hogs = []
        for cpu in range(os.cpu_count() or 1):
            def pin(cpu=cpu):
                os.sched_setaffinity(0, {cpu})
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, 0, 0)
            hogs.append(self.b.start(["/bin/sh", "-c", "while :; do :; done"], preexec=pin))
        return hogs

    def hog_case(self, case, rate, size, seconds):
        """Frames sent and received at `rate` while a hog runs on every CPU.

        The counters are read with nothing in flight: before the generator
        starts and after it stopped and the path drained, so every frame
        sent is either received or lost."""
        gen_ns, gen_dev, _, _, _, cnt_ns, cnt_dev = case["gen"]
        stats0 = self.b.switch_stats() if case["world"] == "xv" else None
        hogs = self.start_hogs()
        try:
            time.sleep(0.2)
            rx0, (_, tx0, txd0) = self.b.netdev(cnt_ns, cnt_dev)[0], self.b.netdev(gen_ns, gen_dev)
            p, out = self.start_pacer(case, rate, size, fifo=True)
            try:
                time.sleep(self.b.a.warmup + seconds)
                self.check_running(p, out)
            finally:
                self.b.stop(p)
            time.sleep(0.3)  # what is queued drains
            rx1, (_, tx1, txd1) = self.b.netdev(cnt_ns, cnt_dev)[0], self.b.netdev(gen_ns, gen_dev)
        finally:
            for h in hogs:
                self.b.stop(h, signal.SIGKILL)
        sent, got = tx1 - tx0, rx1 - rx0
        r = {"offered_pps": rate, "seconds": self.b.a.warmup + seconds, "sent": sent, "received": got,
             "lost": sent - got, "lost_pct": 100.0 * (sent - got) / sent if sent else None,
             "sent_pps": sent / (self.b.a.warmup + seconds), "pushed_back": txd1 - txd0}
        if stats0 is not None:
            r["switch_counters"] = counter_delta(stats0, self.b.switch_stats())
        return r
