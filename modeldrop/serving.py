"""Will it serve? A go / no-go from the hub's metadata and the nodes, before the first byte is downloaded.

The serving verdict judges, by EXO's own rules, what a few kilobytes say about the model (the file list,
`config.json`, the safetensors index's `metadata.total_size`) against what the nodes bring (the mlx-lm inside
the exo each runs, the memory EXO reports for placement, EXO's built-in card), one `Item` each:
- format: the weights EXO can load (mlx-lm loads `model*.safetensors` at the top of the model dir; GGUF,
  PyTorch `.bin`/`.pt` and a mix of formats are no-go, the mix with the `HF_INCLUDE` that keeps one);
- quantization: what `config.json` says (MLX `quantization` bits/group size/mode, or `quantization_config`);
- architecture: `model_type` (after mlx-lm's MODEL_REMAPPING) against each node's `mlx_lm.models` modules;
- memory: EXO places an instance only on a cycle whose summed `ram_available` covers the card's storage size
  (`filter_cycles_by_memory`), and a Pipeline split gives node i `size * layers_i // n_layers` with layers
  allocated in proportion to available memory (`_allocate_and_validate_layers`); min_nodes = N;
- card: EXO's built-in card, else the card `POST /models/add` would build (`ModelCard.fetch_from_hf`: a layer
  count and hidden_size in config.json, `model.safetensors.index.json` for the size).
An item is `go`, `warn` (fits with less than the headroom), `no-go` (names the fact, the node and the way out)
or `unknown` (a missing, unreadable or lying input, a node that could not be asked: one line each, never a stop
on its own). `repo_meta_*` gather the metadata (the hub; a node's cached tree and files; files on disk for
`--audit`), `node_serving` reads a node's `serving` probe, `judge` is pure, `profile_fields` is what the model
profile keeps of it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modeldrop import hub
from modeldrop.audit import human_bytes as hb
from modeldrop.audit import weight_format
from modeldrop.config import RunConfig
from modeldrop.errors import NodeError
from modeldrop.nodes import Node
from modeldrop.verdict import Fact, Verdict

GB = 1_000_000_000
CONFIG = "config.json"
INDEX = "model.safetensors.index.json"  # the name EXO's fetch_safetensors_size asks for
MAX_CONFIG_BYTES, MAX_INDEX_BYTES = 4 * 1024 * 1024, 64 * 1024 * 1024
ASK_TIMEOUT_S = 20.0  # one node's exo interpreter, asked for its mlx-lm
PROBE_TIMEOUT_S = ASK_TIMEOUT_S + 40.0  # not a long probe (nodes.LONG_PROBE_S): the ask is bounded on the node
# EXO's ConfigData: the layer count's aliases, text_config's value winning (model_cards.py)
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "decoder_layers")
# index total vs its shards in the file list: headers are the only difference (a few MB per shard at most)
SHARD_HEADER_SLACK = 16 * 1024 * 1024
ORDER = ("format", "quantization", "architecture", "memory", "card")
OVERRIDE_OPTION = "--allow-serving-no-go"


@dataclass
class RepoMeta:
    """What the verdict reads about the model: `files` {path: size} as the run will download them (HF_INCLUDE
    applied), `all_files` the whole repo, config.json parsed (else `config_error`), the weight index (else
    `index_error`; both None when the repo has none), and where it came from."""

    source: str
    files: dict[str, int] = field(default_factory=dict)
    all_files: dict[str, int] = field(default_factory=dict)
    config: dict | None = None
    config_error: str | None = None
    index: dict | None = None
    index_error: str | None = None


@dataclass
class NodeServing:
    """One node's `serving` probe: memory as EXO reports it, exo's mlx-lm, EXO's built-in card, local files."""

    k: int
    memory: dict[str, Any] = field(default_factory=dict)
    exo: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Item:
    """One line of the verdict: `status` go | warn | no-go | unknown, the line, and its figures."""

    name: str
    status: str
    line: str
    details: dict[str, Any] = field(default_factory=dict)


