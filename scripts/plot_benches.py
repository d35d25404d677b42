"""Plots the benches' JSON (target/bench-*.json) into one PNG per section of docs/benchmarks.md.

Run through `scripts/plot-benches`, which installs matplotlib into target/plot-venv first.

  relay    target/bench-relay.json    -> docs/bench-relay.png
  serve    target/bench-serve.json    -> docs/bench-serve.png
  http     target/bench-http.json     -> docs/bench-http.png
  standby  target/bench-standby.json  -> docs/bench-standby.png

Every bench writes a `machine` object and its figures: `results` (medians per column) for the
relay, `figures` ({value or mcpvisor, cells, target, met}) for the others. The plots take their
numbers from there (the HTTP peers' from the rounds in `fronts`, with the bench's own medians) and
their targets from the figures' `target` strings: no number is typed in here. A missing JSON
file is skipped with a message.
"""

import argparse
import json
import math
import re
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import NullFormatter  # noqa: E402

# Muted colours, one per thing compared, the same in every plot.
COLOURS = {
    "mcpvisor": "#4c72b0",
    "baseline": "#93b5d9",
    "direct": "#9a9a9a",
    "socat": "#c9a66b",
    "supergateway": "#dd8452",
    "mcp-proxy": "#8172b3",
    "with standby": "#4c72b0",
    "without": "#9a9a9a",
    "not met": "#c44e52",
}
TARGET = "#333333"
BAND = "#55a868"

# 9 inches at 100 dpi: 900 px wide.
WIDTH_IN = 9.0
DPI = 100

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.grid.axis": "y",
        "axes.axisbelow": True,
        "grid.color": "#e3e3e3",
        "grid.linewidth": 0.8,
        "legend.frameon": False,
    }
)

# ---------------------------------------------------------------------------------------------
# Helpers


class Skip(Exception):
    """A section whose JSON has nothing to plot."""


def median(values):
    """The benches' median: the upper middle value (`v[len / 2]` after sorting)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def machine_text(machine):
    """The JSON's `machine` field as a short phrase ("2 cores")."""
    if isinstance(machine, str):
        return machine
    if not isinstance(machine, dict) or not machine:
        return "machine unknown"
    parts = []
    for key, value in machine.items():
        parts.append(f"{value} cores" if key == "cores" else f"{key} {value}")
    return ", ".join(parts)


def config_text(config):
    """A bench's `config` object as one line ("rounds 5 · round trips 2000")."""
    if not config:
        return ""
    return " · ".join(f"{key.replace('_', ' ')} {value}" for key, value in config.items())


