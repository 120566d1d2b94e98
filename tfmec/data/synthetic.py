"""tfmec's embedded default data set: a synthetic CTR stream shaped like Criteo.

13 numeric fields ``I1..I13`` (non-negative counts, about 10% missing) and 26 categorical fields
``C1..C26`` whose values are Zipf-distributed over vocabularies from 10 to 10^7 ids. Labels come from
a planted logistic model

    logit = b + sum_f w_f(x_f) + sum_{f<g} s_f s_g <v_f(x_f), v_g(x_g)> + sum_j a_j z_j

with per-value weights ``w`` and latent vectors ``v`` derived by hashing (so a 10^7-id field costs no
memory), i.e. an FM-shaped truth with strong pairwise field interactions: FM and DeepFM beat LR
clearly. Everything is a function of (seed, row number): the stream is deterministic by seed and
independent of the chunk size, and any number of rows can be streamed.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from tfmec.api_export import tfmec_export
from tfmec.data.hashing import hash_keys, mix64, normal_from, uniform01
from tfmec.data.readers.base import Chunk, Reader

NUM_NUMERIC = 13
NUM_CATEGORICAL = 26
_BLOCK = 8192  # rows generated per block; the stream does not depend on the caller's chunk size


def default_vocab_sizes(num_fields: int = NUM_CATEGORICAL, largest: int = 10**7) -> list[int]:
    """Vocabulary sizes spaced geometrically from 10 to ``largest``."""
    return [int(round(v)) for v in np.geomspace(10, largest, num_fields)]


@tfmec_export("tfmec.data.SyntheticCTR")
class SyntheticCTR(Reader):
    """A reader that generates Criteo-shaped rows instead of reading them.

    Args:
        rows: number of rows in the stream.
        seed: everything (values, planted model, labels) is a function of this seed.
        vocab_sizes: one vocabulary size per categorical field (default: 10 .. 10^7, geometric).
        zipf_exponent: exponent ``a`` of the Zipf law P(rank r) ~ r^-a of every categorical field.
        latent_dim: dimension of the planted interaction vectors.
        interaction_scale, linear_scale, numeric_scale: strengths of the three parts of the logit.
        positive_rate: the approximate share of positive labels (sets the bias).
    Chunks follow :mod:`tfmec.data.readers.base`: ``I*`` float64 with NaN for missing, ``C*`` str.
    """

    def __init__(
        self,
        rows: int = 100_000,
        seed: int = 0,
        vocab_sizes: Sequence[int] | None = None,
        zipf_exponent: float = 1.2,
        latent_dim: int = 4,
        interaction_scale: float = 0.55,
        linear_scale: float = 0.35,
        numeric_scale: float = 0.25,
        positive_rate: float = 0.25,
        num_numeric: int = NUM_NUMERIC,
    ):
        super().__init__(on_error="raise")
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.num_rows = int(rows)
        self.seed = int(seed)
        self.vocab_sizes = list(vocab_sizes) if vocab_sizes is not None else default_vocab_sizes()
        if any(v < 2 for v in self.vocab_sizes):
            raise ValueError("every vocabulary size must be >= 2")
        if zipf_exponent <= 0 or zipf_exponent == 1.0:
            raise ValueError("zipf_exponent must be > 0 and != 1")
        self.zipf_exponent = float(zipf_exponent)
        self.latent_dim = int(latent_dim)
        self.interaction_scale = float(interaction_scale)
        self.linear_scale = float(linear_scale)
        self.numeric_scale = float(numeric_scale)
        self.num_numeric = int(num_numeric)
        self.positive_rate = float(positive_rate)
        self.columns = [(f"I{i + 1}", "numeric") for i in range(self.num_numeric)]
        self.columns += [(f"C{i + 1}", "categorical") for i in range(len(self.vocab_sizes))]
        self.label = "label"
        self.description = f"synthetic CTR data (seed {self.seed}, {self.num_rows} rows)"
        # Fields with small vocabularies carry the interactions; huge ones are mostly tail noise.
        self._field_scale = np.where(np.asarray(self.vocab_sizes) <= 10**5, 1.0, 0.35)
        self._numeric_weight = normal_from(hash_keys(self.seed, 7, np.arange(self.num_numeric)))
        self._bias = None

    # --- the planted model -------------------------------------------------------------------
    def _ranks(self, block: int, n: int, field: int) -> np.ndarray:
        """Zipf ranks in [1, V] for ``n`` rows of one field (inverse CDF of the continuous law)."""
        u = uniform01(hash_keys(self.seed, 1, block, field, np.arange(n)))
        a, v = self.zipf_exponent, float(self.vocab_sizes[field])
        r = ((v ** (1.0 - a) - 1.0) * u + 1.0) ** (1.0 / (1.0 - a))
        return np.clip(np.floor(r), 1, v).astype(np.int64)

    def _logit_parts(self, ranks: np.ndarray, numeric_z: np.ndarray) -> np.ndarray:
        """Unbiased logit for ``ranks[rows, F]`` and standardised numerics ``numeric_z[rows, J]``."""
        fields = np.arange(ranks.shape[1])
        lin = normal_from(hash_keys(self.seed, 2, fields[None, :], ranks)).sum(axis=1)
        lin *= self.linear_scale / np.sqrt(ranks.shape[1])
        k = np.arange(self.latent_dim)
        v = normal_from(hash_keys(self.seed, 3, fields[None, :, None], ranks[:, :, None], k[None, None, :]))
        v *= self._field_scale[None, :, None]
        sum_v = v.sum(axis=1)
        pair = 0.5 * ((sum_v**2).sum(axis=1) - (v**2).sum(axis=(1, 2)))
        n_pairs = max(1.0, float(self._field_scale.sum()) ** 2 / 2.0)
        pair *= self.interaction_scale * 4.0 / np.sqrt(n_pairs * self.latent_dim)
        num = (numeric_z * self._numeric_weight[None, :]).sum(axis=1)
        num *= self.numeric_scale / np.sqrt(max(1, numeric_z.shape[1]))
        return lin + pair + num

    def _numeric(self, block: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw counts ``float64[rows, J]`` (NaN = missing) and their standardised log, NaN -> 0."""
        j = np.arange(self.num_numeric)
        g = normal_from(hash_keys(self.seed, 4, block, np.arange(n)[:, None], j[None, :]))
        scale = 1.0 + 2.5 * uniform01(hash_keys(self.seed, 5, j))[None, :]
        raw = np.floor(np.expm1(np.abs(g) * scale))
        missing = uniform01(hash_keys(self.seed, 6, block, np.arange(n)[:, None], j[None, :])) < 0.1
        raw[missing] = np.nan
        z = np.where(missing, 0.0, np.abs(g) - 0.798)
        return raw, z

    def _bias_value(self) -> float:
        """Bias giving about ``positive_rate`` positives, found on a calibration block."""
        if self._bias is None:
            ranks = np.stack([self._ranks(-1, 4096, f) for f in range(len(self.vocab_sizes))], axis=1)
            _, z = self._numeric(-1, 4096)
            logits = self._logit_parts(ranks, z)
            lo, hi = -20.0, 20.0
            for _ in range(60):
                mid = (lo + hi) / 2
                rate = (1.0 / (1.0 + np.exp(-(logits + mid)))).mean()
                lo, hi = (mid, hi) if rate < self.positive_rate else (lo, mid)
            self._bias = (lo + hi) / 2
        return self._bias

    def probabilities(self, chunk_ranks: np.ndarray, numeric_z: np.ndarray) -> np.ndarray:
        """The planted click probability of rows given their ranks and standardised numerics."""
        return 1.0 / (1.0 + np.exp(-(self._logit_parts(chunk_ranks, numeric_z) + self._bias_value())))

    # --- streaming ---------------------------------------------------------------------------
    def encoded_rows(self, start_block: int, num_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of blocks ``start_block .. start_block + num_blocks - 1`` already encoded, skipping
        strings and vocabularies: for tables sized to the whole id space (scale benchmarks).

        Returns ``(ids int32[rows, F], numeric float32[rows, J], labels float32[rows])`` where
        ``ids[:, f]`` is the Zipf rank in ``[1, vocab_sizes[f]]`` (0 is left free for OOV, so a table
        needs ``vocab_sizes[f] + 1`` rows) and ``numeric`` the standardised numerics; the labels are
        those of the string stream's rows in the same blocks.
        """
        parts = [self._block_values(block, _BLOCK) for block in range(start_block, start_block + num_blocks)]
        return (np.concatenate([p[0] for p in parts]).astype(np.int32),
                np.concatenate([p[2] for p in parts]).astype(np.float32),
                np.concatenate([p[3] for p in parts]))

    def _block_values(self, block: int, n: int):
        """``(ranks int64[n, F], raw numerics float64[n, J], standardised numerics [n, J], labels
        float32[n])`` of one block: what both the string stream and :meth:`encoded_rows` are made of."""
        ranks = np.stack([self._ranks(block, n, f) for f in range(len(self.vocab_sizes))], axis=1)
        raw_num, z = self._numeric(block, n)
        p = self.probabilities(ranks, z)
        labels = (uniform01(hash_keys(self.seed, 8, block, np.arange(n))) < p).astype(np.float32)
        return ranks, raw_num, z, labels

    def _block(self, block: int, n: int) -> Chunk:
        ranks, raw_num, _, labels = self._block_values(block, n)
        feats = {f"I{j + 1}": raw_num[:, j] for j in range(self.num_numeric)}
        for f in range(len(self.vocab_sizes)):
            # value = a hashed 32-bit token of (field, rank), hex like Criteo's
            token = mix64(hash_keys(self.seed, 9, f, ranks[:, f])) >> np.uint64(32)
            feats[f"C{f + 1}"] = np.char.mod("%08x", token.astype(np.int64)).astype(object)
        return Chunk(feats, labels, np.zeros(0, np.int64))

    def _chunks(self, chunk_size: int) -> Iterator[Chunk]:
        done, block = 0, 0
        while done < self.num_rows:
            n = min(_BLOCK, self.num_rows - done)
            chunk = self._block(block, n)
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                yield Chunk({k: v[start:stop] for k, v in chunk.features.items()}, chunk.labels[start:stop], chunk.row_index)
            done += n
            block += 1
