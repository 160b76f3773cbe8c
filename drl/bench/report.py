"""Targets checked against measured values, the Pong loop floor they are judged by, memory peaks gathered from
every measurement, and the tables."""

from __future__ import annotations

import statistics
import sys

# Targets, compared with measured values only. Each can be met: a share of a floor can reach 1 (the floor is what
# the same work takes in plain torch), and a ratio is passed or failed only where the loop floor allows it (a
# ``reachable`` ratio from drl at its floor's speed); where the floor allows less, the row says so and has no result.
# Where a plain-torch loop of the floor's parts was timed beside drl, it bounds what is reachable: the floor's share
# is judged only where that loop reached it, and drl / SB3 by the plain loop's speed (``limit_sps``).
TARGETS = {
    "pong_loop_floor_share": 0.90,  # drl steps/s at SB3's hyperparameters / their loop floor's (loop_floor)
    "pong_plain_loop_share": 0.90,  # the same / a plain-torch loop's of the floor's parts, timed beside drl
    "pong_vs_sb3_bf16": 2.0,  # drl / SB3 steps/s at SB3's hyperparameters where bf16 is native (AMX, AVX512-BF16, CUDA)
    "pong_vs_sb3_fp32": 1.3,  # the same where it is not (AVX2 CPUs): drl trains in fp32 there, like SB3
    "pong_time_to_18_vs_sb3": 5.0,  # drl's default reaches Pong 18 >= 5x sooner than SB3 at its zoo hyperparameters
    # the floor's work is drl's update's less replay sampling (0.7 ms at batch 32 on a CPU); 80-105 % measured on CPUs
    "update_share": 0.90,  # drl update >= 90% of the plain-torch floor's speed (floor_ms / drl_ms)
    "doom_drqn_vs_sb3": 2.0,  # drl DRQN env steps/s >= 2x SB3 DQN on Doom (met: 2.03x on xeon-amx); no floor here
}
# Shown beside the targets without a result: absolute rates set on a 2-core VM. On another CPU they measure its
# cores and clock more than drl (one core cannot reach them, sixteen always do), so they cannot be a target there.
REFERENCES = {
    "atari_vecenv_sps": 2700.0,  # AtariVecEnv steps/s (best env count)
    "doom_vecenv_sps": 5000.0,  # DoomVectorEnv steps/s (best env count)
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


def bf16_native(result: dict, device: str) -> bool:
    """bf16 ran natively on the benchmarked machine's ``device`` (as ``drl.bench.update.native_bf16`` decides)."""
    machine = result["meta"]["machine"]
    return bool(machine.get("cuda_bf16")) if device == "cuda" else bool(machine["cpu_bf16_native"])


def loop_floor(update_ms: float, act_ms: float, env_step_ms: float, train_freq: int, num_envs: int) -> dict:
    """The least time per update of a DQN training loop, from measured parts: the plain-torch update plus, for the
    ``train_freq / num_envs`` vector steps each update is owed, a plain-torch greedy forward at batch ``num_envs``
    and one vector env step. At SB3's hyperparameters (1 env, an update every 4 steps): update + 4 x (batch-1
    forward + one env step). Returns the parts, ``ms_per_update`` and the env steps/s it allows (``sps``)."""
    vector_steps = train_freq / num_envs
    ms = update_ms + vector_steps * (act_ms + env_step_ms)
    return {
        "update_ms": update_ms,
        "act_ms": act_ms,
        "env_step_ms": env_step_ms,
        "vector_steps_per_update": vector_steps,
        "ms_per_update": ms,
        "sps": train_freq * 1000.0 / ms,
    }


def _floor_parts(run: dict, update: dict, atari_counts: dict) -> dict | None:
    """The measured parts of a drl Pong run's loop floor on its device: the update floor of its batch, precision and
    target rule, the plain-torch forward at its ``num_envs``, and one vector step of as many Pong envs (``vecenv``
    section); None while one is missing. The fallback for a run without floor blocks (``paired_share``), e.g. an
    older bench's JSON."""
    precision = "bf16" if run.get("bf16") else "fp32"
    floors = [*update.get("cases", {}).values(), *([update["floor_same_hp"]] if "floor_same_hp" in update else [])]
    update_ms = next(
        (
            f["floor_ms"]
            for f in floors
            if (f["batch_size"], f["precision"], f.get("double", True)) == (run["batch_size"], precision, run["double"])
        ),
        None,
    )
    act = update.get("act_floor", {}).get(f"b{run['num_envs']}")
    env = atari_counts.get(str(run["num_envs"]))
    if update_ms is None or act is None or env is None:
        return None
    return {"update_ms": update_ms, "act_ms": act["ms"], "env_step_ms": 1000.0 * run["num_envs"] / env["sps"]}


def paired_share(run: dict) -> dict | None:
    """The loop floor timed in blocks beside a drl run (``drl.bench.paired_floor``): the median of each part over
    the blocks, and drl's share as the median over blocks of (drl's steps/s since the block before / the floor's
    in that block), so that minutes of VM drift cancel; ``plain``: the plain-torch loop of the floor's parts timed
    in the same blocks (its steps/s, its share of the floor's, drl's share of its), empty where none ran. None
    without blocks."""
    blocks = run.get("paired_floor_blocks")
    if not blocks:
        return None
    floor_sps = [  # each block's floor
        loop_floor(b["update_ms"], b["act_ms"], b["env_step_ms"], run["train_freq"], run["num_envs"])["sps"]
        for b in blocks
    ]
    shares = [b["drl_sps"] / f for b, f in zip(blocks, floor_sps)]
    parts = {k: statistics.median(b[k] for b in blocks) for k in ("update_ms", "act_ms", "env_step_ms")}
    drl_parts = {  # drl's own update and sample in the same blocks (results from before they were timed lack them)
        k: statistics.median(values)
        for k in ("drl_update_ms", "drl_sample_ms")
        if (values := [b[k] for b in blocks if b.get(k) is not None])
    }
    timed = [(b, f) for b, f in zip(blocks, floor_sps) if b.get("plain_loop_ms")]  # older results lack it
    plain = {}
    if timed:
        plain_sps = [run["train_freq"] * 1000.0 / b["plain_loop_ms"] for b, _ in timed]
        plain = {
            "plain_sps": statistics.median(plain_sps),
            "plain_share": statistics.median(p / f for p, (_, f) in zip(plain_sps, timed)),  # of the parts' floor
            "drl_plain_share": statistics.median(b["drl_sps"] / p for p, (b, _) in zip(plain_sps, timed)),
        }
    return {
        "parts": parts,
        "share": statistics.median(shares),
        "shares": shares,
        "drl_parts": drl_parts,
        "plain": plain,
    }


def loop_floors(result: dict) -> dict:
    """Per device, per drl Pong run (``drl_same_hp``: SB3's hyperparameters; ``drl_default``): its ``loop_floor``,
    drl's measured steps/s and its ``share`` of the floor's. ``paired``: the floor was timed beside drl in the same
    process (``paired_share``); else it is built from the ``update`` and ``vecenv`` sections, timed minutes apart.
    Paired floors also carry the plain-torch loop of their parts: ``plain_sps``, ``plain_share`` (of the floor's
    steps/s) and ``drl_plain_share`` (drl's of the plain loop's), medians over blocks."""
    out: dict[str, dict] = {}
    for device, res in result["pong"].items():
        update = result["update"].get(device, {})
        counts = result["vecenv"].get(device, {}).get("atari", {}).get("counts", {})
        for name in ("drl_same_hp", "drl_default"):
            run = res.get(name, {})
            if "sps" not in run:
                continue
            paired = paired_share(run)
            parts = paired["parts"] if paired else _floor_parts(run, update, counts)
            if parts is None:
                continue
            floor = loop_floor(**parts, train_freq=run["train_freq"], num_envs=run["num_envs"])
            out.setdefault(device, {})[name] = {
                **floor,
                "precision": "bf16" if run.get("bf16") else "fp32",
                "drl_sps": run["sps"],
                "drl_ms_per_update": run["train_freq"] * 1000.0 / run["sps"],
                "share": paired["share"] if paired else run["sps"] / floor["sps"],
                "paired": paired is not None,
                **({"shares": paired["shares"], **paired["drl_parts"], **paired["plain"]} if paired else {}),
            }
    return out


def target_row(
    name: str,
    what: str,
    where: str,
    measured: float | None,
    target: float,
    reachable: float | None = None,
    limit: str = "the loop floor allows",
) -> dict:
    """One target: ``pass`` is None when not measured or when ``reachable`` (the most the loop floor allows; ``limit``
    says what bounds it) falls short of the target, which ``status`` then says instead of a failure."""
    if measured is None:
        status, ok = "not measured", None
    elif reachable is not None and reachable < target:
        status, ok = f"cannot be met here: {limit} {reachable:.2f}", None
    else:
        ok = bool(measured >= target)
        status = "pass" if ok else "FAIL"
    return {
        "name": name,
        "what": what,
        "where": where,
        "measured": measured,
        "target": target,
        "reachable": reachable,
        "pass": ok,
        "status": status,
    }


def limit_sps(floor: dict) -> float:
    """The most steps/s a loop of the floor's work reached: the plain-torch loop's where it was timed (it pays what
    interleaving the parts costs), else the floor's sum of parts."""
    return min(floor["sps"], floor.get("plain_sps", floor["sps"]))


def _pong_targets(result: dict, floors: dict) -> list[dict]:
    rows = []
    for device, res in result["pong"].items():
        same_hp = floors.get(device, {}).get("drl_same_hp")
        plain = same_hp is not None and "plain_sps" in same_hp
        if same_hp is not None:
            rows.append(
                target_row(
                    "pong_loop_floor_share",
                    f"drl steps/s at SB3's hyperparameters / the loop floor's ({same_hp['sps']:,.0f})",
                    device,
                    same_hp["share"],
                    TARGETS["pong_loop_floor_share"],
                    same_hp.get("plain_share"),
                    "a plain-torch loop of the floor's parts reached",
                )
            )
        if plain:
            rows.append(
                target_row(
                    "pong_plain_loop_share",
                    f"drl steps/s at SB3's hyperparameters / a plain-torch loop's ({same_hp['plain_sps']:,.0f})",
                    device,
                    same_hp["drl_plain_share"],
                    TARGETS["pong_plain_loop_share"],
                )
            )
        name = "pong_vs_sb3_bf16" if bf16_native(result, device) else "pong_vs_sb3_fp32"
        sb3_sps = res.get("sb3", {}).get("sps")
        rows.append(
            target_row(
                name,
                f"drl / SB3 steps/s at SB3's hyperparameters ({name.rsplit('_', 1)[1]} here)",
                device,
                res.get("ratio_same_hp_vs_sb3"),
                TARGETS[name],
                limit_sps(same_hp) / sb3_sps if same_hp is not None and sb3_sps else None,
                "a plain-torch loop of the floor's parts allows" if plain else "the loop floor allows",
            )
        )
    return rows


def _time_to_18_targets(result: dict, floors: dict) -> list[dict]:
    rows = []
    for device, row in result.get("time_to_18", {}).items():
        default = floors.get(device, {}).get("drl_default")
        reachable = None
        if default is not None and "sb3_minutes" in row and "drl_steps" in row:  # drl's default at its floor's speed
            reachable = row["sb3_minutes"] / (row["drl_steps"] / limit_sps(default) / 60)
        rows.append(
            target_row(
                "pong_time_to_18_vs_sb3",
                "SB3 zoo minutes / drl default minutes to Pong 18 (training returns)",
                device,
                row.get("ratio"),
                TARGETS["pong_time_to_18_vs_sb3"],
                reachable,
            )
        )
    return rows


def _update_targets(result: dict) -> list[dict]:
    return [
        target_row(
            "update_share",
            f"floor / drl time per update, batch {case['batch_size']} {case['precision']}",
            device,
            case["share"],
            TARGETS["update_share"],
        )
        for device, res in result["update"].items()
        for case in res.get("cases", {}).values()
        if case["drl_default_precision"]
    ]


def _doom_targets(result: dict) -> list[dict]:
    return [
        target_row(
            "doom_drqn_vs_sb3",
            "drl DRQN / SB3 DQN steps/s on Doom health_gathering",
            device,
            res.get("ratio_drqn_vs_sb3"),
            TARGETS["doom_drqn_vs_sb3"],
        )
        for device, res in result["doom"].items()
    ]


def _vecenv_references(result: dict) -> list[dict]:
    rows = []
    for device, res in result["vecenv"].items():
        for kind, key in (("atari", "atari_vecenv_sps"), ("doom", "doom_vecenv_sps")):
            counts = res.get(kind, {}).get("counts")
            best = max(counts.values(), key=lambda r: r["sps"]) if counts else None
            row = target_row(
                key,
                f"{kind} vector env steps/s (best: {best['num_envs'] if best else '-'} envs)",
                device,
                best["sps"] if best else None,
                REFERENCES[key],
            )
            rows.append({**row, "pass": None, "status": "reference (2-core VM), no result"})
    return rows


def targets(result: dict) -> list[dict]:
    """Every target row (``target_row``) and reference row of a bench result."""
    floors = loop_floors(result)
    return [
        *_pong_targets(result, floors),
        *_time_to_18_targets(result, floors),
        *_update_targets(result),
        *_doom_targets(result),
        *_vecenv_references(result),
    ]


def _fmt(value, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    return format(value, spec)


Table = tuple[str, list[str], list[list[str]]]  # title, columns, rows


def _machine_table(result: dict) -> Table:
    m, meta = result["meta"]["machine"], result["meta"]
    return (
        "Machine",
        ["field", "value"],
        [
            ["cpu", f"{m['cpu']} ({m['cores_usable']}/{m['cores']} cores)"],
            ["torch", m["torch"]],
            ["bf16 on CPU", f"native={m['cpu_bf16_native']} amx={m['amx']} avx512_bf16={m['avx512_bf16']}"],
            ["cuda", m.get("cuda_device", "none")],
            ["stable-baselines3", str(m.get("stable_baselines3"))],
            ["load before / after", f"{meta['load_before']} / {meta['load_after']}"],
            [
                "mode",
                f"quick={meta['quick']} steps={meta['steps']} repeats={meta['repeats']} "
                f"learning_starts={meta['learning_starts']}",
            ],
        ],
    )


def _training_row(section: str, device: str, name: str, r: dict) -> list[str]:
    if "sps" not in r:
        return [section, device, name, r.get("skipped") or "ERROR " + r.get("error", "")[:60], *[""] * 5]
    return [
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


def _training_table(result: dict) -> Table:
    return (
        "Training speed (env steps/s after learning_starts, median of repeats)",
        ["world", "device", "run", "steps/s", "range", "updates/s", "envs / batch / freq", "prec", "peak MiB"],
        [
            _training_row(section, device, name, r)
            for section in ("pong", "doom")
            for device, res in result[section].items()
            for name, r in res.items()
            if isinstance(r, dict)
        ],
    )


def _loop_floor_table(result: dict) -> Table:
    return (
        "Pong loop floor: plain-torch update + per update, train_freq / num_envs x (plain-torch greedy forward at "
        "batch num_envs + one vector env step); drl's share of its steps/s. timed 'beside drl': in blocks between "
        "drl's own in the same process, parts and share the medians over blocks (drl's own update and replay sample "
        "per update timed in the same blocks; a plain-torch loop of the floor's parts, in drl's order, run in the same "
        "blocks: its steps/s, its share of the floor's and drl's share of it); 'sections': from the update and vecenv "
        "sections, minutes apart",
        [
            "device",
            "run",
            "prec",
            "update ms",
            "forward ms",
            "env step ms",
            "ms / update",
            "floor steps/s",
            "drl",
            "drl ms / update",
            "drl update ms",
            "drl sample ms",
            "share",
            "plain loop steps/s",
            "plain / floor",
            "drl / plain",
            "timed",
        ],
        [
            [
                device,
                name,
                f["precision"],
                _fmt(f["update_ms"], ".2f"),
                _fmt(f["act_ms"], ".2f"),
                _fmt(f["env_step_ms"], ".2f"),
                _fmt(f["ms_per_update"], ".2f"),
                _fmt(f["sps"]),
                _fmt(f["drl_sps"]),
                _fmt(f["drl_ms_per_update"], ".2f"),
                _fmt(f.get("drl_update_ms"), ".2f"),
                _fmt(f.get("drl_sample_ms"), ".2f"),
                _fmt(100 * f["share"], ".0f") + "%",
                _fmt(f.get("plain_sps")),
                _fmt(100 * f["plain_share"], ".0f") + "%" if "plain_share" in f else "-",
                _fmt(100 * f["drl_plain_share"], ".0f") + "%" if "drl_plain_share" in f else "-",
                f"beside drl ({len(f['shares'])} blocks)" if f.get("paired") else "sections",
            ]
            for device, runs in loop_floors(result).items()
            for name, f in runs.items()
        ],
    )


def _time_to_18_table(result: dict) -> Table:
    return (
        "Minutes to Pong 18 (10 training games), steps to it from training logs / steps/s measured here: "
        "drl default (median of the committed runs of its config) vs SB3 zoo (its published log)",
        ["device", "drl steps", "drl steps/s", "drl min", "SB3 steps", "SB3 steps/s", "SB3 min", "SB3 / drl"],
        [
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
            for device, t in result.get("time_to_18", {}).items()
        ],
    )


def _overlap_table(result: dict) -> Table:
    return (
        "Env stepping overlapped with learning: steps/s with / without (compute.overlap_env; the same training)",
        ["world", "device", "with / without", "auto chose", "the faster"],
        [
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
        ],
    )


def _update_table(result: dict) -> Table:
    rows = []
    for device, res in result["update"].items():
        if "error" in res:
            rows.append([device, "ERROR " + res["error"][:80], *[""] * 6])
            continue
        for case in res["cases"].values():
            rows.append(
                [
                    device,
                    str(case["batch_size"]),
                    case["precision"] + (" *" if case["drl_default_precision"] else ""),
                    "double" if case.get("double", True) else "vanilla",  # older JSON: double DQN's
                    _fmt(case["floor_ms"], ".2f"),
                    _fmt(case["drl_ms"], ".2f"),
                    _fmt(case["drl_sample_ms"], ".2f"),
                    _fmt(100 * case["share"], ".0f") + "%",
                ]
            )
        if res.get("skipped"):
            rows.append([device, "", "bf16 skipped", "", res["skipped"], "", "", ""])
    return (
        "Update floor (plain torch Nature-CNN DQN, atari-pong's target rule) vs drl update in its loop (* = drl's "
        "precision); medians of alternating blocks" + _blocks(result["update"]),
        ["device", "batch", "precision", "target", "floor ms", "drl ms", "of which sample ms", "share"],
        rows,
    )


def _blocks(update: dict) -> str:
    """ " (N blocks of M updates)" as the update section ran, "" where results lack it."""
    for res in update.values():
        case = next(iter(res.get("cases", {}).values()), None)
        if case and res.get("updates_timed"):
            return f" ({len(case['floor_ms_samples'])} blocks of {res['updates_timed']} updates)"
    return ""


def _layouts_table(result: dict) -> Table:
    return (
        "drl fp32 update (CPUs without native bf16): NCHW vs channels-last (compute.channels_last; auto: NHWC)",
        ["device", "batch", "NCHW ms", "channels-last ms", "NCHW / channels-last"],
        [
            [
                device,
                str(c["batch_size"]),
                _fmt(c["nchw_ms"], ".2f"),
                _fmt(c["channels_last_ms"], ".2f"),
                _fmt(c["speedup"], ".2f"),
            ]
            for device, res in result["update"].items()
            for c in res.get("fp32_layouts", {}).values()
        ],
    )


def _acting_table(result: dict) -> Table:
    return (
        "drl acting, one greedy forward pass (compute.act_bf16; auto: bf16 on CUDA only)",
        ["device", "batch", "fp32 ms", "bf16 ms", "bf16 / fp32", "default"],
        [
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
        ],
    )


def _dropout_table(result: dict) -> Table:
    return (
        "Dropout forward + backward, p 0.5, [288, 4640] (deathmatch's per-update input): torch vs drl.networks.Dropout",
        ["device", "precision", "torch ms", "drl ms", "torch / drl"],
        [
            [device, precision, f"{c['torch_ms']:.2f}", f"{c['drl_ms']:.2f}", f"{c['speedup']:.2f}"]
            for device, res in result["update"].items()
            for precision, c in res.get("dropout", {}).items()
            if isinstance(c, dict)
        ],
    )


def _replay_table(result: dict) -> Table:
    replay = result["replay"]
    rows = [["ERROR " + replay["error"][:80], "", "", ""]] if "error" in replay else []
    for name, r in replay.items():
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
    return (
        "Replay bytes per transition (from allocated storage)",
        ["buffer", "B/transition (core)", "B/transition (all)", "MiB allocated"],
        rows,
    )


def _vecenv_table(result: dict) -> Table:
    rows = []
    for device, res in result["vecenv"].items():
        for kind, r in res.items():
            if "error" in r:
                rows.append([device, kind, "ERROR " + r["error"][:80], "", ""])
                continue
            for c in r["counts"].values():
                envs = str(c["num_envs"]) + (f" ({c['workers']} workers)" if c.get("workers") else "")
                rows.append([device, kind, envs, _fmt(c["sps"]), _fmt(r.get("peak_rss_mb"))])
    return (
        "Vector envs, random actions, VecStep tensors on the device",
        ["device", "env", "envs", "steps/s", "peak MiB"],
        rows,
    )


def _targets_table(result: dict) -> Table:
    return (
        "Targets (from measured values; 'floor allows': the most drl at its loop floor's speed would reach, or, where "
        "one was timed, what a plain-torch loop of the floor's parts reached)",
        ["device", "target", "measured", "needs", "floor allows", "result"],
        [
            [
                t["where"],
                t["what"],
                _fmt(t["measured"], ",.2f"),
                _fmt(t["target"], ",.2f"),
                _fmt(t.get("reachable"), ",.2f"),
                t.get("status", _fmt(t["pass"])),
            ]
            for t in result["targets"]
        ],
    )


def _memory_table(result: dict) -> Table:
    return (
        "Peak memory (max over measurement processes)",
        ["what", "MiB"],
        [[k, _fmt(v)] for k, v in result["memory"].items() if isinstance(v, (int, float))],
    )


SECTION_TABLES = (
    _machine_table,
    _training_table,
    _loop_floor_table,
    _time_to_18_table,
    _overlap_table,
    _update_table,
    _layouts_table,
    _acting_table,
    _dropout_table,
    _replay_table,
    _vecenv_table,
    _targets_table,
    _memory_table,
)


def print_report(result: dict) -> None:
    """Every section's table that has rows (sections left out by --only print nothing), then the notes."""
    tables = [t for t in (make(result) for make in SECTION_TABLES) if t[2]]
    notes = result["meta"]["notes"]
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:  # plain text
        for title, columns, rows in tables:
            print(f"\n{title}\n  " + " | ".join(columns))
            for row in rows:
                print("  " + " | ".join(row))
        for note in notes:
            print(f"note: {note}")
        return
    console = Console() if sys.stdout.isatty() else Console(width=150)
    for title, columns, rows in tables:
        table = RichTable(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in notes:
        console.print(f"[dim]note: {note}[/dim]")
