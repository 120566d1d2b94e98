"""Product-quantised embedding tables of several fields sharing ONE set of codebooks.

A small field pays for a private codebook (``K * d * 4`` bytes) whatever its vocabulary; sharing one
codebook among the small fields of the same width removes that overhead. The layer holds

* ``codes``: the codes of every field concatenated, ``[sum_f V_f, M]`` (``uint8``/``uint16``, or
  bit-packed ``uint8[sum_f V_f, ceil(M * bits / 8)]``), field ``f`` in rows
  ``[offset_f, offset_f + V_f)``;
* ``codebooks``: ONE ``float32[M, K, d / M]`` (and optionally one ``[d, d]`` projection),

and is called once per field, on that field's ids, with the field as a Python call argument::

    e_user = shared(user_ids, field=0)        # or field="user"
    e_item = shared(item_ids, field=1)

A functional model records the non-tensor ``field`` argument of each call, so ``.keras`` save/load and
``clone_model`` keep one layer (one codebook variable) called once per field. Ids outside
``[0, V_f)`` go to that field's OOV row (``oov_ids[f]``, default 0), then the field's offset is added;
the lookup is the same two plain gathers as :class:`~tfmec.layers.QuantizedEmbedding`.
"""
from __future__ import annotations

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.backend import register
from tfmec.layers._utils import MAX_ROWS, map_out_of_range_ids, renamed_kwargs, same_codebooks
from tfmec.layers.quantized_embedding import QuantizedEmbedding