def outcome_of(items: list[Item], no_go: bool, overridden: bool) -> str:
    """GO, GO (tight) when an item warns, NO-GO (overridden), or UNKNOWN when no item could be judged."""
    if no_go or overridden:
        return "NO-GO (overridden)" if overridden else "NO-GO"
    if all(i.status == "unknown" for i in items if i.name != "quantization"):
        return "UNKNOWN"
    return "GO (tight)" if any(i.status == "warn" for i in items) else "GO"


def lines(v: Verdict) -> list[str]:
    """One line per item of a serving verdict, for the evidence and the hand-off."""
    return [f"{name}: {it['status'].upper()}: {it['line']}" for name, it in v.details["items"].items()]


def block(v: Verdict) -> dict[str, Any]:
    """The `serving_verdict` block of the ledger and run.json: outcome, source, overridden, seconds, the items
    (status, line, figures), the no-go lines and the warnings."""
    return {**{k: val for k, val in v.details.items() if k != "nodes"}, "no_go": v.problems, "warnings": v.warnings}


# -- gathering ------------------------------------------------------------------------------------------------
def node_serving(node: Node, k: int, cfg: RunConfig) -> NodeServing:
    """Node k's `serving` probe (bounded); a node that cannot be asked keeps its error, never raises."""
    nc = cfg.node(k)
    try:
        r = node.run_probe("serving", {"exo_cmd": nc.exo_cmd, "model_dir": nc.model_dir,
                                       "model_folder": cfg.model_folder, "ask_timeout": ASK_TIMEOUT_S},
                           timeout=PROBE_TIMEOUT_S)
    except NodeError as e:
        return NodeServing(k, error=f"{type(e).__name__}: {e}".splitlines()[0])
    return NodeServing(k, r.get("memory") or {}, r.get("exo") or {}, r.get("local") or {})


