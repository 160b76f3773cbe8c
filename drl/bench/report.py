"""Targets checked against measured values, memory peaks gathered from every measurement, and the tables."""

from __future__ import annotations

import sys

TARGETS = {  # from the issue; compared with measured values only
    "pong_cap_share": 0.90,  # drl steps/s at SB3's hyperparameters >= 90% of the update floor's cap
    "pong_time_to_18_vs_sb3": 5.0,  # drl's default reaches Pong 18 >= 5x sooner than SB3 at its zoo hyperparameters
    "update_share": 0.90,  # drl update >= 90% of the plain-torch floor's speed (floor_ms / drl_ms)
    "atari_vecenv_sps": 2700.0,  # AtariVecEnv steps/s (best env count)
    "doom_vecenv_sps": 5000.0,  # DoomVectorEnv steps/s (best env count)
    "doom_drqn_vs_sb3": 2.0,  # drl DRQN env steps/s >= 2x SB3 DQN on Doom
}


def memory_peaks(result: dict) -> dict:
    """Peak memory of every measurement process (MiB), and of its child processes where it had worker processes."""
    peaks = {}
    for section in ("pong", "doom"):
        for device, res in result[section].items():
            for name, r in res.items():
                if isinstance(r, dict) and "peak_rss_mb" in r:
                    peaks[f"{section}/{device}/{name}"] = r["peak_rss_mb"]
                    if r.get("peak_rss_children_mb"):
                        peaks[f"{section}/{device}/{name} (child processes)"] = r["peak_rss_children_mb"]
                    if r.get("cuda_peak_mb"):
                        peaks[f"{section}/{device}/{name} (cuda)"] = r["cuda_peak_mb"]
    for device, r in result["update"].items():
        if "peak_rss_mb" in r:
            peaks[f"update/{device}"] = r["peak_rss_mb"]
    for device, res in result["vecenv"].items():
        for kind, r in res.items():
            if "peak_rss_mb" in r:
                peaks[f"vecenv/{device}/{kind}"] = r["peak_rss_mb"]
                if any(c.get("workers") for c in r["counts"].values()):  # an env with worker processes (Doom)
                    peaks[f"vecenv/{device}/{kind} (worker processes)"] = r["peak_rss_children_mb"]
    return peaks


def update_caps(result: dict) -> dict:
    """Per device: the most env steps/s any implementation of SB3's Pong hyperparameters can reach, given the plain
    torch update floor (one batch-32 update per ``train_freq`` env steps, everything else free):
    ``cap = train_freq / floor time``; and drl's measured steps/s there as a share of it."""
    out = {}
    for device, res in result["pong"].items():
        drl = res.get("drl_same_hp", {})
        if "sps" not in drl:
            continue
        precision = "bf16" if drl.get("bf16") else "fp32"
        case = next(
            (
                c
                for c in result["update"].get(device, {}).get("cases", {}).values()
                if c["batch_size"] == drl["batch_size"] and c["precision"] == precision
            ),
            None,
        )
        if case is None:
            continue
        cap = drl["train_freq"] / (case["floor_ms"] / 1000)
        out[device] = {
            "cap_sps": cap,
            "drl_sps": drl["sps"],
            "share": drl["sps"] / cap,
            "precision": precision,
            "floor_ms": case["floor_ms"],
        }
    return out


def targets(result: dict) -> list[dict]:
    rows = []

    def add(name: str, what: str, measured, target: float, where: str):
        rows.append(
            {
                "name": name,
                "what": what,
                "where": where,
                "measured": measured,
                "target": target,
                "pass": None if measured is None else bool(measured >= target),
            }
        )

    for device, cap in update_caps(result).items():
        add(
            "pong_cap_share",
            f"drl steps/s at SB3's hyperparameters / the update floor's cap ({cap['cap_sps']:,.0f})",
            cap.get("share"),
            TARGETS["pong_cap_share"],
            device,
        )
    for device, row in result.get("time_to_18", {}).items():
        add(
            "pong_time_to_18_vs_sb3",
            "SB3 zoo minutes / drl default minutes to Pong 18 (training returns)",
            row.get("ratio"),
            TARGETS["pong_time_to_18_vs_sb3"],
            device,
        )
    for device, res in result["update"].items():
        for case in res.get("cases", {}).values():
            if case["drl_default_precision"]:
                add(
                    "update_share",
                    f"floor / drl time per update, batch {case['batch_size']} {case['precision']}",
                    case["share"],
                    TARGETS["update_share"],
                    device,
                )
    for device, res in result["vecenv"].items():
        for kind, key in (("atari", "atari_vecenv_sps"), ("doom", "doom_vecenv_sps")):
            counts = res.get(kind, {}).get("counts")
            best = max(counts.values(), key=lambda r: r["sps"]) if counts else None
            add(
                key,
                f"{kind} vector env steps/s (best: {best['num_envs'] if best else '-'} envs)",
                best["sps"] if best else None,
                TARGETS[key],
                device,
            )
    for device, res in result["doom"].items():
        add(
            "doom_drqn_vs_sb3",
            "drl DRQN / SB3 DQN steps/s on Doom health_gathering",
            res.get("ratio_drqn_vs_sb3"),
            TARGETS["doom_drqn_vs_sb3"],
            device,
        )
    return rows


