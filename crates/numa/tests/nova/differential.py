#!/usr/bin/env python3
"""Differential test of `quorum numa fit` against the real OpenStack nova (34.0.0).

Each scenario is a random compute host (sysfs/procfs files as Linux shows them, the libvirt
capabilities XML libvirt derives from them), a nova.conf, guests already placed by nova itself,
and one request (a flavor's extra specs and image properties). nova's answer is computed by
nova's own code, in the order nova-compute and the scheduler run it:

  1. nova.conf through oslo.config into nova.conf.CONF (reset between scenarios);
  2. the libvirt driver's host view: LibvirtDriver (without __init__) with a fake Host whose
     capabilities are the generated XML parsed by LibvirtConfigCaps and whose online CPUs are
     the online set; _reserved_hugepages = numa_get_reserved_huge_pages() (as __init__ does),
     _check_cpu_set_configuration() (as init_host does), then _get_host_numa_topology();
  3. usage as the resource tracker applies it: host JSON -> NUMATopology.obj_from_db_obj ->
     numa_usage_from_instance_numa(guest) -> _to_json, guest after guest;
  4. numa_get_constraints(flavor, image_meta);
  5. numa_fit_instance_to_host(host, request, provider_mapping=None, limits) with the
     NUMATopologyLimits the NUMATopologyFilter and the compute claim use.

Subcommands:
  generate --seed S --count N --out DIR [--jobs J]   scenarios DIR/000000 ... with nova.json
  compare  --dir DIR --quorum PATH [--jobs J] [--show K]
  run      --seeds 1,2,3 --count N --quorum PATH [--out DIR] [--keep] [--jobs J] [--show K]
  nova-fit numa fit ARGS... -w json                  answers like `quorum numa fit` from the
                                                     scenario files alone, with nova (self-test
                                                     of the file contract: `--quorum nova`)

A scenario directory holds, for quorum: sys/devices/system/{node,cpu}/... (cpulist, meminfo,
hugepages-*/{nr,free,surplus}_hugepages, thread_siblings_list of every online CPU, cpu/online),
proc/meminfo, nova.conf, instances.json (the placed guests, in placement order) and args.json
(the arguments after `numa fit`, paths as {dir}/...); for people: caps.xml (what nova read) and
nova.json (nova's answer: outcome fit / no_fit / no_topology / rejected (stage, exception,
message) / error; for a fit, per guest cell: host cell id, concrete page size (null: none
requested), cpu_pinning, cpuset_reserved, memory, cpuset, pcpuset; `claim_usage_error` when the
resource tracker's usage update then refuses what the fit chose; `scenario`, a description).

Scenario i of seed s is the same whatever --count and --jobs. `generate` and `run` (and
`nova-fit`) need nova importable (scripts/setup.sh installs it into .tools/nova-venv); `compare`
needs only the standard library. The program re-executes itself with PYTHONHASHSEED=0 so that
every run of a seed produces the same bytes.
"""

import argparse
import concurrent.futures
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

GIB_KB = 1024 * 1024
PAGE_2M = 2048
PAGE_1G = 1048576
CONFIG_KINDS = [
    # (kind, weight, valid)
    ("none", 22, True),
    ("dedicated", 18, True),
    ("shared", 9, True),
    ("both", 22, True),
    ("vcpu_pin_set", 10, True),
    ("vcpu_pin_set+shared", 6, True),
    ("both_overlapping", 1.0, False),
    ("vcpu_pin_set+dedicated", 0.8, False),
    ("missing_cpu", 1.0, False),
    ("reserved_host_cpus", 0.5, False),
    ("bad_syntax", 0.5, False),
]


# ---------------------------------------------------------------------------------------------
# Small helpers (no nova)


def wchoice(rng, items, weights):
    return rng.choices(items, weights=weights, k=1)[0]


def fmt_list(cpus):
    """Kernel / libvirt list format (virBitmapFormat, bitmap_print_to_pagebuf "%*pbl")."""
    cpus = sorted(set(cpus))
    out = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def parse_list(text):
    """Kernel list format ("0-3,8,10-11") to a sorted list."""
    out = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def fmt_operator(rng, cpus):
    """A CPU set as an operator writes it in nova.conf: ranges, exclusions, lists, spaces."""
    cpus = sorted(set(cpus))
    style = wchoice(rng, ["ranges", "exclude", "list", "spaces"], [55, 20, 15, 10])
    if style == "exclude" and len(cpus) >= 3:
        lo, hi = cpus[0], cpus[-1]
        holes = [c for c in range(lo, hi + 1) if c not in set(cpus)]
        if 1 <= len(holes) <= 3:
            return "%d-%d,%s" % (lo, hi, ",".join("^%d" % h for h in holes))
        if not holes and hi - lo >= 3 and rng.random() < 0.5:
            # "0-7,^0" style: a range one CPU wider, and that CPU excluded.
            if lo > 0:
                return "%d-%d,^%d" % (lo - 1, hi, lo - 1)
    if style == "list" and len(cpus) <= 10:
        return ",".join(str(c) for c in cpus)
    text = fmt_list(cpus)
    if style == "spaces":
        text = text.replace(",", ", ")
    return text


def scenario_dirs(root):
    root = os.path.abspath(root)
    return sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "nova.json")))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Host model


class Host:
    """A generated host. cells: list of dicts id, cpus (online, sorted), mem_kb, pages {size: nr},
    socket; siblings: cpu -> sorted online siblings; online/offline CPU lists."""

    def __init__(self):
        self.cells = []
        self.siblings = {}
        self.core_of = {}
        self.online = []
        self.offline = []
        self.tpc = 1
        self.numbering = "intel"
        self.hp_sizes = [PAGE_2M]
        self.ncpus = 0


