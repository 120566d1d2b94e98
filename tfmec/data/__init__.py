"""tfmec.data: feature schema, vocabularies with counts, readers, splits and the tf.data pipeline."""
from tfmec.api_export import public_names
from tfmec.data import errors, pipeline, readers, schema, split, synthetic, transforms, vocabulary

# every name exported as tfmec.data.* by the modules above (@tfmec_export, export_value); the readers and
# open_reader are public in tfmec.data.readers too
__all__ = public_names(globals(), errors, pipeline, readers, schema, split, synthetic, transforms, vocabulary)