def _fmt(value, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    return format(value, spec)


def print_report(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text fallback
        Console = Table = None

    tables = []

    def table(title: str, columns: list[str], rows: list[list[str]]):
        if rows:  # sections left out by --only print nothing
            tables.append((title, columns, rows))

    m = result["meta"]["machine"]
    table(
        "Machine",
        ["field", "value"],
        [
            ["cpu", f"{m['cpu']} ({m['cores_usable']}/{m['cores']} cores)"],
            ["torch", m["torch"]],
            ["bf16 on CPU", f"native={m['cpu_bf16_native']} amx={m['amx']} avx512_bf16={m['avx512_bf16']}"],
            ["cuda", m.get("cuda_device", "none")],
            ["stable-baselines3", str(m.get("stable_baselines3"))],
            ["load before / after", f"{result['meta']['load_before']} / {result['meta']['load_after']}"],
            [
                "mode",
                f"quick={result['meta']['quick']} steps={result['meta']['steps']} "
                f"repeats={result['meta']['repeats']} learning_starts={result['meta']['learning_starts']}",
            ],
        ],
    )

    rows = []
    for section in ("pong", "doom"):
        for device, res in result[section].items():
            for name, r in res.items():
                if not isinstance(r, dict):
                    continue
                if "sps" in r:
                    rows.append(
                        [
                            section,
                            device,
                            name,
                            _fmt(r["sps"]),
                            f"{r['sps_min']:,.0f}-{r['sps_max']:,.0f}",
                            _fmt(r["updates_per_s"], ",.1f"),
                            f"{r['num_envs']} / {r['batch_size']} / {r['train_freq']}",
                            "bf16" if r.get("bf16") else "fp32",
                            _fmt(r.get("peak_rss_mb")),
                        ]
                    )
                else:
                    rows.append(
                        [
                            section,
                            device,
                            name,
                            r.get("skipped") or "ERROR " + r.get("error", "")[:60],
                            "",
                            "",
                            "",
                            "",
                            "",
                        ]
                    )
    table(
        "Training speed (env steps/s after learning_starts, median of repeats)",
        ["world", "device", "run", "steps/s", "range", "updates/s", "envs / batch / freq", "prec", "peak MiB"],
        rows,
    )

    rows = [
        [
            device,
            c["precision"],
            _fmt(c["floor_ms"], ".2f"),
            _fmt(c["cap_sps"]),
            _fmt(c["drl_sps"]),
            _fmt(100 * c["share"], ".0f") + "%",
        ]
        for device, c in update_caps(result).items()
    ]
    table(
        "Pong at SB3's hyperparameters (batch 32 every 4 steps): drl against the update floor's cap",
        ["device", "precision", "floor ms / update", "cap steps/s", "drl steps/s", "share"],
        rows,
    )

    rows = []
    for device, t in result.get("time_to_18", {}).items():
        rows.append(
            [
                device,
                _fmt(t.get("drl_steps")),
                _fmt(t.get("drl_sps"), ",.1f"),
                _fmt(t.get("drl_minutes"), ",.1f"),
                _fmt(t["sb3_steps"]),
                _fmt(t.get("sb3_sps"), ",.1f"),
                _fmt(t.get("sb3_minutes"), ",.1f"),
                _fmt(t.get("ratio"), ".2f") + ("" if "skipped" not in t else f" ({t['skipped']})"),
            ]
        )
    table(
        "Minutes to Pong 18 (10 training games), steps to it from training logs / steps/s measured here: "
        "drl default (median of the committed runs of its config) vs SB3 zoo (its published log)",
        ["device", "drl steps", "drl steps/s", "drl min", "SB3 steps", "SB3 steps/s", "SB3 min", "SB3 / drl"],
        rows,
    )

    rows = [
        [
            section,
            device,
            _fmt(res["overlap_gain"], ".3f"),
            "on" if res["overlap_auto"] else "off",
            "yes" if res["overlap_auto_faster"] else "no",
        ]
        for section in ("pong", "doom")
        for device, res in result[section].items()
        if "overlap_gain" in res
    ]
    table(
        "Env stepping overlapped with learning: steps/s with / without (compute.overlap_env; the same training)",
        ["world", "device", "with / without", "auto chose", "the faster"],
        rows,
    )

    rows = []
    for device, res in result["update"].items():
        if "error" in res:
            rows.append([device, "ERROR " + res["error"][:80], "", "", "", "", ""])
            continue
        for case in res["cases"].values():
            rows.append(
                [
                    device,
                    str(case["batch_size"]),
                    case["precision"] + (" *" if case["drl_default_precision"] else ""),
                    _fmt(case["floor_ms"], ".2f"),
                    _fmt(case["drl_ms"], ".2f"),
                    _fmt(case["drl_sample_ms"], ".2f"),
                    _fmt(100 * case["share"], ".0f") + "%",
                ]
            )
        if res.get("skipped"):
            rows.append([device, "", "bf16 skipped", res["skipped"], "", "", ""])
    table(
        "Update floor (plain torch Nature-CNN double DQN) vs drl update in its loop (* = drl's precision)",
        ["device", "batch", "precision", "floor ms", "drl ms", "of which sample ms", "share"],
        rows,
    )

    rows = [
        [
            device,
            str(c["batch_size"]),
            _fmt(c["nchw_ms"], ".2f"),
            _fmt(c["channels_last_ms"], ".2f"),
            _fmt(c["speedup"], ".2f"),
        ]
        for device, res in result["update"].items()
        for c in res.get("fp32_layouts", {}).values()
    ]
    table(
        "drl fp32 update (CPUs without native bf16): NCHW vs channels-last (compute.channels_last; auto: NHWC)",
        ["device", "batch", "NCHW ms", "channels-last ms", "NCHW / channels-last"],
        rows,
    )

    rows = [
        [
            device,
            str(c["batch_size"]),
            f"{c['fp32_ms']:.2f}",
            f"{c['bf16_ms']:.2f}",
            f"{c['bf16_over_fp32']:.2f}",
            res["acting"]["default"],
        ]
        for device, res in result["update"].items()
        for c in res.get("acting", {}).values()
        if isinstance(c, dict)
    ]
    table(
        "drl acting, one greedy forward pass (compute.act_bf16; auto: bf16 on CUDA only)",
        ["device", "batch", "fp32 ms", "bf16 ms", "bf16 / fp32", "default"],
        rows,
    )

    rows = [["ERROR " + result["replay"]["error"][:80], "", "", ""]] if "error" in result["replay"] else []
    for name, r in result["replay"].items():
        if name == "sb3":
            for sub, s in r.items():
                if isinstance(s, dict):
                    rows.append([f"sb3 {sub}", _fmt(s["bytes_per_transition"]), "", ""])
                else:
                    rows.append(["sb3", str(s), "", ""])
        elif name not in ("error", "skipped") and isinstance(r, dict):
            rows.append(
                [
                    f"drl {name} ({r['experiment']})",
                    _fmt(r["bytes_per_transition"]),
                    _fmt(r["allocated_bytes_per_transition"]),
                    _fmt(r["allocated_bytes"] / 2**20),
                ]
            )
    table(
        "Replay bytes per transition (from allocated storage)",
        ["buffer", "B/transition (core)", "B/transition (all)", "MiB allocated"],
        rows,
    )

    rows = []
    for device, res in result["vecenv"].items():
        for kind, r in res.items():
            if "error" in r:
                rows.append([device, kind, "ERROR " + r["error"][:80], "", ""])
                continue
            for c in r["counts"].values():
                envs = str(c["num_envs"]) + (f" ({c['workers']} workers)" if c.get("workers") else "")
                rows.append([device, kind, envs, _fmt(c["sps"]), _fmt(r.get("peak_rss_mb"))])
    table(
        "Vector envs, random actions, VecStep tensors on the device",
        ["device", "env", "envs", "steps/s", "peak MiB"],
        rows,
    )

    rows = [
        [t["where"], t["what"], _fmt(t["measured"], ",.2f"), _fmt(t["target"], ",.2f"), _fmt(t["pass"])]
        for t in result["targets"]
    ]
    table("Targets (from measured values)", ["device", "target", "measured", "needs", "result"], rows)

    mem = result["memory"]
    table(
        "Peak memory (max over measurement processes)",
        ["what", "MiB"],
        [[k, _fmt(v)] for k, v in mem.items() if isinstance(v, (int, float))],
    )

    if Console is not None:
        console = Console() if sys.stdout.isatty() else Console(width=150)
        for title, columns, rows in tables:
            t = Table(title=title, title_justify="left")
            for c in columns:
                t.add_column(c)
            for row in rows:
                t.add_row(*row)
            console.print(t)
        for note in result["meta"]["notes"]:
            console.print(f"[dim]note: {note}[/dim]")
    else:
        for title, columns, rows in tables:
            print(f"\n{title}\n  " + " | ".join(columns))
            for row in rows:
                print("  " + " | ".join(row))
        for note in result["meta"]["notes"]:
            print(f"note: {note}")