def gen_host(rng):
    h = Host()
    ncells = wchoice(rng, [1, 2, 3, 4], [20, 50, 8, 22])
    h.tpc = tpc = wchoice(rng, [1, 2, 4], [35, 55, 10])
    max_cores = 32 // tpc
    min_cores = max(1, -(-2 // tpc))
    if rng.random() < 0.55:
        options = [c for c in (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32) if min_cores <= c <= max_cores]
        cpc = rng.choice(options)
    else:
        cpc = rng.randint(min_cores, max_cores)
    h.numbering = numbering = rng.choice(["intel", "amd"]) if tpc > 1 else "linear"
    total_cores = ncells * cpc
    h.ncpus = total_cores * tpc
    snc = ncells == 4 and rng.random() < 0.5  # sub-NUMA clustering: 2 cells per socket
    cell_cpus = {n: [] for n in range(ncells)}
    cores = []
    for n in range(ncells):
        for k in range(cpc):
            core = []
            for t in range(tpc):
                if numbering == "intel":
                    cpu = t * total_cores + n * cpc + k
                else:
                    cpu = (n * cpc + k) * tpc + t
                core.append(cpu)
                cell_cpus[n].append(cpu)
            cores.append((n, k, core))
    # A few CPUs offline now and then (never CPU 0, and every cell keeps one online CPU).
    offline = set()
    if rng.random() < 0.07 and h.ncpus > 4:
        for _ in range(rng.randint(1, 3)):
            c = rng.randrange(1, h.ncpus)
            n = next(n for n in cell_cpus if c in cell_cpus[n])
            if len([x for x in cell_cpus[n] if x not in offline and x != c]) >= 1:
                offline.add(c)
    h.offline = sorted(offline)
    h.online = sorted(c for c in range(h.ncpus) if c not in offline)
    for n, k, core in cores:
        live = [c for c in core if c not in offline]
        for c in live:
            h.siblings[c] = sorted(live)
            h.core_of[c] = (n, k)
    # Memory and hugepages.
    h.hp_sizes = [PAGE_2M, PAGE_1G] if rng.random() < 0.62 else [PAGE_2M]
    sizes_gib = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    weights = [6, 10, 4, 14, 6, 14, 5, 12, 4, 9, 3, 4]
    same_mem = rng.random() < 0.8
    gib = wchoice(rng, sizes_gib, weights)
    same_pages = rng.random() < 0.6
    pages0 = None
    for n in range(ncells):
        if not same_mem:
            gib = wchoice(rng, sizes_gib, weights)
        # The kernel keeps a little of each node (more on node 0) out of MemTotal.
        mem_kb = gib * GIB_KB - (rng.randint(150000, 600000) if n == 0 else rng.randint(20000, 120000))
        if pages0 is None or not same_pages:
            pages = {}
            frac2 = wchoice(rng, [0.0, 0.02, 0.05, 0.1, 0.25, 0.4, 0.5, 0.6], [16, 5, 8, 12, 18, 16, 13, 12])
            n2 = int(gib * 512 * frac2)
            if n2 and rng.random() < 0.6:
                n2 = max(64, n2 // 64 * 64)
            pages[PAGE_2M] = n2
            if PAGE_1G in h.hp_sizes:
                left_gib = gib * 0.7 - n2 / 512.0
                frac1 = wchoice(rng, [0.0, 0.1, 0.25, 0.5, 0.8], [28, 15, 22, 20, 15])
                pages[PAGE_1G] = max(0, int(left_gib * frac1))
            pages0 = pages
        pages = dict(pages0)
        # Never more hugepages than memory (the kernel would not have allocated them).
        while sum(s * c for s, c in pages.items()) > mem_kb - GIB_KB // 2:
            big = max(pages, key=lambda s: s * pages[s])
            pages[big] = pages[big] // 2
        socket = n // 2 if snc else n
        h.cells.append({"id": n, "cpus": sorted(c for c in cell_cpus[n] if c not in offline), "mem_kb": mem_kb, "pages": pages, "socket": socket})
    return h


def small_pages(cell):
    """libvirt's 4 KiB entry: (node MemTotal - every hugepage pool) / 4 KiB (virNumaGetPageInfo)."""
    return (cell["mem_kb"] * 1024 - sum(s * 1024 * nr for s, nr in cell["pages"].items())) // 4096


def caps_xml(h):
    """The capabilities XML libvirt formats for this host (virCapabilitiesFormatXML, host part)."""
    cores = len(h.cells[0]["cpus"]) // h.tpc or 1
    lines = [
        "<capabilities>",
        "",
        "  <host>",
        "    <uuid>4c4c4544-0047-3510-8052-b4c04f384d32</uuid>",
        "    <cpu>",
        "      <arch>x86_64</arch>",
        "      <model>Skylake-Server-IBRS</model>",
        "      <vendor>Intel</vendor>",
        "      <microcode version='33581318'/>",
        "      <signature family='6' model='85' stepping='4'/>",
        "      <counter name='tsc' frequency='2095078000' scaling='no'/>",
        "      <topology sockets='1' dies='1' cores='%d' threads='%d'/>" % (cores, h.tpc),
        "      <maxphysaddr mode='emulate' bits='46'/>",
        "      <feature name='ds'/>",
        "      <feature name='acpi'/>",
        "      <pages unit='KiB' size='4'/>",
    ]
    for s in h.hp_sizes:
        lines.append("      <pages unit='KiB' size='%d'/>" % s)
    lines += [
        "    </cpu>",
        "    <power_management>",
        "      <suspend_mem/>",
        "    </power_management>",
        "    <iommu support='yes'/>",
        "    <migration_features>",
        "      <live/>",
        "    </migration_features>",
        "    <topology>",
        "      <cells num='%d'>" % len(h.cells),
    ]
    for cell in h.cells:
        lines.append("        <cell id='%d'>" % cell["id"])
        lines.append("          <memory unit='KiB'>%d</memory>" % cell["mem_kb"])
        lines.append("          <pages unit='KiB' size='4'>%d</pages>" % small_pages(cell))
        for s in sorted(cell["pages"]):
            lines.append("          <pages unit='KiB' size='%d'>%d</pages>" % (s, cell["pages"][s]))
        lines.append("          <distances>")
        for other in h.cells:
            lines.append("            <sibling id='%d' value='%d'/>" % (other["id"], 10 if other is cell else 21))
        lines.append("          </distances>")
        lines.append("          <cpus num='%d'>" % len(cell["cpus"]))
        for c in cell["cpus"]:
            n, k = h.core_of[c]
            lines.append(
                "            <cpu id='%d' socket_id='%d' die_id='0' core_id='%d' siblings='%s'/>" % (c, cell["socket"], k, fmt_list(h.siblings[c]))
            )
        lines.append("          </cpus>")
        lines.append("        </cell>")
    lines += ["      </cells>", "    </topology>", "  </host>", "", "</capabilities>", ""]
    return "\n".join(lines)


def caps_from_sysfs(root):
    """What libvirt reads back from a sysfs tree (nodes, cpulist, thread_siblings_list, MemTotal,
    hugepage pools) as the structure the capabilities XML carries."""
    node_dir = os.path.join(root, "devices/system/node")
    cells = []
    for name in sorted(os.listdir(node_dir), key=lambda s: (len(s), s)):
        m = re.fullmatch(r"node(\d+)", name)
        if not m:
            continue
        nid = int(m.group(1))
        d = os.path.join(node_dir, name)
        with open(os.path.join(d, "cpulist")) as f:
            cpus = parse_list(f.read())
        mem_kb = None
        with open(os.path.join(d, "meminfo")) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] == "MemTotal:":
                    mem_kb = int(parts[3])
        pages = {}
        hp = os.path.join(d, "hugepages")
        if os.path.isdir(hp):
            for e in os.listdir(hp):
                m2 = re.fullmatch(r"hugepages-(\d+)kB", e)
                if m2:
                    with open(os.path.join(hp, e, "nr_hugepages")) as f:
                        pages[int(m2.group(1))] = int(f.read().strip())
        sib = {}
        for c in cpus:
            with open(os.path.join(root, "devices/system/cpu/cpu%d/topology/thread_siblings_list" % c)) as f:
                sib[c] = f.read().strip()
        cells.append({"id": nid, "cpus": cpus, "mem_kb": mem_kb, "pages": pages, "siblings": sib})
    cells.sort(key=lambda c: c["id"])
    return cells


def caps_xml_from_cells(cells):
    out = ["<capabilities><host><cpu><arch>x86_64</arch></cpu><topology><cells num='%d'>" % len(cells)]
    for cell in cells:
        out.append("<cell id='%d'><memory unit='KiB'>%d</memory>" % (cell["id"], cell["mem_kb"]))
        out.append("<pages unit='KiB' size='4'>%d</pages>" % small_pages(cell))
        for s in sorted(cell["pages"]):
            out.append("<pages unit='KiB' size='%d'>%d</pages>" % (s, cell["pages"][s]))
        out.append("<cpus num='%d'>" % len(cell["cpus"]))
        for i, c in enumerate(cell["cpus"]):
            out.append("<cpu id='%d' socket_id='%d' die_id='0' core_id='%d' siblings='%s'/>" % (c, cell["id"], i, cell["siblings"][c]))
        out.append("</cpus></cell>")
    out.append("</cells></topology></host></capabilities>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# nova.conf


def split_cores(rng, h):
    """Whole cores of online CPUs, per cell, in cell then core order."""
    per_cell = []
    for cell in h.cells:
        seen = []
        for c in cell["cpus"]:
            core = tuple(h.siblings[c])
            if core not in seen:
                seen.append(core)
        per_cell.append(seen)
    return per_cell


def choose_cpu_sets(rng, h):
    """(host-reserved, shared, dedicated) CPU sets as an operator would lay them out."""
    per_cell = split_cores(rng, h)
    if rng.random() < 0.7:
        # Core-aware: whole cores. A core or two per host (or per cell) for the host, a few for
        # shared vCPUs and emulator threads, the rest dedicated.
        reserved, shared, dedicated = set(), set(), set()
        host_every_cell = rng.random() < 0.4
        for i, cores in enumerate(per_cell):
            cores = list(cores)
            nres = 0
            if (i == 0 or host_every_cell) and len(cores) > 2 and rng.random() < 0.75:
                nres = 1 if len(cores) < 8 else rng.choice([1, 2])
            for core in cores[:nres]:
                reserved.update(core)
            rest = cores[nres:]
            nshared = 0
            if rest:
                nshared = max(1, int(len(rest) * wchoice(rng, [0.1, 0.25, 0.5], [40, 40, 20])))
                if len(rest) > 1:
                    nshared = min(nshared, len(rest) - 1)
                elif rng.random() < 0.5:
                    nshared = 0
            for core in rest[:nshared]:
                shared.update(core)
            for core in rest[nshared:]:
                dedicated.update(core)
        return reserved, shared, dedicated
    # Id ranges: contiguous CPU ids, which on Intel-style numbering takes one thread of each
    # core and leaves the siblings to the other set (or to nobody).
    ids = list(range(h.ncpus))
    lo = rng.choice([0, 1, 2, 2, 4])
    lo = min(lo, max(0, h.ncpus - 2))
    span = ids[lo:]
    if len(span) < 2:
        span = ids
    cut = rng.randint(1, max(1, len(span) - 1))
    shared = set(span[:cut])
    dedicated = set(span[cut:])
    if rng.random() < 0.3:
        # Stop short of the end (the last CPUs left to the host).
        drop = rng.randint(0, max(0, len(dedicated) // 3))
        dedicated = set(sorted(dedicated)[: len(dedicated) - drop] or sorted(dedicated))
    # Ranges written over offline CPUs are an operator error nova rejects; mostly avoid it.
    if h.offline and rng.random() < 0.7:
        shared -= set(h.offline)
        dedicated -= set(h.offline)
    if not shared:
        shared = {h.online[0]}
        dedicated.discard(h.online[0])
    if not dedicated:
        dedicated = {h.online[-1]}
        shared.discard(h.online[-1])
    return set(range(lo)) if lo else set(), shared, dedicated


def gen_conf(rng, h):
    """nova.conf text and a description of it."""
    default, compute = [], []
    desc = {}
    kind = wchoice(rng, [k for k, _, _ in CONFIG_KINDS], [w for _, w, _ in CONFIG_KINDS])
    desc["cpu_config"] = kind
    reserved, shared, dedicated = choose_cpu_sets(rng, h)
    if kind in ("dedicated", "both", "both_overlapping", "missing_cpu", "reserved_host_cpus", "bad_syntax") and not dedicated:
        dedicated = set(shared)
    if kind == "none":
        pass
    elif kind == "dedicated":
        ded = dedicated | (shared if rng.random() < 0.4 else set())
        compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, ded))
    elif kind == "shared":
        sh = shared | (dedicated if rng.random() < 0.5 else set())
        compute.append("cpu_shared_set = %s" % fmt_operator(rng, sh))
    elif kind == "both":
        compute.append("cpu_shared_set = %s" % fmt_operator(rng, shared))
        compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, dedicated))
    elif kind == "both_overlapping":
        extra = rng.choice(sorted(dedicated))
        compute.append("cpu_shared_set = %s" % fmt_operator(rng, shared | {extra}))
        compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, dedicated))
    elif kind == "vcpu_pin_set":
        pin = shared | dedicated
        default.append("vcpu_pin_set = %s" % fmt_operator(rng, pin))
    elif kind == "vcpu_pin_set+shared":
        pin = dedicated if rng.random() < 0.6 else shared | dedicated
        emu = reserved or shared or {h.online[0]}
        default.append("vcpu_pin_set = %s" % fmt_operator(rng, pin))
        compute.append("cpu_shared_set = %s" % fmt_operator(rng, emu))
    elif kind == "vcpu_pin_set+dedicated":
        default.append("vcpu_pin_set = %s" % fmt_operator(rng, shared))
        compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, dedicated))
    elif kind == "missing_cpu":
        ghost = set(range(h.ncpus, h.ncpus + rng.choice([1, 2, 4, 8])))
        which = rng.choice(["dedicated", "shared", "vcpu_pin_set"])
        if which == "dedicated":
            compute.append("cpu_shared_set = %s" % fmt_operator(rng, shared))
            compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, dedicated | ghost))
        elif which == "shared":
            compute.append("cpu_shared_set = %s" % fmt_operator(rng, shared | ghost))
        else:
            default.append("vcpu_pin_set = %s" % fmt_operator(rng, shared | dedicated | ghost))
    elif kind == "reserved_host_cpus":
        default.append("reserved_host_cpus = %d" % rng.choice([1, 2, 4]))
        compute.append("cpu_dedicated_set = %s" % fmt_operator(rng, dedicated))
    elif kind == "bad_syntax":
        lo, hi = min(dedicated), max(dedicated)
        bad = rng.choice(["%d-%d" % (hi + 1, lo) if hi + 1 > lo else "3-1", "%d-%d,x" % (lo, hi), "%d,^%d" % (lo, lo), "%d-%d,^" % (lo, hi)])
        compute.append("cpu_dedicated_set = %s" % bad)
    if kind in ("none", "vcpu_pin_set") and rng.random() < 0.04:
        default.append("reserved_host_cpus = %d" % rng.choice([1, 2]))  # harmless without the new sets

    # reserved_huge_pages
    if rng.random() < 0.28:
        lines = []
        bad = rng.random() < 0.05
        for _ in range(rng.randint(1, 3)):
            cell = rng.choice(h.cells)
            node = cell["id"] if rng.random() > 0.05 else len(h.cells) + rng.randint(0, 2)
            size_kb = rng.choice(h.hp_sizes) if rng.random() > 0.07 else PAGE_1G
            if size_kb == PAGE_2M:
                size_txt = wchoice(rng, ["2048", "2MB", "2048KB", "2MiB"], [60, 20, 10, 10])
            else:
                size_txt = wchoice(rng, ["1048576", "1GB", "1GiB"], [40, 45, 15])
            pool = cell["pages"].get(size_kb, 0)
            if pool and rng.random() < 0.9:
                count = rng.randint(0, pool) if rng.random() < 0.5 else min(pool, rng.choice([1, 2, 4, 64, 128, 256, 512, 1024]))
            else:
                count = rng.choice([1, 2, 64, 512])
            line = "node:%d,size:%s,count:%d" % (node, size_txt, count)
            if rng.random() < 0.1:
                line = line.replace(",", ", ")
            lines.append(line)
        if bad:
            line = rng.choice(
                [
                    "node:0,size:2M,count:64",
                    "node:0,size:2048",
                    "node:0,size:1G,count:1",
                    "size:2048,count:8",
                    # oslo.config's Dict refuses these before nova sees them (ConfigFileValueError)
                    "node:0,node:1,size:2048,count:8",
                    "node:0,size:2048,count:8,",
                    # accepted by nova, matching no cell
                    "node:-1,size:2048,count:8",
                ]
            )
            lines.insert(rng.randrange(len(lines) + 1), line)
        for line in lines:
            default.append("reserved_huge_pages = %s" % line)
        desc["reserved_huge_pages"] = lines
    # strategy and allocation ratios
    strat = wchoice(rng, [None, "True", "False", "true", "false"], [40, 24, 24, 6, 6])
    if strat is not None:
        compute.append("packing_host_numa_cells_allocation_strategy = %s" % strat)
    if rng.random() < 0.3:
        default.append("cpu_allocation_ratio = %s" % rng.choice(["1.0", "2.0", "4.0", "8.0", "16.0", "1.5"]))
    if rng.random() < 0.25:
        default.append("ram_allocation_ratio = %s" % rng.choice(["1.0", "1.5", "0.9", "2.0", "0.5"]))
    rng.shuffle(default)
    text = ["# nova.conf (generated)"]
    if default or rng.random() < 0.5:
        text += ["[DEFAULT]"] + default
        if rng.random() < 0.5:
            text.append("my_ip = 192.0.2.10")
    if compute or rng.random() < 0.3:
        text += ["", "[compute]"] + compute
    if rng.random() < 0.3:
        text += ["", "[libvirt]", "virt_type = kvm", "cpu_mode = host-passthrough"]
    desc["conf_lines"] = default + compute
    return "\n".join(text) + "\n", desc


