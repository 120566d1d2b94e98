"""The public API (issue 21, item 4): one registry (tfmec/api_export.py) declares every public name at its
definition; each package's ``__all__`` is built from it; docs/api.md is generated from it; nothing public
before the registry disappeared; every public layer's docstring opens with an example that runs."""
from __future__ import annotations

import importlib
import inspect
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

import tfmec
from tfmec import api_doc, api_export
from tfmec.api_export import ExportError, export_value, exported, public_names, tfmec_export
from tfmec.backend import keras

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Every package's ``__all__`` before the registry (frozen from the source then): none of these may go.
BEFORE = {
    "tfmec": (
        "KERAS_MODE", "__version__", "afm", "baselines", "data", "export", "io", "keras", "layers", "mec", "models",
        "report"
    ),
    "tfmec.afm": (
        "AFMReport", "FINE_TUNE_KEYS", "FineTune", "LayerReport", "RankChoice", "StreamingMoments",
        "collect_moments", "compress", "cross_params", "dense_params", "dense_preactivation_moments",
        "embedding_output_moments", "embedding_params", "energy_curve", "factor_cross_network", "pca",
        "replace_layers", "run_fine_tune", "select_rank"
    ),
    "tfmec.baselines": (
        "ROW_SCALE_MIN_DIM", "TableShape", "allocate_buckets", "allocate_qr", "allocate_quantized",
        "hash_embeddings", "hashed_embedding_factory", "probe_tables", "qr_embedding_factory", "qr_embeddings",
        "quantize_embeddings", "quantized_buckets", "quantized_row_bytes", "table_bytes"
    ),
    "tfmec.data": (
        "AvazuReader", "CATEGORICAL", "CSVReader", "CTRData", "Chunk", "CriteoReader", "DataError",
        "FeatureEncoder", "Field", "LibSVMReader", "MindReader", "MovieLensReader", "NUMERIC", "NumericStats",
        "OOV_ID", "ParquetReader", "Reader", "Schema", "SyntheticCTR", "TFRecordReader", "Vocabulary",
        "assign_splits", "criteo_log_square", "default_schema", "load", "load_vocabularies", "open_reader",
        "save_vocabularies"
    ),
    "tfmec.data.readers": (
        "AVAZU_FEATURE_COLUMNS", "AVAZU_RAW_COLUMNS", "AvazuReader", "CRITEO_CATEGORICAL_COLUMNS", "CRITEO_COLUMNS",
        "CRITEO_NUMERIC_COLUMNS", "CSVReader", "Chunk", "CriteoReader", "ENGINES", "FORMATS", "LibSVMReader",
        "MindReader", "MovieLensReader", "ParquetReader", "READERS", "ReadStats", "Reader", "TFRecordReader",
        "TfioUnavailableError", "load_field_map", "load_movie_genres", "load_news_categories", "load_user_table",
        "make_chunk", "open_reader", "parse_float", "parse_label", "sniff_separator", "split_hour", "tfio_status"
    ),
    "tfmec.export": (
        "OUTPUT_KEY", "RequestError", "ServingModule", "apply_lookups", "check_parity", "declare_inputs",
        "directory_bytes", "encode_raw", "existing_versions", "format_response", "input_specs",
        "keras_probabilities", "load_signature", "max_abs_diff", "next_version", "onnx", "onnx_available",
        "onnx_session", "pad_lists", "predict_onnx", "predict_request", "predict_saved_model", "raw_from_ids",
        "read_lookups", "request_to_inputs", "saved_model", "vocabulary_path"
    ),
    "tfmec.graph": (
        "LayerRef", "TableRef", "child_layers", "find_tables", "is_table", "iter_layers", "keyed_by_table",
        "rebuild_functional", "resolve_table", "table_aliases", "table_dims"
    ),
    "tfmec.layers": (
        "AFMDense", "CrossNetV2", "FMInteraction", "FlattenFields", "GatedCrossNet", "HashedEmbedding",
        "InnerProduct", "Int8Embedding", "L2Penalty", "LinearTerms", "LowRankEmbedding", "MLP", "MaskedMeanPooling",
        "MaskedWeightedSum", "NumericEmbedding", "QREmbedding", "QuantizedEmbedding", "SelfAttentionInteraction",
        "SharedQuantizedEmbedding", "SparseReadEmbedding", "StackFields", "TargetAttentionInputs", "Tier",
        "TieredEmbedding", "contrastive_loss", "decode_codes", "hash_buckets", "logit_layer", "mlp_block",
        "pack_codes", "pair_indices", "quantize_int8", "semi_synthetic_negative_codes", "tiers_storage_bytes",
        "unpack_codes"
    ),
    "tfmec.mec": (
        "BudgetPlan", "CodeSet", "FieldCodes", "code_dtype", "compress_embeddings", "compress_to_budget",
        "count_ids", "learn_codes", "memory_report", "popularity_weights", "tables_from"
    ),
    "tfmec.models": (
        "AutoInt", "DCNv2", "DIN", "DeepFM", "FM", "FieldEmbeddings", "GDCN", "LR", "MODELS", "PNN", "build_inputs",
        "build_model", "check_schema", "default_embedding_factory", "embed_fields", "mean_pooling",
        "target_attention_pooling"
    ),
    "tfmec.report": (
        "FIGURES", "NoData", "REPORT_FILE", "results_table", "training_history", "write_report"
    ),
    "tfmec.training": (
        "EarlyStoppingOnAUC", "KeepLastEpoch", "KnownStepsProgbar", "MultiWorkerKerasError", "NonFiniteLossError",
        "OPTIMIZERS", "StopOnNonFiniteLoss", "check_fit_supported", "compile_ctr", "fit_early_stopping",
        "known_batches", "set_weight_arrays", "weight_arrays"
    ),
    "tfmec.callbacks": (
        "EarlyStoppingOnAUC", "KeepLastEpoch", "KnownStepsProgbar", "NonFiniteLossError", "StopOnNonFiniteLoss",
        "set_weight_arrays", "weight_arrays"
    ),
}


