"""Renders benches/run's collected result lines as one Markdown table.

Usage: report.py MACHINE RESULTS
  MACHINE  key=value lines about the machine and the run
  RESULTS  the `bench: ...` lines of every benchmark (see benches/README.md)
"""

import re
import sys

# Columns in this order, then any other subject in order of appearance.
ORDER = ["procward", "tini", "dumb-init", "catatonit", "pm2", "pm2-1s", "pm2-noreload", "pm2-fork", "bare"]
HEADERS = {
    "pm2": "PM2 7",
    "pm2-1s": "PM2 7, 1 s worker interval",
    "pm2-noreload": "PM2 7 cluster, no reload",
    "pm2-fork": "PM2 7 fork mode",
    "bare": "floor (no supervisor)",
}


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def fmt(v):
    if v is None:
        return "?"
    if abs(v) >= 100 or v == int(v):
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}".rstrip("0").rstrip(".")


def verdict(target, values):
    """'met' or 'missed' for procward against TARGET: `<= N`, `<= SUBJECT`,
    `<= Fx SUBJECT`; empty when there is no target or nothing to compare."""
    m = re.fullmatch(r"<=\s*(?:([0-9.]+)x\s+)?(\S+)", target.strip())
    mine = values.get("procward")
    if not m or mine is None:
        return ""
    factor, ref = m.groups()
    bound = number(ref)
    if bound is None:
        if values.get(ref) is None:
            return ""
        bound = values[ref] * (float(factor) if factor else 1.0)
    return "met" if mine <= bound else "**missed**"


def main():
    machine = dict(line.rstrip("\n").split("=", 1) for line in open(sys.argv[1]) if "=" in line)
    figures, values, notes, ran = {}, {}, [], []
    for line in open(sys.argv[2]):
        line = line.rstrip("\n")
        if not line.startswith("bench: "):
            continue
        kind, _, rest = line[len("bench: "):].partition(" ")
        fields = [f.strip() for f in rest.split("|")]
        if kind == "figure" and len(fields) >= 5:
            fid, title, unit, ref, target = fields[:5]
            figures[fid] = dict(title=title, unit=unit, ref=ref, target=target)
            values.setdefault(fid, {})
        elif kind == "value" and len(fields) >= 3:
            values.setdefault(fields[0], {})[fields[1]] = number(fields[2])
        elif kind == "note":
            notes.append(rest.strip())
        elif kind == "ran" and len(fields) >= 5:
            ran.append(fields)

    subjects = []
    for fid in figures:
        for s in values[fid]:
            if s not in subjects:
                subjects.append(s)
    seen = list(subjects)
    subjects.sort(key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), seen.index(s)))

    out = []
    out.append(f"# procward benchmarks, {machine.get('started', '?')}")
    out.append("")
    out.append(f"- run: `benches/run{' --quick' if machine.get('mode') == 'quick' else ''}`, "
               f"{machine.get('mode', '?')} mode, {machine.get('seconds', '?')} s")
    out.append(f"- machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
               f"{machine.get('memory', '?')}, Linux {machine.get('kernel', '?')}")
    out.append(f"- load average (1, 5, 15 min): {machine.get('load_before', '?')} before, "
               f"{machine.get('load_after', '?')} after")
    out.append(f"- {machine.get('procward', '?')}")
    out.append(f"- peers: {machine.get('peers', '?')}")
    out.append("")
    out.append("Medians; in brackets, the ratio to the figure's reference (the `ref` column).")
    out.append("")
    out.append("| figure | " + " | ".join(HEADERS.get(s, s) for s in subjects) + " | ref | target | procward |")
    out.append("|---|" + "---|" * len(subjects) + "---|---|---|")
    for fid, f in figures.items():
        vals = values[fid]
        refv = vals.get(f["ref"])
        cells = []
        for s in subjects:
            v = vals.get(s, "")
            if v == "":
                cells.append("")
                continue
            unit = f["unit"]
            cell = f"{fmt(v)}{unit}" if unit == "x" else f"{fmt(v)} {unit}".strip()
            if v is not None and refv and refv > 0 and s != f["ref"] and v >= 0:
                cell += f" ({v / refv:.2f}x)"
            cells.append(cell)
        out.append(f"| {f['title']} | " + " | ".join(cells)
                   + f" | {HEADERS.get(f['ref'], f['ref'])} | {f['target']} | {verdict(f['target'], vals)} |")
    out.append("")
    out.append("| benchmark | seconds | load before | load after | exit |")
    out.append("|---|---|---|---|---|")
    for name, secs, l0, l1, rc in ran:
        status = {"0": "ok", "124": "stopped at its time limit"}.get(rc, f"failed ({rc})")
        out.append(f"| {name} | {secs} | {l0} | {l1} | {status} |")
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