# ---------------------------------------------------------------------------------------------
# Flavors and images


def host_hint(nova, js):
    """What a cloud's flavors for this host aggregate would be designed around."""
    host = nova.objects.NUMATopology.obj_from_db_obj(js)
    pools = Counter()
    for c in host.cells:
        for p in c.mempages:
            if p.size_kb > 4:
                pools[p.size_kb] = max(pools[p.size_kb], p.total - p.reserved)
    return {
        "cells": len(host.cells),
        "pcpus": max(len(c.pcpuset) for c in host.cells),
        "cpus": max(len(c.cpuset) for c in host.cells),
        "memory": max(c.memory for c in host.cells),
        "pools": {s: n for s, n in pools.items() if n > 0},
    }


MEMORY_STEPS = [256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536]
MEMORY_WEIGHTS = [5, 10, 14, 4, 16, 4, 14, 3, 11, 3, 7, 2, 4, 1, 1]
VCPU_STEPS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16]
VCPU_WEIGHTS = [20, 26, 3, 22, 2, 5, 11, 2, 4, 3]


def gen_flavor(rng, h, guest, hint=None):
    """(vcpus, memory_mb, extra_specs as ordered pairs, image properties as ordered pairs).

    With a hint (most of the time), the flavor is one a cloud would offer for this host: a CPU
    policy the host's CPU sets serve, a page size its pools have, a size its cells hold."""

    def bad(p):
        return (not guest) and rng.random() < p * 0.5

    tailored = hint is not None and rng.random() < 0.7
    specs = []
    image = []
    vcpus = wchoice(rng, VCPU_STEPS, VCPU_WEIGHTS)
    memory = wchoice(rng, MEMORY_STEPS, MEMORY_WEIGHTS)
    policy = wchoice(rng, [None, "shared", "dedicated", "mixed"], [30, 10, 45, 15])
    if tailored:
        if not hint["pcpus"]:
            policy = wchoice(rng, [None, "shared"], [70, 30])
        elif not hint["cpus"]:
            policy = "dedicated"
        room = hint["pcpus"] if policy == "dedicated" else max(hint["pcpus"], hint["cpus"])
        if room and vcpus > room:
            vcpus = max(1, min(room, rng.choice([1, 2, 4, room])))
        if memory > hint["memory"] // 2:
            memory = rng.choice([m for m in MEMORY_STEPS if m <= max(256, hint["memory"] // 2)])
    if bad(0.008):
        policy = "exclusive"
    if policy == "mixed" and vcpus == 1 and not bad(0.1):
        vcpus = 2
    thread = None
    if policy in ("dedicated", "mixed"):
        thread = wchoice(rng, [None, "prefer", "isolate", "require"], [50, 15, 18, 17])
    elif bad(0.02):
        thread = rng.choice(["prefer", "isolate", "require"])
    if bad(0.005):
        thread = "always"
    page = wchoice(
        rng,
        [None, "small", "large", "any", "2048", "1GB", "2MB", "1048576", "4", "2048KB"],
        [36, 9, 20, 9, 8, 5, 4, 4, 2, 2],
    )
    if tailored and page is not None:
        pools = hint["pools"]
        if not pools:
            page = rng.choice([None, "small", "any", "4"])
        elif page in ("1GB", "1048576") and PAGE_1G not in pools:
            page = rng.choice(["2048", "2MB", "large"]) if PAGE_2M in pools else "small"
        elif page in ("2048", "2MB", "2048KB") and PAGE_2M not in pools:
            page = rng.choice(["1GB", "large"])
        if page in ("1GB", "1048576") or (page in ("large", "any") and PAGE_2M not in pools):
            memory = max(1024, memory // 1024 * 1024)
            memory = min(memory, max(1024, pools.get(PAGE_1G, 1) * 1024 // 2 // 1024 * 1024))
        elif page in ("large", "2048", "2MB", "2048KB", "any"):
            memory = min(memory, max(256, pools.get(PAGE_2M, 0) * 2 // 2 // 256 * 256))
    if bad(0.02):
        page = rng.choice(["2M", "1G", "huge", "-1"])
    nodes = wchoice(rng, [None, 1, 2, 3, 4], [55, 14, 23, 2, 5])
    if tailored and nodes and nodes > hint["cells"]:
        nodes = rng.choice([None, hint["cells"]])
    nodes_txt = None if nodes is None else str(nodes)
    if bad(0.008):
        nodes, nodes_txt = None, "0"
    if nodes and nodes > 1:
        if vcpus % nodes and not bad(0.05):
            vcpus = nodes * max(1, -(-vcpus // nodes))
            if vcpus > 16:
                vcpus = nodes * (16 // nodes)
        if memory % nodes and not bad(0.05):
            memory = nodes * max(256, (memory // nodes) // 256 * 256)
    manual = None
    if nodes and nodes > 1 and vcpus >= nodes and memory // 256 >= nodes and rng.random() < 0.3:
        # A manual split, usually uneven, sometimes interleaved.
        if rng.random() < 0.25:
            cpu_parts = [set(range(i, vcpus, nodes)) for i in range(nodes)]
        else:
            cuts = sorted(rng.sample(range(1, vcpus), nodes - 1)) if vcpus > nodes else list(range(1, nodes))
            bounds = [0] + cuts + [vcpus]
            cpu_parts = [set(range(bounds[i], bounds[i + 1])) for i in range(nodes)]
        units = memory // 256
        mcuts = sorted(rng.sample(range(1, units), nodes - 1)) if units > nodes else list(range(1, nodes))
        mb = [0] + mcuts + [units]
        mem_parts = [(mb[i + 1] - mb[i]) * 256 for i in range(nodes)]
        mem_parts[-1] += memory - units * 256
        if rng.random() < 0.5:
            mem_parts = [memory // nodes] * nodes if memory % nodes == 0 else mem_parts
        manual = [cpu_parts, mem_parts]
        if bad(0.06):
            which = rng.choice(["mem_sum", "missing_cpu", "duplicate", "out_of_range", "incomplete", "only_cpus"])
            if which == "mem_sum":
                mem_parts[0] += 512
            elif which == "missing_cpu" and len(cpu_parts[-1]) > 1:
                cpu_parts[-1].discard(max(cpu_parts[-1]))
            elif which == "duplicate":
                cpu_parts[-1].add(min(cpu_parts[0]))
            elif which == "out_of_range":
                cpu_parts[-1].add(vcpus + 1)
            elif which == "incomplete":
                manual.append("drop_last_mem")
            else:
                manual.append("only_cpus")
    dedicated_mask = None
    realtime_mask = None
    realtime = False
    if policy == "mixed":
        if rng.random() < 0.8:
            k = rng.randint(1, max(1, vcpus - 1))
            form = wchoice(rng, ["^0", "range", "tail", "list"], [35, 25, 20, 20])
            if form == "^0":
                dedicated_mask = "^0"
            elif form == "range":
                dedicated_mask = "0-%d" % (k - 1) if k > 1 else "0"
            elif form == "tail":
                dedicated_mask = "%d-%d" % (vcpus - k, vcpus - 1) if k > 1 else str(vcpus - 1)
            else:
                dedicated_mask = ",".join(str(c) for c in sorted(rng.sample(range(vcpus), k)))
        else:
            realtime = True
            realtime_mask = rng.choice(["^0", "^0-1" if vcpus > 2 else "^0", "1-%d" % (vcpus - 1) if vcpus > 2 else "1"])
        if bad(0.02):
            dedicated_mask, realtime = None, False
    elif policy == "dedicated":
        if rng.random() < 0.08 and (vcpus > 1 or bad(0.3)):
            realtime = True
            realtime_mask = rng.choice(["^0", "^0", "^0", "^0", "0-%d" % (vcpus - 1), None]) if not guest else "^0"
        if bad(0.015):
            dedicated_mask = "^0"
    elif bad(0.01):
        realtime, realtime_mask = True, "^0"
    emulator = None
    if policy in ("dedicated", "mixed"):
        emulator = wchoice(rng, [None, "isolate", "share"], [72, 20, 8])
    elif bad(0.01):
        emulator = "isolate"
    # The extra specs, in a usual order (sometimes shuffled: nothing may depend on it).
    if policy:
        specs.append(("hw:cpu_policy", policy))
    if thread:
        specs.append(("hw:cpu_thread_policy", thread))
    if page:
        specs.append(("hw:mem_page_size", page))
    if nodes_txt:
        specs.append(("hw:numa_nodes", nodes_txt))
    if manual:
        cpu_parts, mem_parts = manual[0], manual[1]
        for i, part in enumerate(cpu_parts):
            specs.append(("hw:numa_cpus.%d" % i, fmt_list(part)))
        if "only_cpus" not in manual:
            count = len(mem_parts) - (1 if "drop_last_mem" in manual else 0)
            for i in range(count):
                specs.append(("hw:numa_mem.%d" % i, str(mem_parts[i])))
    if dedicated_mask:
        specs.append(("hw:cpu_dedicated_mask", dedicated_mask))
    if realtime:
        specs.append(("hw:cpu_realtime", rng.choice(["yes", "true", "True"])))
        if realtime_mask:
            specs.append(("hw:cpu_realtime_mask", realtime_mask))
    if emulator:
        specs.append(("hw:emulator_threads_policy", emulator))
    if rng.random() < 0.25:
        rng.shuffle(specs)
    # Image properties, rarely.
    if not guest and rng.random() < 0.05:
        which = rng.choice(["hw_mem_page_size", "hw_cpu_policy", "hw_cpu_thread_policy", "hw_numa_nodes"])
        if which == "hw_mem_page_size":
            image.append((which, rng.choice(["small", "large", "2048", "1GB", "any"])))
        elif which == "hw_cpu_policy":
            image.append((which, rng.choice(["dedicated", "shared", "dedicated"])))
        elif which == "hw_cpu_thread_policy":
            image.append((which, rng.choice(["prefer", "isolate", "require"])))
        else:
            image.append((which, str(rng.choice([1, 2]))))
    return vcpus, memory, specs, image


def flavor_desc(vcpus, memory, specs, image):
    d = {"vcpus": vcpus, "ram": memory, "extra_specs": dict(specs)}
    if image:
        d["image_properties"] = dict(image)
    return d


# ---------------------------------------------------------------------------------------------
# nova


class Nova:
    """nova imported once; one method per step of the canonical path."""

    def __init__(self):
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.CRITICAL)
        import nova.conf
        import nova.conf.neutron
        from nova import exception, objects

        objects.register_all()
        from oslo_config import cfg
        from nova.virt import hardware
        from nova.virt.libvirt import config as vconfig
        from nova.virt.libvirt import driver as ldriver

        self.CONF = nova.conf.CONF
        self.neutron_conf = nova.conf.neutron
        self.exception = exception
        self.objects = objects
        self.hardware = hardware
        self.vconfig = vconfig
        self.ldriver = ldriver
        self.cfg = cfg

    def is_rejection(self, e):
        """nova's own exceptions, and oslo.config's refusal of a value (nova-compute would not start)."""
        return isinstance(e, (self.exception.NovaException, self.cfg.Error))

    def load_conf(self, path):
        CONF = self.CONF
        CONF.reset()
        CONF.clear()
        CONF(["--config-file", path], project="nova", default_config_files=[])
        self.neutron_conf.register_dynamic_opts(CONF)

    def host_json(self, xml, online):
        """Steps 2: the libvirt driver's NUMA topology as compute_nodes.numa_topology JSON."""
        caps = self.vconfig.LibvirtConfigCaps()
        caps.parse_str(xml)

        class FakeHost:
            def get_capabilities(self):
                return caps

            def get_online_cpus(self):
                return set(online)

            def get_available_cpus(self):
                return set(online)

            def has_min_version(self, lv_ver=None, hv_ver=None, hv_type=None):
                return True

        drv = object.__new__(self.ldriver.LibvirtDriver)
        drv._host = FakeHost()
        drv._reserved_hugepages = self.hardware.numa_get_reserved_huge_pages()
        drv._check_cpu_set_configuration()
        topo = drv._get_host_numa_topology()
        return topo._to_json()

    def limits(self):
        CONF = self.CONF
        r_cpu = CONF.cpu_allocation_ratio
        r_ram = CONF.ram_allocation_ratio
        # ResourceTracker._copy_resources: a ratio of None or 0.0 means "the initial one".
        if r_cpu in (0.0, None):
            r_cpu = CONF.initial_cpu_allocation_ratio
        if r_ram in (0.0, None):
            r_ram = CONF.initial_ram_allocation_ratio
        return r_cpu, r_ram

    def constraints(self, vcpus, memory, specs, image):
        flavor = self.objects.Flavor(vcpus=vcpus, memory_mb=memory, extra_specs=dict(specs))
        image_meta = self.objects.ImageMeta.from_dict({"properties": dict(image)})
        return self.hardware.numa_get_constraints(flavor, image_meta)

    def fit(self, js, topo, ratios):
        host = self.objects.NUMATopology.obj_from_db_obj(js)
        limits = self.objects.NUMATopologyLimits(cpu_allocation_ratio=ratios[0], ram_allocation_ratio=ratios[1])
        return self.hardware.numa_fit_instance_to_host(host, topo, provider_mapping=None, limits=limits)

    def add_usage(self, js, guest):
        h = self.objects.NUMATopology.obj_from_db_obj(js)
        return self.hardware.numa_usage_from_instance_numa(h, guest)._to_json()

    def strategy(self):
        return "pack" if self.CONF.compute.packing_host_numa_cells_allocation_strategy else "spread"


def field(obj, name):
    """An object field's value, None when unset (`name in obj` is False for properties such as
    InstanceNUMACell.cpu_pinning, a proxy of cpu_pinning_raw)."""
    return getattr(obj, name) if obj.obj_attr_is_set(name) else None


def pinning_of(c):
    return c.cpu_pinning if c.obj_attr_is_set("cpu_pinning_raw") and c.cpu_pinning_raw is not None else {}


def cell_answer(i, c):
    pinning = pinning_of(c)
    return {
        "guest_cell": i,
        "id": c.id,
        "pagesize_kb": field(c, "pagesize") or None,
        "cpu_pinning": {str(k): v for k, v in sorted(pinning.items())},
        "cpuset_reserved": sorted(field(c, "cpuset_reserved") or []),
        "memory": c.memory,
        "cpuset": sorted(c.cpuset),
        "pcpuset": sorted(c.pcpuset),
    }


def guest_record(name, topo):
    cells = []
    for c in topo.cells:
        pinning = pinning_of(c)
        # A cell placed through a false fit-cache hit (nova keys the cache by instance cell ids it
        # has already rewritten to host cell ids) keeps dedicated vCPUs without a pCPU: nova's
        # usage then pins only the pinned ones, and so does this record.
        pcpus = [pinning[v] for v in sorted(c.pcpuset) if v in pinning]
        cells.append(
            {
                "node": c.id,
                "memory_mb": c.memory,
                "pagesize_kb": field(c, "pagesize") or None,
                "vcpus": len(c.cpuset) + len(pcpus),
                "pcpus": pcpus,
                "emulator_pcpus": sorted(field(c, "cpuset_reserved") or []),
                "cpu_policy": field(c, "cpu_policy"),
                "thread_policy": field(c, "cpu_thread_policy"),
            }
        )
    return {"name": name, "cells": cells}


def nearly_full(nova, js):
    host = nova.objects.NUMATopology.obj_from_db_obj(js)
    for cell in host.cells:
        if cell.pcpuset and cell.avail_pcpus <= 1 and len(cell.pinned_cpus) > 0:
            return True
        if cell.memory_usage >= 0.85 * cell.memory:
            return True
        for p in cell.mempages:
            if p.size_kb > 4 and p.total >= 8 and p.free <= 0.15 * p.total:
                return True
    return False


# ---------------------------------------------------------------------------------------------
# generate


def write_host_files(d, h, placed_pages):
    """sysfs and procfs as Linux shows this host; placed_pages[(node, size)] = pages taken."""
    sysd = os.path.join(d, "sys/devices/system")
    total_kb = 0
    hp_total = {s: 0 for s in h.hp_sizes}
    hp_free = {s: 0 for s in h.hp_sizes}
    for cell in h.cells:
        n = cell["id"]
        nd = os.path.join(sysd, "node/node%d" % n)
        write(os.path.join(nd, "cpulist"), fmt_list(cell["cpus"]) + "\n")
        used_kb = sum(s * nr for s, nr in cell["pages"].items())
        free_kb = max(0, cell["mem_kb"] - used_kb - cell["mem_kb"] // 10)
        nr2 = cell["pages"].get(PAGE_2M, 0)
        free2 = nr2 - placed_pages.get((n, PAGE_2M), 0)
        meminfo = [
            "Node %d MemTotal:       %8d kB" % (n, cell["mem_kb"]),
            "Node %d MemFree:        %8d kB" % (n, free_kb),
            "Node %d MemUsed:        %8d kB" % (n, cell["mem_kb"] - free_kb),
            "Node %d Active:         %8d kB" % (n, (cell["mem_kb"] - free_kb) // 3),
            "Node %d Inactive:       %8d kB" % (n, (cell["mem_kb"] - free_kb) // 4),
            "Node %d Dirty:          %8d kB" % (n, 12),
            "Node %d FilePages:      %8d kB" % (n, (cell["mem_kb"] - free_kb) // 5),
            "Node %d AnonPages:      %8d kB" % (n, (cell["mem_kb"] - free_kb) // 6),
            "Node %d Shmem:          %8d kB" % (n, 4096),
            "Node %d KernelStack:    %8d kB" % (n, 16384),
            "Node %d PageTables:     %8d kB" % (n, 8192),
            "Node %d Slab:           %8d kB" % (n, 200000),
            "Node %d HugePages_Total: %5d" % (n, nr2),
            "Node %d HugePages_Free:  %5d" % (n, free2),
            "Node %d HugePages_Surp:  %5d" % (n, 0),
        ]
        write(os.path.join(nd, "meminfo"), "\n".join(meminfo) + "\n")
        for s in h.hp_sizes:
            nr = cell["pages"].get(s, 0)
            free = nr - placed_pages.get((n, s), 0)
            hd = os.path.join(nd, "hugepages/hugepages-%dkB" % s)
            write(os.path.join(hd, "nr_hugepages"), "%d\n" % nr)
            write(os.path.join(hd, "free_hugepages"), "%d\n" % free)
            write(os.path.join(hd, "surplus_hugepages"), "0\n")
            hp_total[s] += nr
            hp_free[s] += free
        total_kb += cell["mem_kb"]
    write(os.path.join(sysd, "node/online"), fmt_list([c["id"] for c in h.cells]) + "\n")
    write(os.path.join(sysd, "node/possible"), fmt_list([c["id"] for c in h.cells]) + "\n")
    for c in h.online:
        write(os.path.join(sysd, "cpu/cpu%d/topology/thread_siblings_list" % c), fmt_list(h.siblings[c]) + "\n")
    for c in h.offline:
        # An offline CPU has no topology directory; its `online` file says 0.
        write(os.path.join(sysd, "cpu/cpu%d/online" % c), "0\n")
    write(os.path.join(sysd, "cpu/online"), fmt_list(h.online) + "\n")
    write(os.path.join(sysd, "cpu/offline"), (fmt_list(h.offline) if h.offline else "") + "\n")
    write(os.path.join(sysd, "cpu/possible"), "0-%d\n" % (h.ncpus - 1))
    hugetlb_kb = sum(s * hp_total[s] for s in h.hp_sizes)
    free_kb = max(0, total_kb - hugetlb_kb - total_kb // 10)
    meminfo = [
        "MemTotal:       %8d kB" % total_kb,
        "MemFree:        %8d kB" % free_kb,
        "MemAvailable:   %8d kB" % (free_kb + total_kb // 20),
        "Buffers:        %8d kB" % 204800,
        "Cached:         %8d kB" % (total_kb // 20),
        "SwapCached:            0 kB",
        "SwapTotal:             0 kB",
        "SwapFree:              0 kB",
        "AnonHugePages:  %8d kB" % 0,
        "HugePages_Total:   %5d" % hp_total[PAGE_2M],
        "HugePages_Free:    %5d" % hp_free[PAGE_2M],
        "HugePages_Rsvd:        0",
        "HugePages_Surp:        0",
        "Hugepagesize:       2048 kB",
        "Hugetlb:        %8d kB" % hugetlb_kb,
        "DirectMap4k:      %6d kB" % 524288,
    ]
    write(os.path.join(d, "proc/meminfo"), "\n".join(meminfo) + "\n")


def request_args(vcpus, memory, specs, image):
    args = [
        "--sysfs-root",
        "{dir}/sys",
        "--meminfo",
        "{dir}/proc/meminfo",
        "--nova-conf",
        "{dir}/nova.conf",
        "--instances",
        "{dir}/instances.json",
        "--vcpus",
        str(vcpus),
        "--ram",
        str(memory),
    ]
    for k, v in specs:
        args += ["--property", "%s=%s" % (k, v)]
    for k, v in image:
        args += ["--image-property", "%s=%s" % (k, v)]
    return args


def gen_scenario(nova, seed, index, d):
    """Build scenario `index` of `seed` into directory d; returns the statistics record."""
    rng = random.Random("quorum-numa-differential/%d/%d" % (seed, index))
    h = gen_host(rng)
    conf_text, conf_desc = gen_conf(rng, h)
    os.makedirs(d, exist_ok=True)
    conf_path = os.path.join(d, "nova.conf")
    write(conf_path, conf_text)
    xml = caps_xml(h)
    write(os.path.join(d, "caps.xml"), xml)
    stats = Counter()
    desc = {
        "seed": seed,
        "index": index,
        "cells": len(h.cells),
        "cpus_per_cell": [len(c["cpus"]) for c in h.cells],
        "threads_per_core": h.tpc,
        "numbering": h.numbering,
        "offline": h.offline,
        "memory_mb": [c["mem_kb"] // 1024 for c in h.cells],
        "hugepages": [{str(s): nr for s, nr in sorted(c["pages"].items())} for c in h.cells],
        "nova_conf": conf_desc["conf_lines"],
        "cpu_config": conf_desc["cpu_config"],
    }
    answer = None
    guests = []
    placed_pages = Counter()
    nguests = wchoice(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8], [12, 14, 14, 13, 12, 11, 9, 8, 7])
    vcpus, memory, specs, image = None, None, [], []
    try:
        nova.load_conf(conf_path)
        try:
            js = nova.host_json(xml, h.online)
            ratios = nova.limits()
        except Exception as e:  # noqa: BLE001 (sorted below)
            if not nova.is_rejection(e):
                raise
            answer = {"outcome": "rejected", "stage": "config", "exception": type(e).__name__, "message": str(e)}
        if answer is None:
            desc["strategy"] = nova.strategy()
            desc["allocation_ratios"] = list(ratios)
            hint = host_hint(nova, js)
            for _ in range(nguests):
                gv, gm, gspecs, gimage = gen_flavor(rng, h, guest=True, hint=hint)
                try:
                    gtopo = nova.constraints(gv, gm, gspecs, gimage)
                except Exception:  # noqa: BLE001
                    stats["guest_skipped_rejected"] += 1
                    continue
                if gtopo is None:
                    stats["guest_skipped_no_topology"] += 1
                    continue
                try:
                    got = nova.fit(js, gtopo, ratios)
                except Exception as e:  # noqa: BLE001
                    stats["guest_skipped_fit_error_%s" % type(e).__name__] += 1
                    continue
                if got is None:
                    stats["guest_skipped_no_fit"] += 1
                    continue
                try:
                    js2 = nova.add_usage(js, got)
                except Exception as e:  # noqa: BLE001
                    # e.g. CPUPinningInvalid: nova's own usage refuses what its fit chose.
                    stats["guest_skipped_usage_error_%s" % type(e).__name__] += 1
                    continue
                js = js2
                guests.append(guest_record("g%d" % (len(guests) + 1), got))
                stats["guests_multi_cell"] += len(got.cells) > 1
                for c in got.cells:
                    if (field(c, "pagesize") or 0) > 4:
                        placed_pages[(c.id, c.pagesize)] += c.memory * 1024 // c.pagesize
            stats["guests_placed"] += len(guests)
            if nearly_full(nova, js):
                stats["nearly_full_host"] += 1
            vcpus, memory, specs, image = gen_flavor(rng, h, guest=False, hint=hint)
            try:
                topo = nova.constraints(vcpus, memory, specs, image)
            except Exception as e:  # noqa: BLE001
                if not nova.is_rejection(e):
                    raise
                topo = None
                answer = {"outcome": "rejected", "stage": "request", "exception": type(e).__name__, "message": str(e)}
            if answer is None and topo is None:
                answer = {"outcome": "no_topology"}
            if answer is None:
                emulator_isolate = bool(topo.emulator_threads_isolated)
                stats["request_emulator_isolate"] += emulator_isolate
                stats["request_multi_cell"] += len(topo.cells) > 1
                got = nova.fit(js, topo, ratios)
                if got is None:
                    answer = {"outcome": "no_fit"}
                else:
                    answer = {"outcome": "fit", "cells": [cell_answer(i, c) for i, c in enumerate(got.cells)]}
                    stats["fit_multi_cell"] += len(got.cells) > 1
                    stats["fit_emulator_isolate"] += emulator_isolate
                    try:
                        nova.add_usage(js, got)
                    except Exception as e:  # noqa: BLE001
                        # The scheduler and the claim's fit accept it, but the resource tracker's
                        # usage update then refuses it (e.g. CPUPinningInvalid): informational.
                        answer["claim_usage_error"] = "%s: %s" % (type(e).__name__, e)
                        stats["fit_but_usage_error_%s" % type(e).__name__] += 1
        else:
            vcpus, memory, specs, image = gen_flavor(rng, h, guest=False)
    except Exception as e:  # noqa: BLE001
        import traceback

        answer = {"outcome": "error", "exception": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    desc["guests"] = len(guests)
    desc["flavor"] = flavor_desc(vcpus, memory, specs, image)
    answer["scenario"] = desc
    write_host_files(d, h, placed_pages)
    write(os.path.join(d, "instances.json"), json.dumps(guests, indent=1) + "\n")
    write(os.path.join(d, "args.json"), json.dumps(request_args(vcpus, memory, specs, image)) + "\n")
    write(os.path.join(d, "nova.json"), json.dumps(answer, indent=1, sort_keys=True) + "\n")
    # The files must carry what nova read: libvirt's view rebuilt from the sysfs tree.
    back = caps_from_sysfs(os.path.join(d, "sys"))
    mine = [{"id": c["id"], "cpus": c["cpus"], "mem_kb": c["mem_kb"], "pages": c["pages"]} for c in h.cells]
    theirs = [{"id": c["id"], "cpus": c["cpus"], "mem_kb": c["mem_kb"], "pages": c["pages"]} for c in back]
    assert mine == theirs, "sysfs tree does not match the capabilities: %r != %r" % (mine, theirs)
    # Statistics.
    stats["outcome_" + answer["outcome"]] += 1
    if answer["outcome"] == "rejected":
        stats["rejected_%s_%s" % (answer["stage"], answer["exception"])] += 1
    if answer["outcome"] == "error":
        stats["error_" + answer["exception"]] += 1
    es = dict(specs)
    stats["policy_%s" % es.get("hw:cpu_policy", "-")] += 1
    stats["thread_policy_%s" % es.get("hw:cpu_thread_policy", "-")] += 1
    stats["page_%s" % es.get("hw:mem_page_size", "-")] += 1
    stats["numa_nodes_%s" % es.get("hw:numa_nodes", "-")] += 1
    stats["emulator_%s" % es.get("hw:emulator_threads_policy", "-")] += 1
    stats["manual_split"] += any(k.startswith("hw:numa_cpus.") for k in es)
    stats["image_properties"] += bool(image)
    stats["smt_%d" % h.tpc] += 1
    stats["numbering_%s" % h.numbering] += 1
    stats["host_cells_%d" % len(h.cells)] += 1
    stats["offline_cpus"] += bool(h.offline)
    stats["cpu_config_%s" % conf_desc["cpu_config"]] += 1
    stats["reserved_huge_pages"] += "reserved_huge_pages" in conf_desc
    stats["strategy_%s" % desc.get("strategy", "-")] += 1
    stats["has_1g_pages"] += PAGE_1G in h.hp_sizes
    return stats


_WORKER_NOVA = None


def _gen_one(job):
    global _WORKER_NOVA
    if _WORKER_NOVA is None:
        _WORKER_NOVA = Nova()
    seed, index, d = job
    return gen_scenario(_WORKER_NOVA, seed, index, d)


def generate(seed, count, out, jobs=1, quiet=False):
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    jobs_list = [(seed, i, os.path.join(out, "%06d" % i)) for i in range(count)]
    total = Counter()
    global _WORKER_NOVA
    if _WORKER_NOVA is None:
        _WORKER_NOVA = Nova()  # imported before any fork: the workers share it
    if jobs > 1 and count > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            for st in pool.imap_unordered(_gen_one, jobs_list, chunksize=8):
                total.update(st)
    else:
        for job in jobs_list:
            total.update(_gen_one(job))
    total["scenarios"] = count
    elapsed = time.time() - t0
    if not quiet:
        print_generation_stats(total, "seed %d: %d scenarios in %.1f s" % (seed, count, elapsed))
    return total, elapsed


def print_generation_stats(st, title):
    n = st["scenarios"] or 1
    print(title)

    def group(prefix, label):
        items = sorted(((k[len(prefix) :], v) for k, v in st.items() if k.startswith(prefix)), key=lambda kv: (-kv[1], kv[0]))
        if items:
            print("  %-16s %s" % (label, ", ".join("%s %d (%.0f%%)" % (k, v, 100.0 * v / n) for k, v in items)))

    group("outcome_", "outcomes")
    group("rejected_", "rejections")
    group("error_", "nova errors")
    group("policy_", "cpu_policy")
    group("thread_policy_", "thread_policy")
    group("page_", "mem_page_size")
    group("numa_nodes_", "numa_nodes")
    group("emulator_", "emulator")
    group("smt_", "threads/core")
    group("numbering_", "numbering")
    group("host_cells_", "host cells")
    group("cpu_config_", "cpu config")
    group("strategy_", "strategy")
    group("guest_skipped_", "guests skipped")
    group("fit_but_usage_error_", "fit, usage fails")
    others = [
        "guests_placed",
        "guests_multi_cell",
        "nearly_full_host",
        "request_multi_cell",
        "fit_multi_cell",
        "request_emulator_isolate",
        "fit_emulator_isolate",
        "manual_split",
        "image_properties",
        "offline_cpus",
        "reserved_huge_pages",
        "has_1g_pages",
    ]
    print("  %-16s %s" % ("other", ", ".join("%s %d" % (k, st[k]) for k in others)))
    missing = missing_coverage(st)
    if missing:
        print("  %-16s %s" % ("NOT COVERED", ", ".join(missing)))


COVERAGE = [
    "outcome_fit",
    "outcome_no_fit",
    "outcome_rejected",
    "outcome_no_topology",
    "policy_-",
    "policy_shared",
    "policy_dedicated",
    "policy_mixed",
    "thread_policy_prefer",
    "thread_policy_isolate",
    "thread_policy_require",
    "strategy_pack",
    "strategy_spread",
    "smt_1",
    "smt_2",
    "fit_multi_cell",
    "fit_emulator_isolate",
    "guests_multi_cell",
    "nearly_full_host",
]


def missing_coverage(st):
    """What a seed's scenarios must all show at least once (printed, not enforced)."""
    return [k for k in COVERAGE if not st[k]]


# ---------------------------------------------------------------------------------------------
# compare

FIELDS = ["outcome", "host cells", "page size", "pinning", "emulator pCPUs", "rejection reason"]
EXC_RE = re.compile(r"\(nova: ([A-Za-z_][A-Za-z0-9_.]*)\)")


def quorum_command(quorum):
    if quorum == "nova":
        return [sys.executable, os.path.abspath(__file__), "nova-fit"]
    return [os.path.abspath(quorum)] if os.path.sep in quorum else [quorum]


def run_quorum(cmd, d):
    with open(os.path.join(d, "args.json")) as f:
        args = [a.replace("{dir}", d) for a in json.load(f)]
    argv = cmd + ["numa", "fit"] + args + ["-w", "json"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    try:
        p = subprocess.run(argv, cwd=d, capture_output=True, text=True, timeout=120, env=env)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -999, e.stdout or "", "timed out after 120 s"
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
    except OSError as e:
        rc, out, err = -998, "", "cannot run: %s" % e
    return argv, rc, out, err


def parse_quorum(rc, out, err):
    """quorum's answer in nova.json's terms."""
    if rc in (0, 1):
        try:
            j = json.loads(out)
        except ValueError:
            return {"outcome": "quorum_error", "why": "stdout is not JSON (exit %d)" % rc}
        if rc == 0 and j.get("fits") is True:
            cells = j.get("cells") or []
            if not cells:
                return {"outcome": "no_topology"}
            return {"outcome": "fit", "cells": cells}
        if rc == 1 and j.get("fits") is False:
            return {"outcome": "no_fit"}
        return {"outcome": "quorum_error", "why": "exit %d with fits=%r" % (rc, j.get("fits"))}
    if rc == 2:
        m = EXC_RE.search(err)
        if m:
            return {"outcome": "rejected", "exception": m.group(1)}
        return {"outcome": "quorum_error", "why": "exit 2 without (nova: Exception) on stderr"}
    return {"outcome": "quorum_error", "why": "exit %d" % rc}


def _pinning(cell):
    p = cell.get("cpu_pinning") or {}
    return {int(k): int(v) for k, v in p.items()}


def _pagesize(cell):
    v = cell.get("pagesize_kb")
    return None if v is None else int(v)


def compare_answers(nova, q, smallest=4):
    """{field: (agree, nova value, quorum value)} for every field that applies."""
    res = {}
    nk, qk = nova["outcome"], q["outcome"]
    res["outcome"] = (nk == qk and nk != "error", nk, qk)
    if nk == qk == "fit":
        nc, qc = nova["cells"], q["cells"]
        if len(nc) != len(qc):
            res["host cells"] = (False, [c["id"] for c in nc], [c.get("id") for c in qc])
            return res
        qc = sorted(qc, key=lambda c: c.get("guest_cell", 0))
        nids, qids = [c["id"] for c in nc], [c.get("id") for c in qc]
        res["host cells"] = (nids == qids, nids, qids)
        nps, qps = [_pagesize(c) for c in nc], [_pagesize(c) for c in qc]
        # nova's null (no page size requested: the smallest) equals quorum's null or 4 KiB.
        ok = all(a == b or (a is None and b in (None, smallest)) for a, b in zip(nps, qps))
        res["page size"] = (ok, nps, qps)
        npin, qpin = [_pinning(c) for c in nc], [_pinning(c) for c in qc]
        res["pinning"] = (npin == qpin, npin, qpin)
        nres = [sorted(c.get("cpuset_reserved") or []) for c in nc]
        qres = [sorted(c.get("cpuset_reserved") or []) for c in qc]
        res["emulator pCPUs"] = (nres == qres, nres, qres)
    elif nk == qk == "rejected":
        res["rejection reason"] = (nova["exception"] == q["exception"], nova["exception"], q["exception"])
    return res


def compare_one(cmd, d):
    with open(os.path.join(d, "nova.json")) as f:
        nova = json.load(f)
    argv, rc, out, err = run_quorum(cmd, d)
    q = parse_quorum(rc, out, err)
    fields = compare_answers(nova, q)
    return {"dir": d, "argv": argv, "rc": rc, "stdout": out, "stderr": err, "nova": nova, "quorum": q, "fields": fields}


def compare_dir(directory, quorum, jobs=2):
    cmd = quorum_command(quorum)
    dirs = scenario_dirs(directory)
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for r in ex.map(lambda d: compare_one(cmd, d), dirs):
            results.append(r)
    return results


def tally(results):
    t = {f: [0, 0] for f in FIELDS}
    kinds = Counter()
    kinds_agree = Counter()
    confusion = Counter()
    for r in results:
        for f, (ok, _, _) in r["fields"].items():
            t[f][0] += 1
            t[f][1] += bool(ok)
        nk = r["nova"]["outcome"]
        kinds[nk] += 1
        kinds_agree[nk] += all(ok for ok, _, _ in r["fields"].values())
        if r["quorum"]["outcome"] != nk:
            confusion[(nk, r["quorum"]["outcome"])] += 1
    return t, kinds, kinds_agree, confusion


def print_table(results, title):
    t, kinds, kinds_agree, confusion = tally(results)
    n = len(results)
    print(title)
    print("  %-18s %9s %9s %9s %8s" % ("field", "compared", "agree", "disagree", "agree%"))
    for f in FIELDS:
        c, a = t[f]
        pct = "%.2f" % (100.0 * a / c) if c else "-"
        print("  %-18s %9d %9d %9d %8s" % (f, c, a, c - a, pct))
    print("  %-18s %9s %9s %9s %8s" % ("nova outcome", "scenarios", "share%", "agree", "agree%"))
    for k in ["fit", "no_fit", "no_topology", "rejected", "error"]:
        c = kinds[k]
        if c or k != "error":
            print("  %-18s %9d %9s %9d %8s" % (k, c, "%.1f" % (100.0 * c / n) if n else "-", kinds_agree[k], "%.2f" % (100.0 * kinds_agree[k] / c) if c else "-"))
    if confusion:
        print("  outcome disagreements (nova -> quorum): " + ", ".join("%s->%s %d" % (a, b, c) for (a, b), c in sorted(confusion.items())))


def describe(nova):
    s = nova.get("scenario", {})
    lines = [
        "host: %d cells, CPUs/cell %s, %d thread(s)/core (%s numbering)%s, MiB/cell %s, hugepages/cell %s"
        % (
            s.get("cells", 0),
            s.get("cpus_per_cell"),
            s.get("threads_per_core", 0),
            s.get("numbering"),
            ", offline %s" % fmt_list(s["offline"]) if s.get("offline") else "",
            s.get("memory_mb"),
            s.get("hugepages"),
        ),
        "nova.conf (%s): %s" % (s.get("cpu_config"), "; ".join(s.get("nova_conf") or []) or "(nothing relevant)"),
        "strategy %s, allocation ratios %s, %d guest(s) placed" % (s.get("strategy", "-"), s.get("allocation_ratios", "-"), s.get("guests", 0)),
        "flavor: %s" % json.dumps(s.get("flavor"), sort_keys=True),
    ]
    return lines


def short_answer(a):
    a = {k: v for k, v in a.items() if k not in ("scenario", "traceback")}
    return json.dumps(a, sort_keys=True)


def print_disagreements(results, show):
    bad = [r for r in results if not all(ok for ok, _, _ in r["fields"].values())]
    errors = [r for r in results if r["nova"]["outcome"] == "error"]
    if errors:
        print()
        print("!!! nova raised an unexpected exception in %d scenario(s): the generator left nova's contract. First: %s" % (len(errors), errors[0]["dir"]))
        print(errors[0]["nova"].get("traceback", "").rstrip())
    for r in bad[:show]:
        print()
        diff = [f for f, (ok, _, _) in r["fields"].items() if not ok]
        print("DISAGREE [%s] %s" % (", ".join(diff), r["dir"]))
        print("  $ cd %s && %s" % (shlex.quote(r["dir"]), shlex.join(r["argv"])))
        for line in describe(r["nova"]):
            print("  " + line)
        print("  nova:   " + short_answer(r["nova"]))
        print("  quorum: exit %d %s" % (r["rc"], short_answer(r["quorum"])))
        for f in diff:
            _, nv, qv = r["fields"][f]
            print("  %-14s nova %s | quorum %s" % (f + ":", json.dumps(nv, sort_keys=True), json.dumps(qv, sort_keys=True)))
        if r["quorum"]["outcome"] in ("quorum_error", "rejected", "no_fit") or r["rc"] not in (0, 1):
            err = r["stderr"].strip()
            if err:
                print("  quorum stderr: " + err[:800].replace("\n", "\n                 "))
            if r["quorum"]["outcome"] == "quorum_error" and r["stdout"].strip():
                print("  quorum stdout: " + r["stdout"].strip()[:800].replace("\n", "\n                 "))
    if len(bad) > show:
        print("\n... and %d more disagreement(s)" % (len(bad) - show))
    return len(bad)


def all_agree(results):
    return all(all(ok for ok, _, _ in r["fields"].values()) for r in results)


# ---------------------------------------------------------------------------------------------
# nova-fit: `quorum numa fit` answered by nova from the scenario files alone


def nova_fit_main(argv):
    if argv[:2] != ["numa", "fit"]:
        print("usage: differential.py nova-fit numa fit ARGS... -w json", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="nova-fit")
    p.add_argument("--sysfs-root", required=True)
    p.add_argument("--meminfo")
    p.add_argument("--nova-conf")
    p.add_argument("--instances")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--ram", type=int, default=512)
    p.add_argument("--property", action="append", default=[])
    p.add_argument("--image-property", action="append", default=[])
    p.add_argument("-w", "--write-out", default="table")
    a = p.parse_args(argv[2:])
    nova = Nova()
    conf = a.nova_conf
    if not conf:
        conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False).name
    cells = caps_from_sysfs(a.sysfs_root)
    with open(os.path.join(a.sysfs_root, "devices/system/cpu/online")) as f:
        online = parse_list(f.read())
    xml = caps_xml_from_cells(cells)
    specs = [tuple(s.split("=", 1)) for s in a.property]
    image = [tuple(s.split("=", 1)) for s in a.image_property]
    try:
        nova.load_conf(conf)
        js = nova.host_json(xml, online)
        ratios = nova.limits()
    except Exception as e:  # noqa: BLE001
        print("nova-fit: config: %s (nova: %s)" % (e, type(e).__name__), file=sys.stderr)
        return 2
    guests = []
    if a.instances:
        with open(a.instances) as f:
            guests = json.load(f)
    o = nova.objects
    for g in guests:
        cells_ = []
        first = 0
        for c in g["cells"]:
            n_ded = len(c["pcpus"])
            n_sh = c["vcpus"] - n_ded
            vc = list(range(first, first + c["vcpus"]))
            first += c["vcpus"]
            # Dedicated vCPUs after the shared ones: only the pinning order matters to nova.
            shared, ded = set(vc[:n_sh]), vc[n_sh:]
            cell = o.InstanceNUMACell(id=c["node"], cpuset=shared, pcpuset=set(ded), memory=c["memory_mb"], pagesize=c["pagesize_kb"])
            cell.cpu_policy = c["cpu_policy"]
            cell.cpu_thread_policy = c["thread_policy"]
            if ded:
                cell.pin_vcpus(*zip(ded, c["pcpus"]))
            cell.cpuset_reserved = set(c["emulator_pcpus"]) or None
            cells_.append(cell)
        js = nova.add_usage(js, o.InstanceNUMATopology(cells=cells_))
    try:
        topo = nova.constraints(a.vcpus, a.ram, specs, image)
    except Exception as e:  # noqa: BLE001
        print("nova-fit: request: %s (nova: %s)" % (e, type(e).__name__), file=sys.stderr)
        return 2
    if topo is None:
        print(json.dumps({"strategy": nova.strategy(), "fits": True, "cells": [], "reason": None}))
        return 0
    got = nova.fit(js, topo, ratios)
    if got is None:
        print(json.dumps({"strategy": nova.strategy(), "fits": False, "cells": [], "reason": "does not fit"}))
        return 1
    print(json.dumps({"strategy": nova.strategy(), "fits": True, "cells": [cell_answer(i, c) for i, c in enumerate(got.cells)], "reason": None}))
    return 0


# ---------------------------------------------------------------------------------------------
# main


def cmd_generate(a):
    generate(a.seed, a.count, a.out, jobs=a.jobs)
    return 0


def cmd_compare(a):
    t0 = time.time()
    results = compare_dir(a.dir, a.quorum, a.jobs)
    print_table(results, "%s: %d scenarios compared in %.1f s" % (a.dir, len(results), time.time() - t0))
    print_disagreements(results, a.show)
    return 0 if results and all_agree(results) else 1


def cmd_run(a):
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    base = a.out or tempfile.mkdtemp(prefix="quorum-numa-nova-")
    keep = a.keep or bool(a.out)
    everything = []
    gen_total = Counter()
    gen_time = 0.0
    t0 = time.time()
    failed_dirs = []
    for seed in seeds:
        d = os.path.join(base, "seed-%d" % seed)
        st, el = generate(seed, a.count, d, jobs=a.gen_jobs or a.jobs, quiet=True)
        gen_total.update(st)
        gen_time += el
        t1 = time.time()
        results = compare_dir(d, a.quorum, a.jobs)
        ok = all_agree(results)
        missing = missing_coverage(st)
        print(
            "seed %d: %d scenarios, generated in %.1f s, compared in %.1f s: %s%s"
            % (
                seed,
                len(results),
                el,
                time.time() - t1,
                "all agree" if ok else "%d disagree" % sum(1 for r in results if not all(x for x, _, _ in r["fields"].values())),
                " (not covered: %s)" % ", ".join(missing) if missing else "",
            )
        )
        everything.extend(results)
        if not ok:
            failed_dirs.append(d)
        elif not keep:
            shutil.rmtree(d, ignore_errors=True)
        sys.stdout.flush()
    print()
    print_generation_stats(gen_total, "generated: %d scenarios over %d seed(s) in %.1f s" % (gen_total["scenarios"], len(seeds), gen_time))
    print()
    print_table(everything, "summary: %d scenarios, seeds %s, %.1f s" % (len(everything), ",".join(map(str, seeds)), time.time() - t0))
    print_disagreements(everything, a.show)
    ok = bool(everything) and all_agree(everything)
    if not keep and ok:
        shutil.rmtree(base, ignore_errors=True)
    elif not ok:
        print("\nscenarios kept in %s" % (", ".join(failed_dirs) if not keep else base))
    return 0 if ok else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Every set of strings nova builds iterates in the same order, run after run.
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)
    if argv[:1] == ["nova-fit"]:
        return nova_fit_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write scenarios and nova's answers")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--jobs", type=int, default=1, help="generator processes (default 1)")
    g.set_defaults(fn=cmd_generate)
    c = sub.add_parser("compare", help="run quorum on every scenario and compare with nova.json")
    c.add_argument("--dir", required=True)
    c.add_argument("--quorum", required=True, help="the quorum binary (`nova` = nova itself from the files, a self-test)")
    c.add_argument("--jobs", type=int, default=2)
    c.add_argument("--show", type=int, default=10)
    c.set_defaults(fn=cmd_compare)
    r = sub.add_parser("run", help="generate and compare for several seeds; one summary")
    r.add_argument("--seeds", required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--quorum", required=True)
    r.add_argument("--out")
    r.add_argument("--keep", action="store_true")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--gen-jobs", type=int, default=0, help="generator processes (default: --jobs)")
    r.add_argument("--show", type=int, default=10)
    r.set_defaults(fn=cmd_run)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