@pytest.fixture
def empty_registry(monkeypatch):
    """A fresh registry for the decorator's own tests (the package's stays untouched)."""
    monkeypatch.setattr(api_export, "_REGISTRY", {})
    monkeypatch.setattr(api_export, "_VALUE_DOCS", {})
    monkeypatch.setattr(api_export, "_SEALED", set())


def test_export_registers_and_public_names_binds(empty_registry):
    @tfmec_export("tfmec.fake.Thing", "tfmec.other.Thing")
    class Thing:
        """A thing."""

    @tfmec_export("tfmec.fake.helper")
    def helper():
        """Helps."""

    assert export_value("tfmec.fake.LIMIT", 3, doc="the limit") == 3
    assert Thing._tfmec_api == ("tfmec.fake.Thing", "tfmec.other.Thing")
    assert api_export.api_paths(type("Sub", (Thing,), {})) == ()  # a subclass is not public by inheritance
    assert exported("tfmec.fake") == {"Thing": Thing, "helper": helper, "LIMIT": 3}
    assert exported("tfmec.other") == {"Thing": Thing} and exported("tfmec.none") == {}
    assert api_export.value_doc("tfmec.fake.LIMIT") == "the limit"

    namespace = {"__name__": "tfmec.fake", "helper": importlib}  # a submodule of the same name gives way
    assert public_names(namespace, importlib) == ["LIMIT", "Thing", "helper"]
    assert namespace["Thing"] is Thing and namespace["helper"] is helper and namespace["LIMIT"] == 3
    tfmec_export("tfmec.fake.helper")(helper)  # the same object again: fine