@tfmec_export("tfmec.layers.SharedQuantizedEmbedding")
@register
@renamed_kwargs({"vocab_sizes": "input_dims"})
class SharedQuantizedEmbedding(QuantizedEmbedding):
    """One codebook set shared by the PQ tables of several fields (MEC stage 2, beyond the paper).

    Example::

        layer = tfmec.layers.SharedQuantizedEmbedding([100, 50], num_subspaces=2, num_codewords=8,
                                                      subspace_dim=4, field_names=["user", "item"])
        y = layer(tf.constant([1, 49]), field="item")   # shape (2, 8)

    Args:
        input_dims: ``[V_f]``, the number of ids of each field, in field order (``sum_f V_f < 2**31``);
            the layer's ``input_dim`` is ``sum_f V_f``, the rows of its ``codes``.
        num_subspaces, num_codewords, subspace_dim: ``M``, ``K`` and ``d / M``, common to every field.
        codes: optional integer ``[sum_f V_f, M]``: the fields' codes concatenated in field order.
        codebooks, projection, trainable_codebooks, bits, contrastive_weight, num_negatives,
            contrastive_temperature, seed, mask_zero: as in :class:`~tfmec.layers.QuantizedEmbedding` (one of each,
            shared).
        field_names: optional names of the fields (then ``field="name"`` works in calls).
        oov_ids: per-field OOV row (default 0 for every field), in the field's own id space.

    Deprecated keywords (accepted for one release with a ``DeprecationWarning``; old configs load
    silently): ``vocab_sizes`` (now ``input_dims``) and those of :class:`~tfmec.layers.QuantizedEmbedding`.

    Weights: ``codes`` (non-trainable, ``[sum_f V_f, M]`` or packed), ``codebooks``
    ``float32[M, K, d / M]``, ``projection`` ``[d, d]`` when enabled; ``storage_bytes`` is their size.

    Call: ``layer(ids, field=f)``: integer ids ``[...]`` (``[batch]``, ``[batch, 1]``,
    ``[batch, length]``...) of field ``f`` (an int index or a name in ``field_names``) -> ``[..., d]``;
    with ``mask_zero=True`` the mask is bool ``ids != 0`` (the ids' shape) whatever the field (id 0 of
    every field is padding) and id 0 does not count in the contrastive term. With ``training=True`` and
    ``contrastive_weight > 0`` each call adds ``beta * contrastive_loss`` on its looked-up ids (as one
    private layer per field would).
    """

    is_embedding_table = True

    def __init__(self, input_dims, num_subspaces: int, num_codewords: int, subspace_dim: int, codes=None,
                 field_names=None, oov_ids=None, **kwargs):
        sizes = [int(v) for v in input_dims]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"SharedQuantizedEmbedding: input_dims must be >= 1 each, got {input_dims}")
        if sum(sizes) > MAX_ROWS:
            raise ValueError(f"SharedQuantizedEmbedding: the fields hold {sum(sizes)} ids together; at most 2**31 - 1")
        if "input_dim" in kwargs or "oov_id" in kwargs:
            raise TypeError("SharedQuantizedEmbedding takes input_dims and oov_ids (one per field), not input_dim "
                            "or oov_id")
        super().__init__(sum(sizes), num_subspaces, num_codewords, subspace_dim, codes=codes, oov_id=0, **kwargs)
        self.input_dims = sizes
        self.offsets = [int(x) for x in np.concatenate([[0], np.cumsum(sizes)[:-1]])]
        self.field_names = None if field_names is None else [str(n) for n in field_names]
        if self.field_names is not None and (len(self.field_names) != len(sizes)
                                             or len(set(self.field_names)) != len(sizes)):
            raise ValueError(f"SharedQuantizedEmbedding: field_names must be {len(sizes)} distinct names")
        self.oov_ids = [0] * len(sizes) if oov_ids is None else [int(o) for o in oov_ids]
        if len(self.oov_ids) != len(sizes) or any(not 0 <= o < v for o, v in zip(self.oov_ids, sizes)):
            raise ValueError(f"SharedQuantizedEmbedding: oov_ids must hold one id in [0, V_f) per field, got {oov_ids}")

    @classmethod
    def from_codes(cls, field_codes, **kwargs) -> "SharedQuantizedEmbedding":
        """A layer for a list of :class:`tfmec.mec.codes.FieldCodes` that hold the same codebooks (a
        sharing group of stage 1), in field order; ``kwargs`` as in the constructor (``mask_zero``
        included). ``field_names`` defaults to the fields' names."""
        field_codes = list(field_codes)
        if not field_codes:
            raise ValueError("SharedQuantizedEmbedding.from_codes needs at least one FieldCodes")
        first = field_codes[0]
        for fc in field_codes[1:]:
            if not same_codebooks(first, fc):
                raise ValueError(f"fields {first.field!r} and {fc.field!r} do not share codebooks")
        m, k, sub = first.codebooks.shape
        kwargs.setdefault("field_names", [fc.field for fc in field_codes])
        return cls(
            input_dims=[fc.vocab_size for fc in field_codes],
            num_subspaces=m,
            num_codewords=k,
            subspace_dim=sub,
            codes=np.concatenate([fc.codes for fc in field_codes]),
            codebooks=first.codebooks,
            projection=first.projection,
            **kwargs,
        )

    @property
    def num_fields(self) -> int:
        return len(self.input_dims)

    def field_index(self, field) -> int:
        """The index of ``field`` (an int index or a name in ``field_names``)."""
        if isinstance(field, str):
            if self.field_names is None or field not in self.field_names:
                raise ValueError(f"{self.name}: unknown field {field!r}; fields: {self.field_names}")
            return self.field_names.index(field)
        if isinstance(field, bool) or not isinstance(field, (int, np.integer)):
            raise TypeError(f"{self.name}: field must be a Python int or a field name, got {field!r}")
        if not 0 <= int(field) < self.num_fields:
            raise ValueError(f"{self.name}: field {field} out of range [0, {self.num_fields})")
        return int(field)

    def _sanitize_ids(self, inputs, field=0):
        """Rows of ``inputs`` (ids of ``field``) in the concatenated table: OOV-mapped, then offset."""
        f = self.field_index(field)
        ids = map_out_of_range_ids(inputs, self.input_dims[f], self.oov_ids[f], self.name)
        return ids + self.offsets[f] if self.offsets[f] else ids

    def lookup_codes(self, ids, field=0):
        """The int32 codes ``[..., M]`` of ``field``'s ``ids`` (OOV-mapped), unpacked when bit-packed."""
        return self._codes_of_rows(self._sanitize_ids(ids, field))

    def call(self, inputs, field=0, training=None):
        """Integer ids ``[...]`` of ``field`` -> ``[..., d]``."""
        return self._embed_rows(self._sanitize_ids(inputs, field), training, self._counted(inputs))

    def get_config(self):
        config = super().get_config()
        config.pop("input_dim")
        config.pop("oov_id")
        config.update(input_dims=list(self.input_dims), field_names=self.field_names, oov_ids=list(self.oov_ids))
        return config


__all__ = ["SharedQuantizedEmbedding"]
