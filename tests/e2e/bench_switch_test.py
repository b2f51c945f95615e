#!/usr/bin/python3
"""The switch benchmark end to end, once, in its smoke form (--quick, 1 round).

It checks the tool, not the speed: every case received frames, every ping
run had replies, every iperf3 run moved data, the JSON parses and holds the
table's rows and the targets. Needs root; skipped (77) without it unless
CI=true.
"""
import json
import os
import subprocess
import sys
import tempfile

build, script = sys.argv[1], sys.argv[2]
if os.geteuid() != 0:
    print("bench_switch_test: needs root")
    sys.exit(1 if os.environ.get("CI") == "true" else 77)

with tempfile.TemporaryDirectory(prefix="xvmq-bench-test.") as tmp:
    out = os.path.join(tmp, "bench.json")
    p = subprocess.run(["/usr/bin/python3", script, "--build", build, "--quick", "--rounds", "1", "--json", out],
                       timeout=600)
    if p.returncode != 0:
        sys.exit("bench exited %d" % p.returncode)
    rep = json.load(open(out))

fails = []
cases = {"ceiling", "bridge", "xvmq_vmq", "xvmq_default", "bridge_vm2vm", "xvmq_vm2vm"}
for size in (60, 1514):
    rows = {r["case"]: r for r in rep["frames"] if r["frame_bytes"] == size}
    if set(rows) != cases:
        fails.append("%d B: cases %s, expected %s" % (size, sorted(rows), sorted(cases)))
    for c, r in rows.items():
        if not r["fps_median"] > 0:
            fails.append("%s at %d B: no frames received" % (c, size))
        if c != "ceiling" and not (r["x_bridge"] and r["x_ceiling"]):
            fails.append("%s at %d B: no ratio" % (c, size))
lat = {(x["system"], x["path"]): x for x in rep["latency_tcp"]}
for k in (("bridge", "ext_vm"), ("xvmq", "ext_vm"), ("bridge", "vm_vm"), ("xvmq", "vm_vm")):
    x = lat.get(k)
    if not x:
        fails.append("no latency row %s" % (k,))
    elif not (x["ping_replies"] > 0 and x["ping_p99_us"] > 0 and x["iperf_mbps"] > 0):
        fails.append("%s: ping or iperf3 empty: %s" % (k, x))
for key in ("cpu_model", "nproc", "kernel", "loadavg_start"):
    if key not in rep["machine"]:
        fails.append("machine: no " + key)
if len(rep["targets"]) < 5 or any("ok" not in t for t in rep["targets"]):
    fails.append("targets: %s" % rep["targets"])
for f in fails:
    print("FAIL: " + f)
sys.exit(1 if fails else 0)