def _index_of(data: Any) -> dict:
    """{total_size, shards} of a parsed weight index; ValueError when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise ValueError("no weight_map object")
    total = (data.get("metadata") or {}).get("total_size") if isinstance(data.get("metadata"), dict) else None
    if total is not None and (not isinstance(total, (int, float)) or isinstance(total, bool) or total < 0):
        raise ValueError(f"metadata.total_size {total!r} is not a number of bytes")
    return {"total_size": int(total) if total is not None else None,
            "shards": sorted({str(v) for v in data["weight_map"].values()})}


def repo_meta_hub(cfg: RunConfig) -> RepoMeta | str:
    """The hub's file list (shared with the download total), config.json and the index at its commit; the hub's
    error (one line) when the list cannot be read."""
    listed = hub.listing_for(cfg)
    if listed.manifest is None:
        return listed.error or "the hub gave no file list"
    m = listed.manifest
    all_files = {p: f.size for p, f in m.files.items()}
    wanted = {p: f.size for p, f in m.filtered(cfg.include).files.items()}
    meta = RepoMeta(f"the hub ({cfg.model_id}@{m.commit[:12]})", wanted, all_files)
    if CONFIG in all_files:
        data, err = hub.fetch_json(cfg, m.commit, CONFIG, MAX_CONFIG_BYTES)
        meta.config, meta.config_error = (data, None) if isinstance(data, dict) else (None, err or "not a JSON object")
    if INDEX in all_files:
        data, err = hub.fetch_json(cfg, m.commit, INDEX, MAX_INDEX_BYTES)
        try:
            meta.index = _index_of(data) if err is None else None
            meta.index_error = err
        except ValueError as e:
            meta.index_error = str(e)
    return meta


def repo_meta_local(cfg: RunConfig, node: NodeServing, *, tree: bool) -> RepoMeta | None:
    """A node's own view: its cached hub tree (`tree`, sizes of every file) or the files in its model dir, with
    config.json and the index as far as they are on disk; None when it has neither."""
    local = node.local or {}
    listed = ((local.get("tree") or {}).get("files") or {}) if tree else {}
    files = {p: int(e.get("size") or 0) for p, e in listed.items()} if tree else dict(local.get("files") or {})
    files = {p: s for p, s in files.items() if not p.startswith(".cache/")}
    if not files:
        return None
    where = f"the hub tree cached on node{node.k}" if tree else f"the files in MODEL_DIR_NODE{node.k}"
    meta = RepoMeta(where, {p: files[p] for p in hub.filter_include(files, cfg.include)}, files)
    meta.config, meta.config_error = local.get("config"), local.get("config_error")
    if meta.config is None and meta.config_error is None and CONFIG in files:
        meta.config_error = f"not on node{node.k} yet"
    index = local.get("index")
    if index and index.get("path") == INDEX:
        if index.get("error"):
            meta.index_error = index["error"]
        else:
            meta.index = {"total_size": index.get("total_size"), "shards": index.get("weight_files") or []}
    elif INDEX in files:
        meta.index_error = f"not on node{node.k} yet"
    return meta


# -- judging --------------------------------------------------------------------------------------------------
def _text_value(config: dict, keys: tuple[str, ...]) -> int | None:
    """The first of `keys` in config.json, text_config's winning as in EXO's ConfigData."""
    for source in (config.get("text_config") if isinstance(config.get("text_config"), dict) else {}, config):
        for key in keys:
            v = source.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _include_for(files: dict[str, int]) -> str:
    """An HF_INCLUDE keeping the safetensors weights and every non-weight file of the repo."""
    exts = sorted({"*." + p.rsplit(".", 1)[-1] for p in files if not weight_format(p) and "." in p.rsplit("/", 1)[-1]})
    return ",".join(["*.safetensors", *[e for e in exts if e != "*.safetensors"]])


def format_item(meta: RepoMeta, model_id: str) -> Item:
    """The weight format(s) the run would download, and whether mlx-lm (EXO's loader) can load them."""
    weights = {p: s for p, s in meta.files.items() if weight_format(p)}
    formats = Counter(weight_format(p) for p in weights)
    counts = ", ".join(f"{n} {f}" for f, n in sorted(formats.items()))
    details = {"formats": dict(formats), "weight_bytes": sum(weights.values())}
    if not meta.files:
        return Item("format", "unknown", f"no file list from {meta.source}", details)
    if not formats:
        return Item("format", "no-go", f"no weight files (.safetensors, .gguf, .bin) in {meta.source}: nothing for "
                                       f"EXO to load; check HF_INCLUDE and the repo", details)
    mlx = bool(isinstance(meta.config, dict) and isinstance(meta.config.get("quantization"), dict))
    name = "MLX safetensors" if mlx else "safetensors"
    if set(formats) == {"safetensors"}:
        loadable = sorted(p for p in weights if "/" not in p and p.startswith("model"))
        details["format"] = name
        if not loadable:
            return Item("format", "no-go", f"{counts} but none named model*.safetensors at the top of the repo "
                                           f"({', '.join(sorted(weights)[:3])}): mlx-lm, which EXO loads with, reads "
                                           f"only model*.safetensors; pick the MLX variant of the model", details)
        return Item("format", "go", f"{name}, {len(loadable)} file(s) mlx-lm loads", details)
    if "safetensors" in formats:
        details["format"] = "mixed"
        keep = _include_for(meta.files)
        return Item("format", "no-go", f"mixed weight formats ({counts}): verify stops a mixed download and exo "
                                       f"loads one format; keep one with HF_INCLUDE={keep}", details)
    kind = " and ".join(sorted(formats))
    details["format"] = kind
    base = re.sub(r"[-_.]gguf$", "", model_id.split("/")[-1], flags=re.I)
    way = f"pick its MLX variant (e.g. mlx-community/{base}-4bit, where one exists)"
    if "gguf" not in formats:
        way = f"convert it with `mlx_lm.convert --hf-path {model_id} -q` and run the converted repo, or {way[:-1]})"
    return Item("format", "no-go", f"{kind} only ({counts}): EXO's MLX engine loads safetensors (mlx-lm: "
                                   f"model*.safetensors), not {kind}; {way}", details)


def quantization_item(meta: RepoMeta) -> Item:
    """What config.json says about quantization (information, never a stop)."""
    c = meta.config
    if not isinstance(c, dict):
        return Item("quantization", "unknown", _config_unknown(meta))
    q = c.get("quantization") if isinstance(c.get("quantization"), dict) else None
    if q is not None:
        layers = sum(isinstance(v, dict) for v in q.values())
        d = {"bits": q.get("bits"), "group_size": q.get("group_size"), "mode": q.get("mode") or "affine"}
        extra = f", {layers} per-layer override(s)" if layers else ""
        return Item("quantization", "go", f"{d['bits']}-bit, group size {d['group_size']}, {d['mode']} (MLX){extra}", d)
    tc = c.get("text_config") if isinstance(c.get("text_config"), dict) else {}
    qc = c.get("quantization_config") or tc.get("quantization_config")
    if isinstance(qc, dict):
        d = {"method": qc.get("quant_method"), "bits": qc.get("bits"), "group_size": qc.get("group_size")}
        bits = f", {d['bits']}-bit" if d["bits"] else ""
        return Item("quantization", "go", f"quantization_config: {d['method']}{bits} (mlx-lm converts bitnet, mxfp4, "
                                          f"compressed-tensors, awq, gptq at load)", d)
    dtype = c.get("torch_dtype") or c.get("dtype") or tc.get("torch_dtype") or tc.get("dtype")
    return Item("quantization", "go", f"none ({dtype or 'dtype not stated'})", {"bits": None, "dtype": dtype})


def _config_unknown(meta: RepoMeta) -> str:
    if meta.config_error:
        return f"{CONFIG} from {meta.source}: {meta.config_error}"
    return f"{CONFIG}: the repo has none ({meta.source})"


def architecture_item(meta: RepoMeta, nodes: dict[int, NodeServing]) -> tuple[Item, list[str]]:
    """model_type against each node's mlx_lm.models (after MODEL_REMAPPING); (item, warning lines)."""
    c = meta.config
    if not isinstance(c, dict):
        return Item("architecture", "unknown", _config_unknown(meta)), []
    mt, archs = c.get("model_type"), c.get("architectures")
    d: dict[str, Any] = {"model_type": mt, "architectures": archs if isinstance(archs, list) else None}
    label = f"{mt} ({', '.join(map(str, archs))})" if isinstance(archs, list) and archs else str(mt)
    if c.get("model_file"):
        return Item("architecture", "go", f"{label}: config.json names its own module {c['model_file']!r} "
                                          f"(mlx-lm loads it from the repo)", d), []
    if not isinstance(mt, str) or not mt:
        return Item("architecture", "no-go", f"{CONFIG} has no model_type: mlx-lm (EXO's loader) picks the model "
                                             f"class by model_type; this repo is not one mlx-lm can load", d), []
    warnings, known, unknown = [], {}, {}
    for k, n in sorted(nodes.items()):
        types = n.exo.get("model_types")
        if n.error or not types:
            why = n.error or n.exo.get("error") or "no mlx_lm model modules found"
            warnings.append(f"node{k}: exo's interpreter could not be asked ({why}): architecture unknown there")
            continue
        module = (n.exo.get("remapping") or {}).get(mt, mt)
        where = f"node{k} (mlx-lm {n.exo.get('mlx_lm_version') or '?'})"
        (known if module in types else unknown)[k] = (module, where)
    versions = {k: n.exo.get("mlx_lm_version") for k, n in nodes.items() if n.exo.get("model_types")}
    if len(set(versions.values())) > 1:
        warnings.append("mlx-lm drift across nodes: " + ", ".join(f"node{k} {v}" for k, v in sorted(versions.items())))
    d.update(known_on=sorted(known), unknown_on=sorted(unknown), mlx_lm={f"node{k}": v for k, v in versions.items()})
    if unknown:
        module = next(iter(unknown.values()))[0]
        where = ", ".join(w for _, w in unknown.values())
        if known:
            fix = (f"update exo on {', '.join(f'node{k}' for k in unknown)} to the exo node{min(known)} runs (known on "
                   + ", ".join(w for _, w in known.values()) + ")")
        else:
            fix = (f"update exo on every node to a release whose mlx-lm has mlx_lm/models/{module}.py (a new "
                   f"architecture may be in none yet: wait for one, or pick a model the nodes know)")
        d["module"] = module
        return Item("architecture", "no-go", f"{label}: no mlx_lm.models.{module} in the exo of {where}; {fix}",
                    d), warnings
    if not known:
        return Item("architecture", "unknown", f"{label}: no node's mlx-lm could be read", d), warnings
    module = next(iter(known.values()))[0]
    return Item("architecture", "go", f"{label}: mlx_lm.models.{module} on "
                + ", ".join(w for _, w in known.values()), d), warnings


def _allocate(total_layers: int, fractions: list[float]) -> list[int]:
    """EXO's allocate_layers_proportionally: largest remainder, then at least one layer per node."""
    raw = [f * total_layers for f in fractions]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[:total_layers - sum(out)]:
        out[i] += 1
    for i in range(len(out)):
        if out[i] == 0:
            j = max(range(len(out)), key=lambda j: out[j])
            out[j], out[i] = out[j] - 1, 1
    return out


def model_size(meta: RepoMeta, nodes: dict[int, NodeServing]) -> tuple[int | None, str, list[str]]:
    """(bytes EXO's card would hold, where that figure comes from, input lines): a built-in card's storage_size,
    else the index's metadata.total_size (what POST /models/add stores), else the weights in the file list; None
    when the index disagrees with the file list (one line naming the file and what disagrees)."""
    lines: list[str] = []
    cards = {k: n.exo["builtin_card"] for k, n in nodes.items()
             if (n.exo.get("builtin_card") or {}).get("storage_size")}
    idx = meta.index or {}
    lie = None
    if idx.get("total_size") is not None:
        shards = idx.get("shards") or []
        absent = [s for s in shards if s not in meta.all_files]
        listed = sum(meta.all_files.get(s, 0) for s in shards)
        total = idx["total_size"]
        if absent:
            lie = (f"{INDEX} names {len(absent)} shard(s) the repo does not have ({', '.join(absent[:3])}): its "
                   f"metadata.total_size cannot be checked")
        elif not total <= listed <= total + SHARD_HEADER_SLACK * max(1, len(shards)) + total // 100:
            lie = (f"{INDEX}: metadata.total_size {hb(total)} disagrees with its {len(shards)} shard(s) in "
                   f"{meta.source} ({hb(listed)})")
    if lie:
        lines.append(lie)
    if cards:
        k, card = min(cards.items())
        return int(card["storage_size"]), f"EXO's built-in card on node{k}", lines
    if lie:
        return None, "the index disagrees with the file list", lines
    if idx.get("total_size") is not None:
        return int(idx["total_size"]), "the index's metadata.total_size", lines
    if meta.index_error and meta.index_error != "missing":
        lines.append(f"{INDEX} from {meta.source}: {meta.index_error}")
    weights = sum(s for p, s in meta.files.items() if weight_format(p))
    return (weights or None), f"the weight files in {meta.source}", lines


def memory_item(meta: RepoMeta, nodes: dict[int, NodeServing], cfg: RunConfig) -> tuple[Item, list[str]]:
    """EXO's placement rule for min_nodes=N over the configured nodes; (item, input and node lines)."""
    size, source, lines = model_size(meta, nodes)
    n = len(nodes)
    mem = {k: x.memory for k, x in sorted(nodes.items())}
    missing = [k for k, m in mem.items() if not m.get("available_bytes")]
    for k in missing:
        why = nodes[k].error or mem[k].get("error") or "no figure"
        lines.append(f"node{k}: its available memory could not be read ({why}): memory fit unknown")
    d: dict[str, Any] = {"size_bytes": size, "size_source": source, "min_nodes": n, "sharding": cfg.sharding,
                         "nodes": {f"node{k}": {"available_bytes": m.get("available_bytes"),
                                                "total_bytes": m.get("total_bytes"), "rule": m.get("rule")}
                                   for k, m in mem.items()}}
    if size is None or missing:
        what = "the model's size is unknown" if size is None else "a node's memory is unknown"
        return Item("memory", "unknown", f"{what} ({source})", d), lines
    avail = {k: int(m["available_bytes"]) for k, m in mem.items()}
    total_avail = sum(avail.values())
    layers = (nodes_card_layers(nodes) or (_text_value(meta.config, LAYER_KEYS) if isinstance(meta.config, dict)
                                           else None))
    if cfg.sharding == "Pipeline" and layers and layers >= n:
        alloc = _allocate(layers, [avail[k] / total_avail for k in avail])
        need = {k: size * a // layers for k, a in zip(avail, alloc, strict=True)}
        d["layers"] = {f"node{k}": a for k, a in zip(avail, alloc, strict=True)}
    else:
        need = {k: size // n if cfg.sharding == "Tensor" else size * avail[k] // total_avail for k in avail}
    margin = {k: avail[k] - need[k] for k in avail}
    d.update(available_bytes=total_avail, margin_bytes=total_avail - size,
             per_node={f"node{k}": {"share_bytes": need[k], "margin_bytes": margin[k]} for k in avail})
    split = "; ".join(f"node{k} {hb(need[k])} of {hb(avail[k])}" for k in avail)
    head = f"{hb(size)} ({source}) on min_nodes={n}: {hb(total_avail)} available"
    way_out = _fit_way_out(meta, mem, size, n, total_avail)  # said by either no-go below
    if total_avail < size:
        return Item("memory", "no-go", f"does not fit: {head}, {hb(size - total_avail)} short (EXO: \"No "
                                       f"cycles found with sufficient memory\"); {way_out}", d), lines
    short = [k for k in avail if margin[k] < 0]
    if short and cfg.sharding == "Pipeline":
        k = short[0]
        return Item("memory", "no-go", f"does not fit: {head}, but node{k} would hold {hb(need[k])} of layers "
                                       f"with {hb(avail[k])} available (EXO: \"Node has insufficient "
                                       f"memory\"); {way_out}", d), lines
    lines += [f"node{k}: its Tensor share {hb(need[k])} exceeds its {hb(avail[k])} available (EXO "
              f"places on the sum; expect that runner to run out of memory)" for k in short]
    tight = min(margin, key=lambda k: margin[k])
    fits = f"fits: {head}, margin {hb(total_avail - size)} ({split})"
    if margin[tight] < cfg.memory_headroom_gb * GB:
        return Item("memory", "warn", f"tight {fits}; node{tight} keeps {hb(margin[tight])} beyond its share, "
                                      f"under MEMORY_HEADROOM_GB={cfg.memory_headroom_gb} for the KV cache and the OS",
                    d), lines
    return Item("memory", "go", fits, d), lines


def nodes_card_layers(nodes: dict[int, NodeServing]) -> int | None:
    """n_layers of a built-in card, when a node has one."""
    return next((int(n.exo["builtin_card"]["n_layers"]) for _, n in sorted(nodes.items())
                 if (n.exo.get("builtin_card") or {}).get("n_layers")), None)


def _fit_way_out(meta: RepoMeta, mem: dict[int, dict], size: int, n: int, avail: int) -> str:
    """The ways out that would fit, each checked against the nodes' figures (`avail`: their available memory in
    all): another node like these (when the suite's 4 allow one), free memory (when the installed total holds the
    model), the 4-bit variant (when it fits what is available); else a smaller model."""
    total = sum(int(m.get("total_bytes") or 0) for m in mem.values())
    outs = []
    if n < 4 and avail * (n + 1) // n >= size:
        outs.append(f"add a node like these (min_nodes={n + 1})")
    if total >= size:
        outs.append(f"free memory on the nodes ({hb(total)} installed; quit other apps and models)")
    q = meta.config.get("quantization") if isinstance(meta.config, dict) else None
    bits = q.get("bits") if isinstance(q, dict) else (16 if isinstance(meta.config, dict) else None)
    if isinstance(bits, int) and bits > 4 and size * 4 // bits <= avail:
        outs.append(f"pick the 4-bit variant (about {hb(size * 4 // bits)})")
    return "; or ".join(outs) if outs else "pick a smaller model (no variant of this one fits these nodes)"


def card_item(meta: RepoMeta, nodes: dict[int, NodeServing], model_id: str) -> Item:
    """EXO's built-in card on every node that answered, else whether POST /models/add can build one."""
    have = sorted(k for k, n in nodes.items() if n.exo.get("builtin_card"))
    asked = sorted(k for k, n in nodes.items() if n.exo.get("model_types") or "builtin_card" in n.exo)
    if have and have == asked:
        card = nodes[have[0]].exo["builtin_card"]
        return Item("card", "go", f"built-in card on {', '.join(f'node{k}' for k in have)} ({card['path']}, "
                                  f"storage_size {hb(card.get('storage_size'))})", {"builtin": True})
    c = meta.config
    if not isinstance(c, dict):
        return Item("card", "unknown", _config_unknown(meta), {"builtin": False})
    why = []
    layers, hidden = _text_value(c, LAYER_KEYS), _text_value(c, ("hidden_size",))
    if not layers or layers <= 0:
        why.append(f"{CONFIG} has no layer count ({', '.join(LAYER_KEYS)})")
    if not hidden or hidden <= 0:
        why.append(f"{CONFIG} has no hidden_size")
    if INDEX not in meta.all_files:
        why.append(f"the repo has no {INDEX} (EXO sizes a new card from it)")
    d = {"builtin": False, "n_layers": layers, "hidden_size": hidden}
    if why:
        return Item("card", "no-go", f"EXO has no card for {model_id} and POST /models/add would fail: "
                                     + "; ".join(why) + " (the canary could not add one; a built-in card in exo's "
                                     "resources/inference_model_cards/ on every node is the only way in)", d)
    extra = "" if (meta.index or {}).get("total_size") is not None else (
        f" ({INDEX} has no metadata.total_size: EXO asks the hub for the size, which an offline exo cannot)")
    return Item("card", "warn" if extra else "go", f"no built-in card; the canary adds one with POST /models/add "
                                                   f"(n_layers {layers}, hidden_size {hidden}){extra}", d)


FACT_OF = {"format": Fact.unloadable_format, "architecture": Fact.unknown_architecture, "memory": Fact.does_not_fit,
           "card": Fact.card_impossible}


def judge(meta: RepoMeta, nodes: dict[int, NodeServing], cfg: RunConfig) -> Verdict:
    """The serving verdict of `meta` on `nodes` (pure): a Verdict whose details are the block (`block`)."""
    arch, arch_lines = architecture_item(meta, nodes)
    memory, memory_lines = memory_item(meta, nodes, cfg)
    items = [format_item(meta, cfg.model_id), quantization_item(meta), arch, memory,
             card_item(meta, nodes, cfg.model_id)]
    warnings = [*arch_lines, *memory_lines]
    warnings += [f"serving verdict: {i.name} {i.status}: {i.line}" for i in items
                 if i.status == "warn" or (i.status == "unknown" and i.name != "quantization")]
    problems = [f"will not serve ({i.name}): {i.line}" for i in items if i.status == "no-go"]
    facts = {FACT_OF[i.name]: _fact_value(i) for i in items if i.status == "no-go"}
    overridden = bool(problems) and cfg.allow_serving_no_go
    if overridden:
        warnings += [f"{p} (overridden by {OVERRIDE_OPTION})" for p in problems]
        problems, facts = [], {}
    details = {"outcome": outcome_of(items, bool(problems), overridden), "source": meta.source,
               "overridden": overridden, "seconds": None,
               "items": {i.name: {"status": i.status, "line": i.line, **i.details} for i in items}}
    return Verdict.judged(problems, details["outcome"], details, facts, warnings)


def _fact_value(item: Item) -> Any:
    d = item.details
    if item.name == "architecture":
        nodes = {f"node{k}": d.get("module") or d.get("model_type") for k in d.get("unknown_on") or []}
        return nodes or d.get("model_type")
    if item.name == "format":
        return d.get("format") or "none"
    if item.name == "memory":
        return {"size_bytes": d.get("size_bytes"), "available_bytes": d.get("available_bytes")}
    return item.line


def unknown_verdict(why: str) -> Verdict:
    """A verdict with every item unknown (no metadata could be read): one warning, never a stop."""
    items = {name: {"status": "unknown", "line": why} for name in ORDER}
    return Verdict.passed("UNKNOWN", {"outcome": "UNKNOWN", "source": "none", "overridden": False, "seconds": None,
                                      "items": items}, warnings=[f"serving verdict: unknown ({why})"])


def serving_verdict(cfg: RunConfig, nodes: dict[int, NodeServing]) -> Verdict:
    """The verdict for the run: the hub's metadata (a node's cached tree and files when the hub cannot be read),
    or with `--audit` the files on disk (node 1's, else the first node holding any)."""
    if cfg.audit:
        meta = next((m for _, n in sorted(nodes.items()) if (m := repo_meta_local(cfg, n, tree=False))), None)
        return judge(meta, nodes, cfg) if meta else unknown_verdict("no model files on any node to audit")
    got = repo_meta_hub(cfg)
    if isinstance(got, RepoMeta):
        return judge(got, nodes, cfg)
    meta = next((m for _, n in sorted(nodes.items()) if (m := repo_meta_local(cfg, n, tree=True))), None)
    if meta is None:
        return unknown_verdict(f"the hub's file list cannot be read ({got}) and no node has a cached hub tree")
    v = judge(meta, nodes, cfg)
    v.warnings.insert(0, f"serving verdict from {meta.source}: the hub's file list cannot be read ({got})")
    return v


def serving_preflight(nodes: dict[int, Node], cfg: RunConfig,
                      each: Callable[[Callable[[int], NodeServing], list[int]], dict[int, NodeServing]]) -> Verdict:
    """Preflight's serving verdict: every node's `serving` probe at once (`each(fn, ks)` runs fn on each k), then
    `serving_verdict`; details["seconds"] is what it took, details["nodes"] what each node's probe saw."""
    t0 = time.monotonic()
    answers = each(lambda k: node_serving(nodes[k], k, cfg), sorted(nodes)) if nodes else {}
    v = serving_verdict(cfg, answers)
    v.details["seconds"] = round(time.monotonic() - t0, 3)
    v.details["nodes"] = {f"node{k}": {"memory": a.memory, "error": a.error,
                                       "exo": {key: val for key, val in a.exo.items() if key != "model_types"}
                                       | {"n_model_types": len(a.exo.get("model_types") or [])}}
                          for k, a in sorted(answers.items())}
    return v


def profile_fields(block: dict[str, Any] | None) -> dict[str, Any]:
    """What the model profile keeps of a serving verdict block: {"serving": {model_type, architectures, format,
    quantization, size_bytes}} (what does not change from run to run; empty without a verdict)."""
    if not block:
        return {}
    items = block.get("items") or {}
    arch, fmt, quant, mem = (items.get(k) or {} for k in ("architecture", "format", "quantization", "memory"))
    out = {"model_type": arch.get("model_type"), "architectures": arch.get("architectures"),
           "format": fmt.get("format"), "quantization": quant.get("line") if quant.get("status") != "unknown" else None,
           "size_bytes": mem.get("size_bytes")}
    return {"serving": {k: v for k, v in out.items() if v is not None}}
