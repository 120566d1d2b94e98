"""tfmec.data: feature schema, vocabularies with counts, readers, splits and the tf.data pipeline."""
from tfmec.data.errors import DataError
from tfmec.data.pipeline import CTRData, FeatureEncoder, default_schema, load
from tfmec.data.readers import (
    AvazuReader,
    CriteoReader,
    CSVReader,
    LibSVMReader,
    MindReader,
    MovieLensReader,
    ParquetReader,
    TFRecordReader,
    open_reader,
)
from tfmec.data.readers.base import Chunk, Reader
from tfmec.data.schema import CATEGORICAL, NUMERIC, Field, Schema
from tfmec.data.split import assign_splits
from tfmec.data.synthetic import SyntheticCTR
from tfmec.data.transforms import criteo_log_square
from tfmec.data.vocabulary import OOV_ID, NumericStats, Vocabulary, load_vocabularies, save_vocabularies

__all__ = [
    "DataError", "CTRData", "FeatureEncoder", "default_schema", "load",
    "AvazuReader", "CriteoReader", "CSVReader", "LibSVMReader", "MindReader", "MovieLensReader", "ParquetReader", "TFRecordReader", "open_reader",
    "Chunk", "Reader", "CATEGORICAL", "NUMERIC", "Field", "Schema", "assign_splits", "SyntheticCTR",
    "criteo_log_square", "OOV_ID", "NumericStats", "Vocabulary", "load_vocabularies", "save_vocabularies",
]