def human(value, thousands=False):
    """A number with about three significant digits; with `thousands`, 1000 and up in k and M."""
    if value is None:
        return "–"
    # The unit chosen after rounding, so that 999 994 is "1 M", not "1e+03 k".
    rounded = abs(float(f"{value:.3g}"))
    if thousands and rounded >= 1e6:
        return f"{value / 1e6:.3g} M"
    if thousands and rounded >= 1e3:
        return f"{value / 1e3:.3g} k"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def tick(value, _position=None):
    """An axis tick: 0.5, 25, 800, 1.2 M."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g} k"
    return f"{value:g}"


def with_unit(value, unit):
    """A value and its unit (counts and rates in k and M), with no space before `/s`."""
    text = human(value, thousands=unit in ("/s", "", "MB/s"))
    if unit == "/s":
        return f"{text}/s"
    return f"{text} {unit}" if unit else text


def target_text(text):
    """A target as the JSON spells it (`<= +150 us`) the way the docs do (`≤ +150 µs`)."""
    return re.sub(r"\bus\b", "µs", text.replace("<=", "≤").replace(">=", "≥"))


# Units a target or a key may be in, each as a factor to a base (bytes, seconds, 1).
UNITS = {
    "MiB": 1024 * 1024,
    "KiB": 1024,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "/s": 1.0,
}
KEY_UNITS = {"_mib": "MiB", "_kib": "KiB", "_ms": "ms", "_us": "us", "_per_sec": "/s"}


def key_unit(key):
    """The unit a figure's value is in, from its key's suffix (`idle_rss_mib` -> MiB)."""
    for suffix, unit in KEY_UNITS.items():
        if key.endswith(suffix):
            return unit
    return ""


def shown_unit(unit):
    """A unit as a reader expects it (µs, not us)."""
    return "µs" if unit == "us" else unit


def parse_target(text):
    """A numeric target such as `<= 16 MiB`, `>= 15000/s` or `<= +150 us` as (op, number, unit).

    None for targets that are not a bound on a number ("no growth", "every round", "all").
    """
    match = re.fullmatch(r"\s*(<=|>=)\s*\+?(-?[\d.]+)\s*(MiB|KiB|ms|us|µs|s|/s)?\s*", text or "")
    if not match:
        return None
    return match.group(1), float(match.group(2)), match.group(3) or ""


def convert(number, unit, to_unit):
    """`number` in `unit` expressed in `to_unit` (unchanged if either is unknown)."""
    if unit == to_unit or unit not in UNITS or to_unit not in UNITS:
        return number
    return number * UNITS[unit] / UNITS[to_unit]


def target_label(op, number, unit):
    """A parsed target as a label: "target ≤ 16 MiB", "target ≥ 15 k/s"."""
    sign = "≤" if op == "<=" else "≥"
    if unit == "/s":
        return f"target {sign} {human(number, thousands=True)}/s"
    return f"target {sign} {number:g}" + (f" {shown_unit(unit)}" if unit else "")


def label_bars(ax, bars, texts, log=False, above=None):
    """Writes `texts` above `bars` and leaves room for them at the top of the axes. A label that
    would sit on the line at `above` (a target) goes just over the line instead."""
    low, high = ax.get_ylim()
    high = high * 3 if log else high * 1.15
    ax.set_ylim(low, high)
    for bar, text in zip(bars, texts):
        top = bar.get_height()
        if above is not None and top < above:
            span = (math.log10(high) - math.log10(low)) if log else high - low
            gap = (math.log10(above) - math.log10(top)) if log else above - top
            if gap < 0.08 * span:
                top = above
        ax.annotate(text, xy=(bar.get_x() + bar.get_width() / 2, top), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)


def log_axis(ax, lowest):
    """A logarithmic y axis from the power of ten below `lowest`, with plain tick labels (1, 10,
    100, 10 k) rather than powers of ten."""
    ax.set_yscale("log")
    ax.set_ylim(bottom=10 ** math.floor(math.log10(lowest * 0.9)))
    ax.yaxis.set_major_formatter(tick)
    ax.yaxis.set_minor_formatter(NullFormatter())


def target_line(ax, y, text):
    """A dashed horizontal target line across the axes, labelled at its right end."""
    ax.axhline(y, color=TARGET, linestyle="--", linewidth=1.1, zorder=3)
    ax.annotate(
        text, xy=(0.99, y), xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
        ha="right", va="bottom", fontsize=8.5, color=TARGET, zorder=6,
        bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )


def finish(fig, section, data, out, note=""):
    """Titles the figure with the section and the machine, puts `note` and the bench's
    configuration at the bottom, and saves it."""
    run = config_text(data.get("config"))
    fig.suptitle(f"{section} — {machine_text(data.get('machine'))}", fontsize=13, fontweight="bold")
    lines = [textwrap.fill(text, 150) for text in (note, f"run: {run}" if run else "") if text]
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=8.5, color="#555555")
    fig.savefig(out, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Sections


def plot_relay(data, out):
    """Relay: mcpvisor against direct pipes (and the baseline build and socat when present),
    one subplot per figure since their units differ; each bar labelled with its ratio to direct."""
    results = data["results"]
    columns = [c for c in ("direct", "mcpvisor", "baseline", "socat") if c in results]
    columns += sorted(c for c in results if c not in columns)
    names = {"baseline": "baseline\nbuild"}
    figures = [
        ("rtt_p50_us", "round trip p50 (µs, lower is better)", "µs"),
        ("rtt_p99_us", "round trip p99 (µs, lower is better)", "µs"),
        ("pipelined_requests_per_sec", "pipelined small requests/s (higher is better)", "/s"),
        ("stateless_pipelined_requests_per_sec", "the same, stateless era (higher is better)", "/s"),
        ("mib_messages_mb_per_sec", "1 MiB messages, MB/s (higher is better)", "MB/s"),
        ("relay_cpu_ns_per_request", "relay CPU per pipelined request (ns, lower is better)", "ns"),
    ]
    figures = [f for f in figures if any(results[c].get(f[0]) is not None for c in columns)]
    rows = (len(figures) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(WIDTH_IN, 3.3 * rows), layout="constrained")
    for ax in list(axes.flat)[len(figures):]:
        ax.set_visible(False)
    for ax, (key, title, unit) in zip(axes.flat, figures):
        shown = [c for c in columns if results[c].get(key) is not None]
        values = [results[c][key] for c in shown]
        direct = results.get("direct", {}).get(key)
        bars = ax.bar(
            [names.get(c, c) for c in shown],
            values,
            color=[COLOURS.get(c, "#bbbbbb") for c in shown],
            width=0.6,
        )
        texts = []
        for c, v in zip(shown, values):
            text = human(v, thousands=True)
            if direct and c != "direct":
                text += f"\n{v / direct:.2f}×"
            texts.append(text)
        label_bars(ax, bars, texts)
        ax.set_title(title)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.yaxis.set_major_formatter(tick)
    rounds = data.get("rounds")
    note = "medians" + (f" over {rounds} rounds" if rounds else "") + "; ratios are to direct pipes in the same run"
    if "baseline" in results:
        note += "; baseline: another mcpvisor build (MCPVISOR_BENCH_BASELINE)"
    finish(fig, "Relay (mcpvisor run)", data, out, note)


SERVE_LABELS = {
    "idle_rss_mib": "idle RSS, {servers} lazy servers",
    "rss_per_started_server_kib": "RSS per started server ({clients} clients)",
    "shared_rtt_connect_minus_run_ms": "round trip, connect − run (shared server)",
    "churn_rss_growth_kib": "churn, {cycles} cycles: RSS growth",
    "churn_fd_growth": "descriptors",
    "churn_thread_growth": "threads",
    "churn_child_growth": "child processes",
}


def plot_serve(data, out):
    """The daemon: every figure with a numeric target as a bar against its target line (in the
    order of the docs' table); the figures with other targets ("no growth") listed underneath."""
    config = data.get("config", {})
    figures = data["figures"]
    order = list(SERVE_LABELS)
    keys = sorted(figures, key=lambda k: (order.index(k) if k in order else len(order), k))

    def label(key):
        return SERVE_LABELS.get(key, key.replace("_", " ")).format_map(defaultdict(lambda: "?", config))

    bounded = [
        k for k in keys if parse_target(figures[k].get("target")) and isinstance(figures[k].get("value"), (int, float))
    ]
    if not bounded:
        raise Skip("no figure with a numeric target")
    others = [k for k in keys if k not in bounded and figures[k].get("target") and figures[k].get("met") is not None]
    fig, axes = plt.subplots(
        len(bounded), 1, figsize=(WIDTH_IN, 1.35 * len(bounded) + 1.5), layout="constrained", squeeze=False
    )
    for ax, key in zip(axes[:, 0], bounded):
        figure = figures[key]
        op, number, unit = parse_target(figure["target"])
        value_unit = key_unit(key)
        value, limit = figure["value"], convert(number, unit, value_unit)
        met = figure.get("met")
        ax.barh([0], [value], color=COLOURS["not met"] if met is False else COLOURS["mcpvisor"], height=0.55)
        ax.axvline(limit, color=TARGET, linestyle="--", linewidth=1.2)
        verdict = {True: "met", False: "not met"}.get(met)
        shown = shown_unit(value_unit)
        ax.text(value, 0, f"  {with_unit(value, shown)}" + (f" — {verdict}" if verdict else ""),
                va="center", ha="left", fontsize=9.5)
        ax.annotate(target_label(op, number, unit), xy=(limit, 0.5), xycoords=("data", "axes fraction"),
                    xytext=(-4, 0), textcoords="offset points", ha="right", va="center", fontsize=8.5, color=TARGET)
        ax.set_xlim(min(0, value) * 1.2, max(value, limit) * 1.12)
        ax.set_ylim(-0.6, 0.6)
        ax.set_yticks([])
        ax.grid(axis="x")
        ax.grid(axis="y", visible=False)
        ax.spines["left"].set_visible(False)
        ax.xaxis.set_major_formatter(lambda v, _pos, shown=shown: f"{tick(v)} {shown}" if v else "0")
        ax.set_title(label(key), loc="left")
    # The rest, grouped by target: "churn, 100 cycles, no growth (met): descriptors +0, ...".
    groups = {}
    for key in others:
        figure = figures[key]
        groups.setdefault((target_text(figure["target"]), figure["met"]), []).append(
            f"{label(key)} {figure['value']:+g}" if isinstance(figure["value"], (int, float)) else label(key))
    cycles = f"churn, {config['cycles']} cycles, " if "cycles" in config else ""
    note = "; ".join(
        f"{cycles}{target} ({'met' if met else 'not met'}): {', '.join(items)}"
        for (target, met), items in groups.items()
    )
    finish(fig, "The daemon (mcpvisor serve)", data, out, note)


def front_names(fronts):
    """The HTTP fronts in the bench's order (mcpvisor, the peers), then direct."""
    known = ["mcpvisor", "supergateway", "mcp-proxy"]
    names = [n for n in known if n in fronts] + sorted(n for n in fronts if n not in known and n != "direct")
    return names + (["direct"] if "direct" in fronts else [])


HTTP_LABELS = {
    "sessions_rss_mib": "RSS, {sessions} idle sessions",
    "streams_rss_mib": "RSS, + {streams} open SSE streams",
    "streams_open": "SSE streams open",
}


def plot_http(data, out):
    """The HTTP front: mcpvisor, supergateway and mcp-proxy side by side (and direct pipes for the
    throughput), the figures' targets as dashed lines, mcpvisor-only figures with a target listed
    underneath. The peers' numbers are the bench's medians over the rounds in `fronts`."""
    fronts, figures, config = data["fronts"], data["figures"], data.get("config", {})
    names = front_names(fronts)
    ok = [n for n in names if not fronts[n]["rounds"].get("failed") and fronts[n]["rounds"].get("p50_us")]
    peers = [n for n in ok if n != "direct"]
    direct = fronts["direct"]["rounds"] if "direct" in ok else None

    def added(name, pick):
        rounds = fronts[name]["rounds"]
        if direct is None:
            return median(rounds[pick])
        return median([f - d for f, d in zip(rounds[pick], direct[pick])])

    panels = [
        ("rtt_p50_added_us", "round trip p50, added to direct (µs)", peers,
         lambda n: added(n, "p50_us"), "µs", False),
        ("requests_per_sec_16", f"requests/s, {config.get('in_flight', 16)} in flight, one session (log)", ok,
         lambda n: median(fronts[n]["rounds"]["per_sec"]), "/s", True),
        ("front_cpu_us_per_request", "front's CPU per request (µs)", peers,
         lambda n: median(fronts[n]["rounds"]["cpu_us"]), "µs", False),
        ("front_rss_mib", "front's RSS after the runs (MiB)", [n for n in peers if fronts[n].get("rss_kib")],
         lambda n: fronts[n]["rss_kib"] / 1024, "MiB", False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH_IN, 6.8), layout="constrained")
    for ax, (key, title, shown, value_of, unit, log) in zip(axes.flat, panels):
        values = [value_of(n) for n in shown]
        bars = ax.bar(shown, values, color=[COLOURS.get(n, "#bbbbbb") for n in shown], width=0.6)
        if log:
            log_axis(ax, min(values))
        else:
            ax.yaxis.set_major_formatter(tick)
        target = parse_target(figures.get(key, {}).get("target"))
        limit = None
        if target:
            op, number, target_unit = target
            limit = convert(number, target_unit, "us" if unit == "µs" else unit)
            ax.set_ylim(top=max(ax.get_ylim()[1], limit * 1.2))
            target_line(ax, limit, target_label(op, number, target_unit))
        label_bars(ax, bars, [with_unit(v, unit) for v in values], log=log, above=limit)
        if not log:
            ax.set_ylim(bottom=0)
        if key == "rtt_p50_added_us" and direct is not None:
            ax.text(0.01, 0.97, f"direct: {with_unit(median(direct['p50_us']), 'µs')}", transform=ax.transAxes,
                    va="top", fontsize=8.5, color="#555555")
        ax.set_title(title)
    plotted = {panel[0] for panel in panels}
    known_config = defaultdict(lambda: "?", config)
    listed = [
        f"{HTTP_LABELS.get(key, key.replace('_', ' ')).format_map(known_config)} {figure['cells'][0]} "
        f"({target_text(figure['target'])}: {'met' if figure['met'] else 'not met'})"
        for key, figure in figures.items()
        if key not in plotted and figure.get("target") and figure.get("met") is not None
    ]
    rounds = config.get("rounds")
    note = f"medians over {rounds} rounds" if rounds else "medians"
    if listed:
        note += "; mcpvisor only: " + ", ".join(listed)
    finish(fig, "The HTTP front (serve --http)", data, out, note)


def standby_bars(ax, title, value, rounds, target):
    """With standby against without (log scale, ms): the medians as bars, the rounds as dots,
    and a `<= A / >= B` target as one dashed mark over each bar, named under it."""
    keys = ["with_standby", "without"]
    medians = [value[k] for k in keys]
    parts = [parse_target(part) for part in (target or "").split("/")]
    if not (len(parts) == 2 and all(parts)):
        parts = [None, None]
    labels = [
        name + (f"\n({target_label(*part)})" if part else "") for name, part in zip(["with standby", "without"], parts)
    ]
    bars = ax.bar(labels, medians, color=[COLOURS["with standby"], COLOURS["without"]], width=0.55)
    log_axis(ax, min(medians + [p for k in keys for p in (rounds or {}).get(k) or []]))
    for x, key in enumerate(keys):
        points = (rounds or {}).get(key) or []
        ax.scatter([x] * len(points), points, s=14, color="#222222", alpha=0.55, zorder=4, linewidths=0)
    for x, part in enumerate(parts):
        if part:
            ax.hlines(convert(part[1], part[2], "ms"), x - 0.42, x + 0.42, color=TARGET, linestyle="--",
                      linewidth=1.2, zorder=5)
    label_bars(ax, bars, [with_unit(v, "ms") for v in medians], log=True)
    ax.set_ylabel("ms (log)")
    ax.set_title(title)


def standby_ratio(ax, figure):
    """The round trip p50 with a warm spare ÷ without, every process pinned to one vCPU: the
    rounds as dots, their median as a line, the target as a shaded band."""
    value = figure["value"]
    ratios = value.get("ratios") or [value["ratio"]]
    band = re.search(r"([\d.]+)\s*[-–]\s*([\d.]+)", figure.get("target") or "")
    low, high = min(ratios), max(ratios)
    if band:
        band_low, band_high = float(band.group(1)), float(band.group(2))
        low, high = min(low, band_low), max(high, band_high)
        ax.axhspan(band_low, band_high, color=BAND, alpha=0.16, linewidth=0)
        ax.annotate(f"target {band_low:g}–{band_high:g}×", xy=(0.99, band_high), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8.5,
                    color="#2f6b3d")
    rounds = list(range(1, len(ratios) + 1))
    ax.scatter(rounds, ratios, s=30, color=COLOURS["mcpvisor"], zorder=4)
    ax.axhline(value["ratio"], color=COLOURS["mcpvisor"], linewidth=1.4, zorder=3)
    ax.set_ylim(low - 0.08, high + 0.08)
    ax.set_xlim(0.5, len(ratios) + 0.5)
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("with spare ÷ without")
    ax.set_title("round trip p50, with a warm spare ÷ without\n(every process on one vCPU)")
    ax.text(0.99, 0.03, f"line: median {value['ratio']:.2f}× (p50 {value['with_standby']:.1f} µs with a spare, "
            f"{value['without']:.1f} µs without)", transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5,
            color="#555555")


def plot_standby(data, out):
    """Hot standby: with standby against without for a crash and for a new `connect` client
    (log scale, ms), npx server-everything when it ran, and the pinned round-trip ratio with a
    spare against its 0.9–1.1 band."""
    figures = data["figures"]
    crash, pool = data.get("crash", {}), data.get("pool", {})
    crash_rounds = {k: [r["ms"] for r in crash.get(k, [])] for k in ("with_standby", "without")}
    pool_rounds = {"with_standby": pool.get("pooled_ms"), "without": pool.get("plain_ms")}
    panels = []
    for key, title, rounds in [
        ("crash_to_answer_ms", "crash → next request answered", crash_rounds),
        ("connect_to_initialize_answer_ms", "new connect client → initialize answered", pool_rounds),
        ("everything_crash_to_answer_ms", "npx server-everything: crash → answered", None),
    ]:
        if key in figures:
            f = figures[key]
            panels.append(lambda ax, f=f, title=title, rounds=rounds: standby_bars(
                ax, title, f["value"], rounds, f.get("target")))
    if "rtt_p50_one_cpu_us" in figures:
        panels.append(lambda ax: standby_ratio(ax, figures["rtt_p50_one_cpu_us"]))
    # Two panels a row; an odd last one takes the whole row.
    names = [chr(ord("a") + i) for i in range(len(panels))]
    mosaic = [names[i:i + 2] if i + 1 < len(names) else [names[i]] * 2 for i in range(0, len(names), 2)]
    fig, axes = plt.subplot_mosaic(mosaic, figsize=(WIDTH_IN, 3.7 * len(mosaic) + 0.9), layout="constrained")
    for name, draw in zip(names, panels):
        draw(axes[name])
    notes = ["bars: medians; dots: single rounds"]
    everything = figures.get("everything_crash_to_answer_ms", {}).get("value", {})
    if "promoted" in everything:
        notes.append(f"npx server-everything: the spare was promoted in {everything['promoted']} rounds")
    finish(fig, "Hot standby (--standby)", data, out, "; ".join(notes))


SECTIONS = [
    ("relay", plot_relay),
    ("serve", plot_serve),
    ("http", plot_http),
    ("standby", plot_standby),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("target"), help="where bench-*.json are (target)")
    parser.add_argument("--output", type=Path, default=Path("docs"), help="where bench-*.png go (docs)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for name, plot in SECTIONS:
        source = args.input / f"bench-{name}.json"
        if not source.exists():
            print(f"plot-benches: {source} not found (run `cargo bench --bench {name}`): skipped", file=sys.stderr)
            continue
        out = args.output / f"bench-{name}.png"
        try:
            plot(json.loads(source.read_text()), out)
        except Skip as why:
            print(f"plot-benches: {source}: {why}: skipped", file=sys.stderr)
            continue
        print(f"plot-benches: {source} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
