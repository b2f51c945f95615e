"""CPU time over a window, for the switch benchmark's CPU-time cases: every
CPU's busy time, the part of it that other programs on the machine took, and
one process's own.

Busy time is the window less idle time. The cpuidle states' times give idle to
the microsecond, read on each CPU in turn (a CPU running the reader is not
idle, so its count is up to date); /proc/stat rounds idle to 10 ms (its busy
fields are tick samples at 250 Hz: their sum is kept as busy_ticks_s) and is
the fallback without cpuidle.
"""

import os
import re
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY = ("user", "nice", "system", "irq", "softirq", "steal")
PF_KTHREAD = 0x00200000
CPUMAP_THREAD = re.compile(r"cpumap/\d+/map:(\d+)$")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # gone meanwhile
        return ""


def stat_fields():
    """Per CPU, the /proc/stat fields in seconds."""
    out = {}
    for line in read("/proc/stat").splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            out[f[0]] = {k: int(v) / CLK_TCK for k, v in zip(FIELDS, f[1:])}
    return out


def idle_states(cpu):
    d = "/sys/devices/system/cpu/cpu%d/cpuidle" % cpu
    try:
        return [os.path.join(d, x, "time") for x in sorted(os.listdir(d)) if x.startswith("state")]
    except OSError:
        return []


def idle_exact():
    """{cpu: (monotonic seconds, idle seconds)} read on each CPU in turn, or None. The
    cpuidle states' times (us) grow at each idle exit; a CPU that runs this thread is
    not idle, so what it says is up to date, to the microsecond."""
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return None
    states = {c: idle_states(c) for c in sorted(allowed)}
    if not all(states.values()):
        return None
    out = {}
    try:
        for c, paths in states.items():
            os.sched_setaffinity(0, {c})  # returns on CPU c
            t = time.monotonic()
            out["cpu%d" % c] = (t, sum(int(read(p) or 0) for p in paths) / 1e6)
    except OSError:
        return None
    finally:
        os.sched_setaffinity(0, allowed)
    return out


def snapshot():
    return {"mono": time.monotonic(), "idle": idle_exact(), "stat": stat_fields(), "self": time.process_time()}


def busy_between(a, b):
    """Busy seconds of every CPU between two snapshots, per CPU, and from the tick samples."""
    stat = {c: {k: b["stat"][c][k] - a["stat"][c][k] for k in FIELDS} for c in b["stat"] if c in a["stat"]}
    wall = b["mono"] - a["mono"]
    if a["idle"] and b["idle"] and set(a["idle"]) == set(b["idle"]):
        per_cpu = {c: (b["idle"][c][0] - a["idle"][c][0]) - (b["idle"][c][1] - a["idle"][c][1]) for c in b["idle"]}
    else:
        per_cpu = {c: wall - v["idle"] - v["iowait"] for c, v in stat.items()}
    ticks = sum(v[k] for v in stat.values() for k in BUSY)
    return wall, sum(per_cpu.values()), per_cpu, ticks


def proc_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat), and its run time
    from /proc/PID/schedstat (the scheduler's clock, ns)."""
    stat = read("/proc/%d/stat" % pid)
    f = stat[stat.rindex(")") + 2:].split()
    run_ns = int(read("/proc/%d/schedstat" % pid).split()[0])
    return (int(f[11]) + int(f[12])) / CLK_TCK, run_ns / 1e9


def map_ids(pid):
    """The ids of the BPF maps a process holds open (/proc/PID/fdinfo)."""
    ids = set()
    try:
        fds = os.listdir("/proc/%d/fdinfo" % pid)
    except OSError:
        return ids
    for fd in fds:
        m = re.search(r"^map_id:\s*(\d+)", read("/proc/%d/fdinfo/%s" % (pid, fd)), re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def processes():
    """pid -> (comm, ppid, flags, the fields after comm) of every process."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            stat = read("/proc/%s/stat" % d)
            if stat:
                comm, f = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                procs[int(d)] = (comm, int(f[1]), int(f[6]), f)
    return procs


def descendants(procs, root):
    own = {root}
    for pid in procs:
        chain, p = [], pid
        while p in procs and p not in own and p > 1:
            chain.append(p)
            p = procs[p][1]
        if p in own:
            own.update(chain)
    return own


def foreign_seconds(own_maps):
    """CPU seconds so far of the work on this machine that is not the
    benchmark's, by (pid, start time): every process that is neither this one
    nor one of its descendants (utime + stime, its threads' together), and the
    CPUMAP kthreads of other programs' maps (their run time). What this cannot
    see: a process that ends within the window (its parent's cutime takes its
    whole life, not its part in the window), and others' softirq work run in
    the benchmark's or the idle context."""
    procs = processes()
    own = descendants(procs, os.getpid())
    out = {}
    for pid, (comm, _, flags, f) in procs.items():
        key = (pid, f[19])
        if flags & PF_KTHREAD:
            m = CPUMAP_THREAD.match(comm)
            if m and int(m.group(1)) not in own_maps:
                out[key] = int((read("/proc/%d/schedstat" % pid).split() or ["0"])[0]) / 1e9
        elif pid not in own:
            out[key] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def window(seconds, own_maps, pid=None):
    """Every CPU's busy seconds over `seconds`, with what other programs took
    (foreign_s), what this process took reading /proc (self_s), what is left
    (own_busy_s), and the process pid's own time. Other programs are read inside
    the window, so their part can only be undercounted: own_busy_s is at most
    the benchmark's, plus others' work that could not be told apart."""
    a = snapshot()
    f0 = foreign_seconds(own_maps)
    gen0 = pid and proc_seconds(pid)
    time.sleep(seconds)
    gen1 = pid and proc_seconds(pid)
    f1 = foreign_seconds(own_maps)
    b = snapshot()
    wall, busy, per_cpu, ticks = busy_between(a, b)
    foreign = min(max(sum(v - f0.get(k, 0) for k, v in f1.items()), 0.0), busy)
    mine = b["self"] - a["self"]
    w = {"seconds": wall, "busy_s": busy, "busy_ticks_s": ticks, "foreign_s": foreign, "self_s": mine,
         "own_busy_s": busy - foreign - mine, "per_cpu_busy_s": per_cpu}
    if pid:
        w.update(generator_s=gen1[0] - gen0[0], generator_run_s=gen1[1] - gen0[1])
    return w
