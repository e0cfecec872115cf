"""What a tuning protocol is: the `protocol` section of a sweep config (conf/sweep/official.yaml), read and
checked into typed parts.

A protocol has suites (one model, its tasks and the methods it compares, each named: a method joins a
protocol only where a suite lists it; `lora+loraplus` is LoRA trained by the LoRA+ optimizer, a row of its
own), one search shared by every cell (initial grid points, trials, step), the seeds, the selection split,
where its leaderboard goes, each method's search axis and pinned centre, and per model a note on the sanity
flags its table cannot clear. Bad values are one-line errors naming the key, the value and what is allowed.
"""

from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, OmegaConf

from harness.config.preflight import group_options
from harness.errors import HarnessError


@dataclass
class Suite:
    model: str
    tasks: list[str]
    methods: list[str]
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    task_overrides: dict[str, list[str]] = field(default_factory=dict)
    seeds_overrides: dict[str, list[str]] = field(default_factory=dict)  # task → the seeds stage's own overrides


@dataclass
class Search:
    """The sequential log-grid search of every cell (harness/protocol/lr_search.py): value = default × step^j."""

    initial: list[float]
    trials: int
    step: float


AXES = ("lr", "head_lr", "tied")  # what a method's search varies: its lr, its head's lr, or both by one factor


@dataclass
class Protocol:
    search_seed: int
    seeds: list[int]
    search: Search
    select_split: str
    leaderboard: str
    suites: list[Suite]
    axes: dict[str, str] = field(default_factory=dict)  # method → axis (default "lr")
    centres: dict[str, dict] = field(default_factory=dict)  # method → {lr, head_lr}: the search's centre, pinned
    flag_notes: dict[str, str] = field(default_factory=dict)  # model → why its table's remaining sanity flags stand


def check_methods(names: list[str], where: str) -> list[str]:
    """`names` if each is a method config (conf/method), or one trained by a named optimizer (conf/optimizer) as
    `<method>+<optimizer>` (`lora+loraplus`: the label of its records), else a one-line error naming the
    unknown ones."""
    options = group_options()
    unknown = [
        name
        for name in names
        for method, _, optimizer in [name.partition("+")]
        if method not in options["method"] or (optimizer and optimizer not in options["optimizer"])
    ]
    if unknown:
        raise HarnessError(
            f"{where} names unknown methods {unknown}; available: {', '.join(options['method'])}, each as "
            f"<method>+<optimizer> with an optimizer of {', '.join(options['optimizer'])}"
        )
    return list(names)


def parse_suite(node: dict, where: str) -> Suite:
    """One suite; its methods an explicit list, so that a method added to the project never joins it unnamed."""
    allowed = [f.name for f in fields(Suite)]
    unknown = [key for key in node if key not in allowed]
    if unknown:
        raise HarnessError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    methods = node.get("methods")
    if not isinstance(methods, list) or not methods:
        raise HarnessError(
            f"{where}.methods: {methods!r} is not a list of methods; name each method the suite compares "
            f"(available: {', '.join(group_options()['method'])})"
        )
    return Suite(
        model=node["model"],
        tasks=list(node["tasks"]),
        methods=check_methods(methods, f"{where}.methods"),
        overrides=list(node.get("overrides", [])),
        method_overrides=dict(node.get("method_overrides", {})),
        task_overrides=dict(node.get("task_overrides", {})),
        seeds_overrides=dict(node.get("seeds_overrides") or {}),
    )


def parse_protocol(cfg: DictConfig) -> Protocol:
    if cfg.get("protocol") is None:
        sweeps = ", ".join(group_options()["sweep"])
        raise HarnessError(
            f"the config has no `protocol` section; choose a sweep that defines one (sweep=...; sweeps: {sweeps})"
        )
    node = OmegaConf.to_container(cfg.protocol, resolve=True)
    suites = [parse_suite(suite, f"protocol.suites[{number}]") for number, suite in enumerate(node["suites"])]
    search = node["search"]
    protocol = Protocol(
        node["search_seed"],
        list(node["seeds"]),
        Search(list(search["initial"]), int(search["trials"]), float(search["step"])),
        node.get("select_split", "validation"),
        node.get("leaderboard", cfg.results_dir),
        suites,
        dict(node.get("axes") or {}),
        dict(node.get("centres") or {}),
        dict(node.get("flag_notes") or {}),
    )
    check_methods(list(protocol.axes), "protocol.axes")
    models = group_options()["model"]  # a note on a model the suites leave out (a narrowed protocol) goes unused
    bad_notes = sorted(
        model for model, note in protocol.flag_notes.items() if model not in models or not isinstance(note, str)
    )
    if bad_notes:
        raise HarnessError(
            f"protocol.flag_notes: {', '.join(map(str, bad_notes))}: not a text under a model's name; "
            f"models: {', '.join(models)}"
        )
    bad_axes = {m: a for m, a in protocol.axes.items() if a not in AXES}
    if bad_axes:
        raise HarnessError(f"protocol.axes: {bad_axes} is not an axis; allowed: {', '.join(AXES)}")
    if (
        not protocol.search.initial
        or not protocol.seeds
        or protocol.search.trials < len(protocol.search.initial)
        or protocol.search.step <= 1
    ):
        raise HarnessError(
            "protocol: search.initial and seeds must each list at least one value, search.trials must be at "
            "least the number of initial points and search.step above 1"
        )
    return protocol
