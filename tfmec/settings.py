"""The settings of a run, in small typed sections, and the command line generated from them.

:class:`Settings` (:class:`tfmec.experiment.RunConfig` is it with its ``validate``) is made of one
section per concern: :class:`DataSettings` (``cfg.input``), :class:`RunSettings` (``cfg.run``:
methods, seed, output folder, progress), :class:`ModelSettings` (``cfg.network``),
:class:`TrainingSettings` (``cfg.training``), :class:`MECSettings` (``cfg.mec``),
:class:`AFMSettings` (``cfg.afm``), :class:`BaselineSettings` (``cfg.baselines``),
:class:`BudgetSettings` (``cfg.budget``), :class:`ExportSettings` (``cfg.exporting``) and
:class:`CheckpointSettings` (``cfg.checkpoint``). Every setting keeps its flat name too:
``cfg.alpha`` reads and writes ``cfg.mec.alpha``, ``RunConfig(alpha=1e-3)`` sets it, and
``dataclasses.replace(cfg, alpha=1e-3)`` copies with it.

Each field is declared once, with :func:`setting`: its default, its flag, help, choices and value
check. From that declaration come

- the checks of each field (type, choices, range: :meth:`Settings.check_fields`, the first step of
  ``RunConfig.validate``; the settings that must agree with each other, and the methods, are checked
  by :func:`tfmec.validation.check_run_settings`);
- the JSON of ``--config FILE`` and ``best_config.json`` (:meth:`Settings.to_dict`,
  :meth:`Settings.from_dict`: flat ``{"alpha": ...}`` or nested ``{"mec": {"alpha": ...}}``);
- the options of ``tfmec run`` and ``tfmec tune`` (:func:`add_setting_arguments`; ``tfmec tune``'s own
  options come from :class:`TuneSettings` and its swept ranges from :class:`SweepSettings`).

The stage-1 settings that :func:`tfmec.mec.learn_codes` takes have their defaults in its signature
(:func:`tfmec.mec.codes.stage1_default`): the MEC section's defaults, and the settings a saved code
set does not record (:meth:`tfmec.mec.codes.CodeSet.setting`), are read there.

Loading this module imports only :mod:`tfmec.validation`: choices that live in other modules
(models, formats, engines, optimizers) and the stage-1 defaults are looked up when they are needed.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from typing import Any, Callable, Sequence, Union

from tfmec.validation import flag_name

STAGE2_MODES = ("finetune", "retrain", "none")
ORACLES = ("random", "bayesian", "hyperband")  # tfmec tune --oracle
TUNABLE_METHODS = ("mec", "mec+afm")  # tfmec tune --method


# ----------------------------------------------------------------------------------- choices looked up late
def _models():
    from tfmec.models import MODELS

    return sorted(MODELS)


def _formats():
    from tfmec.data.readers import FORMATS

    return tuple(FORMATS)


def _engines():
    from tfmec.data.readers import ENGINES

    return tuple(ENGINES)


def _optimizers():
    from tfmec.training import OPTIMIZERS

    return tuple(OPTIMIZERS)


def _stage1_default(name: str):
    def default():
        from tfmec.mec.codes import stage1_default

        return stage1_default(name)

    return default


# ----------------------------------------------------------------------------------- value parsers (flags)
def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _numbers(kind, what: str):
    def parse(text: str) -> list:
        try:
            return [kind(t) for t in csv_list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


float_list = _numbers(float, "numbers")
int_list = _numbers(int, "integers")


def float_range(text: str):
    """``LOW,HIGH`` -> (low, high); ``VALUE`` -> value (a fixed hyperparameter)."""
    try:
        values = [float(t) for t in csv_list(text)]
    except ValueError:
        values = []
    if len(values) == 1:
        return values[0]
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH or one number, got {text!r}")
    return tuple(values)


# ----------------------------------------------------------------------------------- value checks
def at_least(low):
    """A check: the value is ``>= low``."""
    return lambda v: "" if v >= low else f"must be at least {low}, got {v}"


def positive(v) -> str:
    return "" if v > 0 else f"must be positive, got {v}"


def non_negative(v) -> str:
    return "" if v >= 0 else f"must be >= 0, got {v}"


def within(low, high, *, open_low: bool = False):
    """A check: ``low <= v <= high`` (``low < v`` with ``open_low``)."""
    text = f"{'(' if open_low else '['}{low}, {high}]"
    return lambda v: "" if (low < v if open_low else low <= v) and v <= high else f"must be in {text}, got {v}"


def each(check):
    """A check of every item of a list (the item is named in the message)."""
    def check_items(values) -> str:
        for item in values:
            problem = check(item)
            if problem:
                return f"{item!r}: {problem}"
        return ""

    return check_items


def _share_item(item) -> str:
    field, eq, other = str(item).partition("=")
    ok = bool(eq and field and other and field != other)
    return "" if ok else "expected FIELD=OTHER with two different column names (e.g. history=movie_id)"


def _list_item(item) -> str:
    return "" if str(item).partition(":")[0] else "expected COLUMN or COLUMN:SEPARATOR"


def _frontier(ratios) -> str:
    bad = [r for r in ratios if not float(r) >= 1]
    return f"ratios must be >= 1, got {bad}" if bad else ""


# ----------------------------------------------------------------------------------- declaring a setting
NO_FLAG = object()
"""``setting(flag=NO_FLAG)``: a setting of config files and the Python API only (no command-line flag)."""


def setting(default=dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, help: str | None = None,
            flag: Any = None, dest: str | None = None, switch: Any = dataclasses.MISSING,
            parse: Callable[[str], Any] | None = None, action: str | None = None, metavar: str | None = None,
            choices: Sequence | Callable[[], Sequence] | None = None, cli_choices: bool = False,
            noun: str | None = None, check: Callable[[Any], str] | None = None, group: str | None = None,
            exclusive: str | None = None, split_text: bool = True):
    """A settings field with everything the command line and the checks need to know about it.

    default / factory: the default (``factory``: computed on each use, e.g. learn_codes' defaults).
    help: the flag's help; ``{default}`` in it is replaced by the default, and a help that names no
        default gets ``(default X)`` appended when there is one.
    flag: the option (default ``--field-name``; :data:`NO_FLAG` for a setting of config files and the
        Python API only). dest: argparse's destination (default the field name).
    switch: the flag takes no value and sets the field to this value (``--quiet``: 0, ``--no-export``:
        False, ``--share-codebooks``: True).
    parse: the flag value's parser (default from the annotation: int, float, str, comma-separated
        lists); action: ``"append"`` for a repeatable flag; metavar: argparse's.
    choices: the allowed values (or a function returning them, looked up when needed); ``cli_choices``
        also makes argparse refuse others; ``noun`` names the setting in the message
        (``unknown model 'x'``; default the flag).
    check: ``check(value) -> problem`` ("" when fine; the message is the flag and the problem), or
        raises ``ValueError`` with the whole message. Not called for None.
    group: the ``--help`` group (default the section's :attr:`Section.GROUP`); ``exclusive``: flags
        with the same key are mutually exclusive.
    split_text: a list setting given as text in a config file is split at commas.
    """
    metadata = dict(help=help, flag=flag, dest=dest, switch=switch, parse=parse, action=action, metavar=metavar,
                    choices=choices, cli_choices=cli_choices, noun=noun, check=check, group=group,
                    exclusive=exclusive, split_text=split_text)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_default(field: dataclasses.Field):
    """A field's default value (calling its factory)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def kind(annotation) -> tuple[str, bool]:
    """``("int" | "float" | "bool" | "str" | "seq_str" | "seq_float" | "", optional)`` of a field's
    annotation text (``from __future__ import annotations`` keeps annotations as strings)."""
    text = str(annotation).replace(" ", "")
    optional = "|None" in text or "Optional[" in text
    text = text.replace("|None", "").replace("Optional[", "").rstrip("]") if optional else text
    return {"int": "int", "float": "float", "bool": "bool", "str": "str", "Sequence[str]": "seq_str",
            "Sequence[float]": "seq_float"}.get(text, ""), optional


def _number_problem(value, kind_: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'an integer' if kind_ == 'int' else 'a number'}, got {value!r} ({type(value).__name__})"
    if kind_ == "int" and not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return ""
        return f"must be an integer, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return ""


def _type_problem(value, kind_: str) -> str:
    if kind_ in ("int", "float"):
        return _number_problem(value, kind_)
    if kind_ == "bool":
        return "" if isinstance(value, bool) else f"must be true or false, got {value!r} ({type(value).__name__})"
    if kind_ == "str":
        return "" if isinstance(value, str) else f"must be a string, got {value!r} ({type(value).__name__})"
    if not isinstance(value, (list, tuple)):
        return f"must be a list, got {value!r}"
    for item in value:
        if kind_ == "seq_str" and not isinstance(item, str):
            return f"must hold strings, got {item!r}"
        if kind_ == "seq_float" and _number_problem(item, "float"):
            return f": every entry {_number_problem(item, 'float')}"
    return ""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What :func:`setting` declared about one field (read with :func:`spec`)."""

    name: str
    section: type
    field: dataclasses.Field

    def __getattr__(self, key):  # the metadata of setting(): help, flag, dest, switch, parse, check, ...
        if key.startswith("__") or key in ("name", "section", "field"):
            raise AttributeError(key)
        try:
            return self.field.metadata[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def kind(self) -> tuple[str, bool]:
        return kind(self.field.type)

    @property
    def default(self):
        return field_default(self.field)

    @property
    def option(self) -> str | None:
        """The command-line flag (None for a setting without one)."""
        flag = self.field.metadata.get("flag")
        return None if flag is NO_FLAG else (flag or flag_name(self.name))

    @property
    def label(self) -> str:
        """How messages name the setting: its flag, or its name when it has none."""
        return self.option or self.name

    def allowed(self):
        choices = self.field.metadata.get("choices")
        return choices() if callable(choices) else choices

    def from_flag(self, raw):
        """The field value of the flag's parsed value (a switch: its value when given)."""
        if self.switch is not dataclasses.MISSING:
            return self.switch if raw else self.default
        return raw


def spec(section: type, name: str) -> Spec:
    return Spec(name, section, {f.name: f for f in dataclasses.fields(section)}[name])


def specs(section) -> list[Spec]:
    """The :class:`Spec` of every field of a section (class or instance), in order."""
    cls = section if isinstance(section, type) else type(section)
    return [Spec(f.name, cls, f) for f in dataclasses.fields(cls)]


# ----------------------------------------------------------------------------------- sections
class Section:
    """A group of settings (a dataclass whose fields are declared with :func:`setting`)."""

    GROUP: str | None = None  # the --help group of its flags (None: the command's own options)

    def check_types(self) -> None:
        """Every setting of the type its field declares: integers are integers, numbers are finite
        (``inf`` and ``nan`` are refused everywhere), flags are booleans, names are strings, lists hold
        the right items; whether the value came from a flag or a ``--config`` file. Integral floats of
        an integer setting (``16.0`` from JSON) are turned into ints."""
        for s in specs(self):
            kind_, optional = s.kind
            value = getattr(self, s.name)
            if not kind_ or (optional and value is None):
                continue
            problem = _type_problem(value, kind_)
            if problem:
                gap = "" if problem.startswith(":") else " "
                raise ValueError(f"{flag_name(s.name)} (setting {s.name!r}){gap}{problem}")
            if kind_ == "int" and isinstance(value, float):
                setattr(self, s.name, int(value))

    def check_values(self) -> None:
        """Every setting among its choices and inside its range (call after :meth:`check_types`)."""
        for s in specs(self):
            value = getattr(self, s.name)
            if value is None:
                continue
            allowed = s.allowed()
            if allowed is not None and value not in allowed:
                raise ValueError(f"unknown {s.noun or s.label} {value!r}; choose one of {allowed}")
            problem = s.check(value) if s.check is not None else ""
            if problem:
                raise ValueError(f"{s.label}{'' if problem.startswith(':') else ' '}{problem}")

    def validate(self) -> None:
        """:meth:`check_types`, then :meth:`check_values`."""
        self.check_types()
        self.check_values()

    def to_dict(self) -> dict:
        """``{field: value}``, lists for sequences (JSON-ready)."""
        return {s.name: _jsonable(getattr(self, s.name)) for s in specs(self)}

    @classmethod
    def from_namespace(cls, args):
        """The section from parsed arguments (every flag filled by :class:`SettingsParser`)."""
        return cls(**{s.name: s.from_flag(getattr(args, s.dest or s.name)) for s in specs(cls) if s.option})


def _jsonable(value):
    return list(value) if isinstance(value, (tuple, list)) else value


@dataclasses.dataclass
class RunSettings(Section):
    """What to run and where: the methods side by side, the seed, the output folder, progress output."""

    methods: Sequence[str] = setting(
        ("none",), flag="--method", dest="methods",
        help="comma-separated methods run side by side: none (uncompressed baseline), mec, pq (plain k-means PQ), "
             "pq-no-retrain, mec-no-pwr, mec-no-contrastive (ablations), afm, mec+afm, int8 / int4 (post-training "
             "int8 / int4 tables; with --memory-budget or --target-ratio, ids hashed into fewer quantised rows to "
             "fit), hash (hashing trick at --hash-bytes), qr (quotient-remainder tables at the budget) "
             "(default {default})")
    seed: int = setting(0, group="data", help="seeds the split, the initialisation and every sampling")
    out: str = setting("runs/latest", help="output directory")
    verbose: int = setting(1, flag="--quiet", dest="quiet", switch=0, group="model and training",
                           help="no progress bars")


@dataclasses.dataclass
class DataSettings(Section):
    """The data files, how they are read, and how they become model inputs (vocabularies, split, batches)."""

    GROUP = "data"

    data: str = setting("synthetic", help="file path(s), comma-separated, or 'synthetic' (default)")
    rows: int | None = setting(None, check=at_least(10),
                               help="rows to read (synthetic: rows to generate, default 200000)")
    format: str | None = setting(
        None, choices=_formats, noun="format",
        help="criteo, avazu, csv, libsvm (libfm), mind (MIND behaviors.tsv; news.tsv beside it adds category "
             "columns), movielens (ratings.dat or RecBole .inter; movies/users files beside it add genres and user "
             "columns; history = earlier movies), parquet or tfrecord")
    label: str | None = setting(None, help="label column (csv, parquet, tfrecord)")
    engine: str | None = setting(
        None, choices=_engines, cli_choices=True,
        help="parquet: the reading library, pyarrow (default) or tfio (tensorflow-io's IODataset.from_parquet; "
             "needs tensorflow-io 0.37.1 on TensorFlow 2.16.x: make test-io)")
    label_threshold: float | None = setting(None, help="label = value >= threshold (e.g. ratings)")
    field_map: str | None = setting(None, help="libsvm: file of 'field:value<TAB>index' lines")
    numeric: Sequence[str] = setting((), help="csv: comma-separated numeric columns")
    drop: Sequence[str] = setting(
        (), help="comma-separated columns to leave out (any format: e.g. --format mind --drop history for a model "
                 "without the click history)")
    sep: str | None = setting(None, help="csv: field separator (default: sniffed)")
    names: Sequence[str] = setting(
        (), help="csv: comma-separated column names of a file without a header row (e.g. MovieLens ratings.dat: "
                 "user_id,movie_id,rating,timestamp)")
    lists: Sequence[str] = setting(
        (), flag="--list", action="append", metavar="COLUMN[:SEP]", check=each(_list_item), split_text=False,
        help="csv: a multi-valued column (repeat for several): its cells hold values oldest first, separated by "
             "SEP (default: whitespace), e.g. --list 'genres:|' --list history")
    shares: Sequence[str] = setting(
        (), flag="--share", action="append", metavar="FIELD=OTHER", check=each(_share_item),
        help="FIELD uses OTHER's vocabulary and embedding table (repeatable), e.g. --share history=movie_id "
             "(MIND's history shares news_id by itself)")
    max_length: int = setting(50, check=at_least(1),
                              help="values kept per row of a multi-valued field, most recent first (default {default})")
    min_count: int = setting(2, check=at_least(1), help="values seen fewer times share the out-of-vocabulary id")
    batch_size: int = setting(1024, check=positive, help="rows per training and evaluation batch")
    fractions: Sequence[float] = setting((0.8, 0.1, 0.1), flag=NO_FLAG)  # train, validation, test shares

    @property
    def list_columns(self) -> dict:
        """``{column: value separator or None}`` of ``lists`` (``"genres:|"`` -> ``{"genres": "|"}``)."""
        out = {}
        for item in self.lists:
            name, colon, sep = str(item).partition(":")
            out[name] = sep if colon and sep else None
        return out

    @property
    def shared_tables(self) -> dict:
        """``{field: field whose table it shares}`` of ``shares`` (``"history=movie_id"``)."""
        return dict(str(item).split("=", 1) for item in self.shares)

    @property
    def data_paths(self) -> list[str]:
        """The data files of ``data`` (comma-separated paths)."""
        return [p for p in self.data.split(",") if p]


@dataclasses.dataclass
class ModelSettings(Section):
    """The model: its kind and embedding width."""

    GROUP = "model and training"

    model: str = setting(
        "deepfm", choices=_models, noun="model",
        help="lr, fm, deepfm, dcnv2, pnn, gdcn, autoint or din (target attention over a multi-valued field that "
             "shares a single-valued field's table, e.g. MIND's history)")
    embedding_dim: int = setting(16, check=positive, help="embedding width d of every table")


@dataclasses.dataclass
class TrainingSettings(Section):
    """How every model is trained (early stopping on validation AUC)."""

    GROUP = "model and training"

    epochs: int = setting(20, check=positive, help="at most this many epochs per training run")
    patience: int = setting(3, check=at_least(1), help="epochs without a better validation AUC before stopping")
    learning_rate: float = setting(1e-3, check=positive, help="the optimizer's step size")
    optimizer: str = setting(
        "adam", choices=_optimizers, cli_choices=True,
        help="adam (Keras's; densifies embedding gradients) or lazy_adam (updates only the rows a batch touches: "
             "use it for large tables)")


@dataclasses.dataclass
class MECSettings(Section):
    """MEC: stage 1 (PQ codes with the popularity-weighted regulariser and the contrastive term) and stage 2."""

    GROUP = "MEC"

    subspaces: int = setting(factory=_stage1_default("num_subspaces"), check=at_least(1),
                             help="MEC: sub-spaces M per table")
    codewords: int = setting(factory=_stage1_default("num_codewords"), check=within(2, 65536),
                             help="MEC: codewords K per sub-space")
    alpha: float = setting(factory=_stage1_default("alpha"), check=non_negative,
                           help="MEC: weight of the popularity-weighted regulariser")
    beta: float = setting(factory=_stage1_default("beta"), check=non_negative,
                          help="MEC: weight of the contrastive term")
    stage1_epochs: int = setting(factory=_stage1_default("epochs"), check=non_negative,
                                 help="MEC: epochs of stage 1 (early stopping)")
    stage2: str = setting(
        "finetune", choices=STAGE2_MODES, cli_choices=True,
        help="MEC stage 2: fine-tune the trained baseline with quantised tables (default) or retrain a fresh model "
             "(the paper), or none (no training after quantisation)")
    stage2_lr_scale: float = setting(0.1, check=positive,
                                     help="MEC fine-tuning: learning rate = --learning-rate times this")
    stage2_patience: int = setting(1, check=at_least(1),
                                   help="MEC/AFM fine-tuning: epochs without a better validation AUC before stopping")
    bits: int | None = setting(None, help="MEC: store codes bit-packed at this width (4 for K=16)")
    share_codebooks: bool = setting(
        False, switch=True, help="MEC: small tables of the same width share one codebook set (beyond the paper)")
    head_rows: float = setting(
        0.0, help="MEC: keep the most frequent rows of each table exact (beyond the paper): a share of each table's "
                  "rows when < 1, else a count (default 0: none)")


@dataclasses.dataclass
class AFMSettings(Section):
    """AFM: low-rank factoring of the MLP's Dense layers, then fine-tuning."""

    GROUP = "AFM"

    afm_energy: float = setting(0.9, check=within(0, 1, open_low=True),
                                help="AFM: share of output variance each layer keeps")
    afm_param_budget: float | None = setting(
        None, check=within(0, 1, open_low=True),
        help="AFM: cap each factored layer at this share of its parameters (0 < share <= 1)")
    afm_calibration_batches: int = setting(50, check=at_least(1), help="AFM: training batches for the PCA")
    afm_fine_tune_epochs: int = setting(
        3, check=non_negative,
        help="AFM: at most this many fine-tuning epochs per step (early stopping keeps the best)")


@dataclasses.dataclass
class BaselineSettings(Section):
    """The competitors' own settings (the hashing trick's bytes)."""

    GROUP = "hashing trick (method hash)"

    hash_bytes: int | None = setting(
        None, metavar="BYTES", check=positive,
        help="bytes of the hashed embedding tables (default: the MEC model's embedding bytes when mec runs too, "
             "else 1/8 of the baseline's)")


@dataclasses.dataclass
class BudgetSettings(Section):
    """One byte budget for every embedding method (issue 19), and the AUC-vs-bytes frontier."""

    GROUP = "byte budget (mec tiers; every competitor sized to the same bytes)"

    memory_budget: int | None = setting(
        None, metavar="BYTES", exclusive="budget",
        check=lambda v: "" if v >= 1 else f"must be a positive number of bytes, got {v}",
        help="bytes of all embedding tables together: mec chooses popularity tiers per table (exact head rows, PQ "
             "codes, a zero-byte hashed tail) for the best validation AUC within them; hash, qr, int8, int4 and pq "
             "are sized to the same bytes")
    target_ratio: float | None = setting(None, metavar="R", exclusive="budget", check=at_least(1),
                                         help="the same budget as a ratio: the uncompressed tables' bytes / R")
    frontier: Sequence[float] = setting(
        (), metavar="R1,R2,...", check=_frontier,
        help="also train every budgeted method of --method (mec, pq, hash, qr, int8, int4) at each of these ratios "
             "and draw test AUC against bytes, one line per method, into the report")


@dataclasses.dataclass
class ExportSettings(Section):
    """Export of every trained model: DIR/<method>/saved_model/<version>/ and model.onnx, parity on test rows."""

    export: bool = setting(True, flag="--no-export", dest="no_export", switch=False,
                           help="skip the SavedModel / ONNX export (DIR/<method>/saved_model/<version>/, model.onnx)")
    export_rows: int = setting(2048, flag=NO_FLAG, check=at_least(1))  # test rows of the parity check


@dataclasses.dataclass
class CheckpointSettings(Section):
    """Checkpoints: every fit (after each epoch) and stage 1 are saved there; a rerun resumes (tfmec.resume)."""

    checkpoint_dir: str | None = setting(
        None, metavar="DIR",
        help="checkpoint every training run after each epoch and MEC stage 1 every 100 steps in DIR; the same "
             "command run again resumes where a killed run stopped")


SECTIONS: dict[str, type] = {
    "input": DataSettings, "run": RunSettings, "network": ModelSettings, "training": TrainingSettings,
    "mec": MECSettings, "afm": AFMSettings, "baselines": BaselineSettings, "budget": BudgetSettings,
    "exporting": ExportSettings, "checkpoint": CheckpointSettings,
}
"""``RunConfig``'s sections: ``{attribute (and key of the nested JSON form): section class}``."""

SECTION_OF: dict[str, str] = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
"""``{flat setting name: its section}``."""

if len(SECTION_OF) != sum(len(dataclasses.fields(c)) for c in SECTIONS.values()) or set(SECTION_OF) & set(SECTIONS):
    raise AssertionError("a setting name is used twice (settings must have one flat name each)")


# ----------------------------------------------------------------------------------- all sections together
@dataclasses.dataclass(init=False)
class Settings:
    """Every section of :data:`SECTIONS`; every setting is also an attribute of its own (``cfg.alpha``
    is ``cfg.mec.alpha``) named like its command-line flag. :class:`tfmec.experiment.RunConfig` is
    this with :meth:`~tfmec.experiment.RunConfig.validate` (which knows the methods).

    ``RunConfig(alpha=1e-3, model="fm")`` sets flat settings (the others keep their defaults);
    ``RunConfig(mec=MECSettings(...))`` gives whole sections (copied); ``dataclasses.replace(cfg,
    epochs=3)`` copies with changes.
    """

    input: DataSettings
    run: RunSettings
    network: ModelSettings
    training: TrainingSettings
    mec: MECSettings
    afm: AFMSettings
    baselines: BaselineSettings
    budget: BudgetSettings
    exporting: ExportSettings
    checkpoint: CheckpointSettings

    def __init__(self, **settings):
        for name, cls in SECTIONS.items():
            given = settings.pop(name, None)
            if isinstance(given, dict):
                given = cls(**given)
            elif given is not None and not isinstance(given, cls):
                raise TypeError(f"{type(self).__name__}({name}=...) must be a {cls.__name__}, got "
                                f"{type(given).__name__}")
            object.__setattr__(self, name, cls() if given is None else dataclasses.replace(given))
        for name, value in settings.items():
            if name not in SECTION_OF:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}"
                                f"{_did_you_mean([name])}")
            setattr(self, name, value)

    def sections(self) -> list[tuple[str, Section]]:
        """``[(name, section)]`` in :data:`SECTIONS` order."""
        return [(name, getattr(self, name)) for name in SECTIONS]

    @classmethod
    def setting_fields(cls) -> dict[str, dataclasses.Field]:
        """``{flat setting name: its dataclass field}`` of every section (what ``dataclasses.fields`` gave
        when RunConfig was flat)."""
        return {f.name: f for section in SECTIONS.values() for f in dataclasses.fields(section)}

    def check_fields(self) -> None:
        """Raises ``ValueError`` naming the first bad setting by its own declaration: every field's type
        (:meth:`Section.check_types`), then its choices and range (:meth:`Section.check_values`)."""
        for _, section in self.sections():
            section.check_types()  # before anything compares or hashes a value of the wrong type
        for _, section in self.sections():
            section.check_values()

    def to_dict(self, nested: bool = False) -> dict:
        """The settings as a JSON-ready dict of flat setting names (what :meth:`from_dict` and ``tfmec run
        --config FILE`` read), or with ``nested`` one object per section (``{"mec": {"alpha": ...}}``)."""
        if nested:
            return {name: section.to_dict() for name, section in self.sections()}
        return {k: v for _, section in self.sections() for k, v in section.to_dict().items()}

    @staticmethod
    def flatten(values: dict, source: str = "config") -> dict:
        """``{flat setting name: value}`` of a flat or nested (``{"mec": {"alpha": ...}}``) settings
        object. Raises ``ValueError`` naming every unknown key and the likely meant one (``source``
        names where they came from, e.g. the file)."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of RunConfig settings, got {type(values).__name__}")
        flat, where, unknown = {}, {}, []
        for key, value in values.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ValueError(f"{source}: {key!r} is a section of settings ({', '.join(sorted(_names(key)))});"
                                     f" give a JSON object of them, got {value!r}")
                items = [(f"{key}.{k}", k, v) for k, v in value.items()]
                unknown += [q for q, k, _ in items if SECTION_OF.get(k) != key]
                items = [(q, k, v) for q, k, v in items if SECTION_OF.get(k) == key]
            elif key in SECTION_OF:
                items = [(key, key, value)]
            else:
                unknown.append(key)
                continue
            for qualified, name, value_ in items:
                if name in flat:
                    raise ValueError(f"{source}: setting {name!r} given twice ({where[name]!r} and {qualified!r})")
                flat[name], where[name] = value_, qualified
        if unknown:
            unknown = sorted(unknown)
            raise ValueError(f"{source}: unknown setting(s) {unknown}{_did_you_mean(unknown)}; known settings: "
                             f"{sorted(SECTION_OF)} (or nested by section: {', '.join(SECTIONS)})")
        return flat

    @classmethod
    def from_dict(cls, values: dict, source: str = "config"):
        """A config from ``{setting: value}`` or ``{section: {setting: value}}`` (missing settings keep their
        defaults; lists come back as lists; ``methods``, ``numeric``, ``drop``, ``names`` and ``shares`` may
        be comma-separated strings). Raises ``ValueError`` naming every unknown key (:meth:`flatten`)."""
        values = cls.flatten(values, source)
        fields = cls.setting_fields()
        for key, value in values.items():
            if isinstance(value, str) and kind(fields[key].type)[0] == "seq_str" and fields[key].metadata["split_text"]:
                values[key] = csv_list(value)
        cfg = cls(**values)
        for name, field in fields.items():  # JSON's shape: lists, whether given or defaults
            if kind(field.type)[0].startswith("seq") and isinstance(getattr(cfg, name), tuple):
                setattr(cfg, name, list(getattr(cfg, name)))
        return cfg


def _names(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def _did_you_mean(keys) -> str:
    """`` (did you mean 'codewords' for 'cdewords'?)`` for the keys with a near known setting name."""
    known = list(SECTION_OF) + list(SECTIONS)
    hints = []
    for key in keys:
        section, dot, name = str(key).rpartition(".")
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if match:
            best = match[0]
            if dot and best in SECTION_OF:
                best = f"{SECTION_OF[best]}.{best}"
            hints.append(f"{best!r} for {key!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _flat_property(section: str, name: str, writable: bool = True) -> property:
    def get(self):
        return getattr(getattr(self, section), name)

    def set_(self, value):
        setattr(getattr(self, section), name, value)

    return property(get, set_ if writable else None, doc=f"``{section}.{name}``")


for _section, _cls in SECTIONS.items():  # cfg.alpha is cfg.mec.alpha; cfg.data_paths is cfg.input.data_paths
    for _field in dataclasses.fields(_cls):
        setattr(Settings, _field.name, _flat_property(_section, _field.name))
    for _name, _value in vars(_cls).items():
        if isinstance(_value, property):
            setattr(Settings, _name, _flat_property(_section, _name, writable=False))
del _section, _cls, _field, _name, _value


# ----------------------------------------------------------------------------------- tfmec tune
@dataclasses.dataclass
class TuneSettings(Section):
    """``tfmec tune``'s own options (the data, model, training, MEC and AFM ones are ``RunConfig``'s)."""

    method: str = setting("mec", choices=TUNABLE_METHODS, cli_choices=True, help="what to tune (default {default})")
    trials: int = setting(10, check=at_least(1), help="trials to run (default {default})")
    memory_budget: int | None = setting(
        None, metavar="BYTES", check=positive,
        help="reject trials whose compressed embedding tables would need more bytes (not run)")
    oracle: str = setting("random", choices=ORACLES, cli_choices=True,
                          help="KerasTuner search algorithm (default {default}; hyperband varies stage-2 epochs up "
                               "to --epochs)")
    pack_codes: bool = setting(False, switch=True, help="store each trial's codes bit-packed at ceil(log2 K) bits")
    out: str = setting("runs/tune", help="output directory")


Range = Union[float, Sequence[float]]
Choices = Union[int, Sequence[int]]


@dataclasses.dataclass
class SweepSettings(Section):
    """The ranges ``tfmec tune`` sweeps (:class:`tfmec.tuning.SearchSpace`), named after the
    ``RunConfig`` settings they set: on the command line they take the place of those flags.

    ``alpha``, ``beta``: ``(low, high)`` sampled on a log scale, or one number (fixed).
    ``afm_energy``: ``(low, high)`` sampled linearly, or one number; used by ``mec+afm`` only.
    ``codewords`` (K), ``subspaces`` (M): a list of choices, or one number (fixed).
    """

    GROUP_NOTE = "swept: LOW,HIGH ranges or comma-separated choices; one value fixes it"

    alpha: Range = setting((1e-6, 1e-2), parse=float_range,
                           help="PWR weight range, log scale (default {default})")
    beta: Range = setting((1e-4, 1e-1), parse=float_range,
                          help="contrastive weight range, log scale (default {default})")
    codewords: Choices = setting((16, 64, 256), parse=int_list, help="choices of K (default {default})")
    subspaces: Choices = setting((2, 4, 8), parse=int_list, help="choices of M (default {default})")
    afm_energy: Range = setting((0.7, 0.99), parse=float_range,
                                help="mec+afm: range of the share of output variance each layer keeps "
                                     "(default {default})")


# ----------------------------------------------------------------------------------- the command line
class SettingsParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` for options made by :func:`add_setting_arguments`. Their argparse default
    is ``SUPPRESS``, so after parsing the options given are known: ``args.given_settings`` holds the
    ``RunConfig`` settings the command line gave (``{setting: value}``), and every option not given is
    then filled with its default (``args.alpha``, ``args.quiet`` ... are always there)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        given = dict(getattr(namespace, "given_settings", None) or {})
        for action in self._actions:
            s, target = getattr(action, "setting_spec", None), getattr(action, "setting_target", None)
            if s is None:
                continue
            if hasattr(namespace, action.dest):
                if target == "run":
                    given[s.name] = s.from_flag(getattr(namespace, action.dest))
            else:
                default = False if s.switch is not dataclasses.MISSING else s.default
                setattr(namespace, action.dest, _jsonable(default))
        namespace.given_settings = given
        return namespace, rest


def _help(s: Spec) -> str | None:
    text, default = s.help, s.default
    if isinstance(default, (tuple, list)):
        shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
    else:
        shown = str(default)
    if text and "{default}" in text:
        return text.replace("{default}", shown)
    if s.switch is not dataclasses.MISSING or default is None or default == () or "default" in (text or ""):
        return text
    return f"{text} (default {shown})" if text else f"default {shown}"


def _argument(s: Spec) -> dict:
    kwargs = dict(dest=s.dest or s.name, default=argparse.SUPPRESS, help=_help(s))
    if s.switch is not dataclasses.MISSING:
        return {**kwargs, "action": "store_true"}
    if s.metavar:
        kwargs["metavar"] = s.metavar
    if s.action:
        return {**kwargs, "action": s.action}
    kind_ = s.kind[0]
    parse = s.parse or {"int": int, "float": float, "seq_str": csv_list, "seq_float": float_list}.get(kind_)
    if parse is not None:
        kwargs["type"] = parse
    if s.cli_choices:
        kwargs["choices"] = list(s.allowed())
    return kwargs


def add_setting_arguments(parser: argparse.ArgumentParser, sections: Sequence[type], *, target: str = "run",
                          skip: Sequence[str] = (), swept: type | None = None,
                          groups: dict | None = None) -> dict:
    """Adds the flag of every setting of ``sections`` (section classes) that has one, except ``skip``,
    to ``parser`` (a :class:`SettingsParser`), in the ``--help`` group of each (made on first use).
    ``target``: ``"run"`` for ``RunConfig`` settings (collected in ``args.given_settings`` when given);
    anything else for options read from ``args`` directly. ``swept``: a section whose fields take the
    place of the same-named ones (``tfmec tune``'s ranges; their group notes it). Returns ``groups``:
    ``{title: argument group}`` (pass it again to add to the same groups)."""
    groups = {} if groups is None else groups
    exclusive = {}
    replaced = {s.name: s for s in specs(swept)} if swept is not None else {}
    noted = {s.group or section.GROUP for section in sections for s in specs(section) if s.name in replaced}
    for section in sections:
        for s in specs(section):
            if not s.option or s.name in skip:
                continue
            title = s.group or section.GROUP
            where = parser if title is None else groups.get(title)
            if where is None:
                note = f" ({swept.GROUP_NOTE})" if title in noted else ""
                where = groups[title] = parser.add_argument_group(title + note)
            if s.exclusive:
                key = (id(where), s.exclusive)
                where = exclusive[key] = exclusive.get(key) or where.add_mutually_exclusive_group()
            use, use_target = (replaced[s.name], "sweep") if s.name in replaced else (s, target)
            action = where.add_argument(use.option, **_argument(use))
            action.setting_spec, action.setting_target = use, use_target
    return groups


__all__ = ["Settings", "SECTIONS", "SECTION_OF", "Section", "RunSettings", "DataSettings", "ModelSettings",
           "TrainingSettings", "MECSettings", "AFMSettings", "BaselineSettings", "BudgetSettings", "ExportSettings",
           "CheckpointSettings", "TuneSettings", "SweepSettings", "SettingsParser", "add_setting_arguments",
           "setting", "NO_FLAG", "spec", "specs", "kind", "flag_name", "field_default",
           "STAGE2_MODES", "ORACLES", "TUNABLE_METHODS",
           "csv_list", "float_list", "int_list", "float_range", "at_least", "positive", "non_negative", "within",
           "each"]