def test_export_refuses_bad_paths(empty_registry):
    @tfmec_export("tfmec.fake.f")
    def f():
        pass

    with pytest.raises(ExportError, match="registered twice"):
        tfmec_export("tfmec.fake.f")(lambda: None)
    with pytest.raises(ExportError, match="registered twice"):
        export_value("tfmec.fake.f", 1)
    for bad in ("keras.layers.Thing", "tfmecx.Thing", "tfmec", "tfmec.fake.not-a-name", ""):
        with pytest.raises(ExportError):
            tfmec_export(bad)
    with pytest.raises(ExportError, match="classes and functions"):
        tfmec_export("tfmec.fake.VALUE")(42)
    with pytest.raises(ExportError, match="already binds"):
        public_names({"__name__": "tfmec.fake", "f": "something else"})
    public_names({"__name__": "tfmec.fake"})
    with pytest.raises(ExportError, match="after tfmec.fake's __all__ was built"):
        export_value("tfmec.fake.LATE", 1)


def test_every_package_all_is_its_registry():
    """Each registered package's ``__all__`` is exactly its registered names, bound to those objects."""
    assert {"tfmec", "tfmec.layers", "tfmec.training", "tfmec.evaluation"} <= set(api_export.packages())
    for package in api_export.packages():
        module = importlib.import_module(package)
        names = exported(package)
        assert sorted(module.__all__) == sorted(names), package
        wrong = [n for n, obj in names.items() if getattr(module, n) is not obj]
        assert not wrong, f"{package} binds {wrong} to other objects than the registered ones"


def test_nothing_public_disappeared():
    """Every name public before the registry is still in its package's ``__all__`` and importable."""
    lost = {package: sorted(set(names) - set(importlib.import_module(package).__all__))
            for package, names in BEFORE.items()}
    assert not any(lost.values()), f"public names that disappeared: { {p: n for p, n in lost.items() if n} }"


def test_training_and_evaluation_are_public():
    assert {"training", "evaluation", "callbacks"} <= set(tfmec.__all__)
    assert callable(tfmec.training.fit_early_stopping) and callable(tfmec.evaluation.evaluate)
    assert tfmec.keras is keras


def test_api_doc_is_up_to_date():
    path = REPO_ROOT / "docs" / "api.md"
    assert path.read_text(encoding="utf-8") == api_doc.render(), (
        "docs/api.md is out of date with the @tfmec_export declarations; regenerate it with:\n"
        "    python -m tfmec.api_doc --write docs/api.md")


PUBLIC_LAYERS = sorted(name for name, obj in exported("tfmec.layers").items()
                       if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer))


def example_of(cls) -> str:
    """The code of the ``Example::`` block that follows the one-paragraph summary of ``cls``'s docstring."""
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")
    paragraphs = doc.split("\n\n")
    assert len(paragraphs) > 2 and paragraphs[1] == "Example::", (
        f"{cls.__name__}'s docstring must open with its summary, then an 'Example::' block")
    lines = doc.split("\n\n", 2)[2].splitlines()
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip() + "\n"


def test_public_layers_are_the_registered_ones():
    assert len(PUBLIC_LAYERS) >= 22, PUBLIC_LAYERS
    for name in PUBLIC_LAYERS:
        assert keras.saving.get_registered_name(getattr(tfmec.layers, name)) == f"tfmec>{name}"


@pytest.mark.parametrize("name", PUBLIC_LAYERS)
def test_layer_docstring_example_runs(name):
    """The example runs as written, and the shapes (and values) its comments state are the real ones."""
    code = example_of(getattr(tfmec.layers, name))
    namespace = {"np": np, "tf": tf, "tfmec": tfmec, "keras": keras}
    exec(compile(code, f"<{name} docstring example>", "exec"), namespace)
    claims = re.findall(r"^(\w+) = .*#\s*shape (\([\d, ]*\))(?:, values (\[.*\]))?", code, re.M)
    assert claims, f"{name}'s example states no output shape ('y = ...  # shape (2, 4)')"
    for var, shape, values in claims:
        assert tuple(namespace[var].shape) == eval(shape), (name, var)
        if values:
            np.testing.assert_allclose(np.asarray(namespace[var]), eval(values), rtol=1e-6)
