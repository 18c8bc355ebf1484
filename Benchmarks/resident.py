#!/usr/bin/env python3
"""Which pages of a running program's own binary are resident, by ELF section and by the module that owns them.

usage: python3 Benchmarks/resident.py PID [BINARY]

BINARY defaults to /proc/PID/exe. The script reads /proc/PID/maps and /proc/PID/pagemap (the "present" bit, which
any user may read for their own processes) for every mapping of the binary, finds the ELF section of each resident
page (readelf -S) and the symbols on it (nm), and names a module from each symbol: Swift symbols by the module in
their mangled name, C and C++ symbols by a few known prefixes (jansson, libyaml, BoringSSL, ICU). A page shared by
several modules is divided among them by symbol count. Pages of other files (libc, libstdc++) and anonymous memory
are not counted here: /proc/PID/smaps has those.

The kernel maps up to 64 KiB of already-cached file pages around each page a process touches ("fault-around"), so
one call into a function can bring 16 pages of its neighbours with it; the per-module figures are where the
resident pages lie, not how much code each module ran.
"""
import bisect
import collections
import re
import struct
import subprocess
import sys

PAGE = 4096


def mappings(pid: int, binary: str) -> list[tuple[int, int, int]]:
    real = subprocess.run(["readlink", "-f", binary], capture_output=True, text=True, check=True).stdout.strip()
    found = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found.append((start, end, int(parts[2], 16)))
    if not found:
        sys.exit(f"resident.py: {real} is not mapped in process {pid}")
    return found


def sections(binary: str) -> list[tuple[int, int, str]]:
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16):
            found.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    return sorted(found)


def symbols(binary: str) -> list[tuple[int, str]]:
    out = subprocess.run(["nm", "-n", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTrRdDbBvVwW":
            found.append((int(parts[0], 16), parts[2]))
    return found


def module(name: str) -> str:
    m = re.match(r"^_?\$s(\d+)([A-Za-z_][A-Za-z0-9_]*)", name)
    if m:
        return m.group(2)[: int(m.group(1))]
    if name.startswith(("$ss", "_$ss")):
        return "Swift standard library"
    if name.startswith(("$s", "_$s")):
        return "Swift (other mangled symbols)"
    if name.startswith(("CNIOBoringSSL", "CCryptoBoringSSL")):
        return "BoringSSL"
    if name.startswith(("json_", "jsonp_", "hashtable_", "strbuffer_", "utf8_")):
        return "jansson"
    if name.startswith("yaml_"):
        return "libyaml"
    if re.search(r"_7[0-9]+$|^u[a-z]+_[0-9]*|icu_[0-9]+", name):
        return "ICU"
    if name.startswith(("_ZN5swift", "swift_", "_swift_")):
        return "Swift runtime"
    if name.startswith("_Z"):
        return "C++ (other)"
    return "C (other)"


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    pid = int(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) == 3 else f"/proc/{pid}/exe"
    maps = mappings(pid, binary)
    base = min(start - offset for start, _, offset in maps)  # the load address of a PIE, 0 otherwise
    section_list = sections(binary)
    section_starts = [s[0] for s in section_list]
    symbol_list = symbols(binary)
    symbol_starts = [s[0] for s in symbol_list]
    code_and_data = {".text", ".rodata", ".data.rel.ro", ".data"}
    by_section = collections.Counter()
    by_module = collections.Counter()
    total = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, _ in maps:
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            for i in range((end - start) // PAGE):
                (entry,) = struct.unpack_from("<Q", entries, i * 8)
                if not entry >> 63 & 1:
                    continue
                total += 1
                address = start + i * PAGE - base
                j = bisect.bisect_right(section_starts, address) - 1
                section = "(between sections)"
                if j >= 0 and address < section_list[j][0] + section_list[j][1]:
                    section = section_list[j][2]
                by_section[section] += 1
                if section not in code_and_data:
                    continue
                lo = max(bisect.bisect_right(symbol_starts, address) - 1, 0)
                hi = bisect.bisect_left(symbol_starts, address + PAGE)
                owners = collections.Counter(module(symbol_list[k][1]) for k in range(lo, max(hi, lo + 1)))
                count = sum(owners.values())
                for name, n in owners.items():
                    by_module[f"{section} {name}"] += n / count
    mib = PAGE / 1048576
    print(f"resident pages of {binary} in process {pid}: {total} ({total * mib:.1f} MiB)\n")
    print("| section | MiB |\n|---|---:|")
    for name, n in by_section.most_common(12):
        print(f"| {name} | {n * mib:.2f} |")
    print("\n| section and module | MiB |\n|---|---:|")
    for name, n in by_module.most_common(25):
        print(f"| {name} | {n * mib:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
