"""Export a (MEC-compressed) CTR model for TF Serving and ONNX Runtime, and check both against Keras.

    python examples/export_serving.py                 # embedded synthetic data, exports under /tmp
    python examples/export_serving.py saved_models    # exports under saved_models/

Afterwards TF Serving can serve the SavedModel as is, e.g.::

    docker run -p 8501:8501 -v $PWD/saved_models/ctr:/models/ctr -e MODEL_NAME=ctr tensorflow/serving
    curl -d '{"instances": [{"I1": 3.0, ..., "C1": "68fd1e64", ...}]}' localhost:8501/v1/models/ctr:predict
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf

import tfmec
from tfmec import export
from tfmec.training import compile_ctr, fit_early_stopping


def main(argv):
    out = argv[0] if argv else "/tmp/tfmec_export_example"
    reader = tfmec.data.SyntheticCTR(rows=20_000, seed=0)
    data = tfmec.data.load(reader, seed=0, batch_size=512)
    model = tfmec.models.DeepFM(data.schema, embedding_dim=16, seed=0)
    compile_ctr(model, learning_rate=2e-3)
    fit_early_stopping(model, data.train, data.valid, epochs=2, patience=1)

    # MEC: 16 codewords per sub-space, codes bit-packed at 4 bits (they stay packed on disk)
    codes = tfmec.mec.learn_codes(model, data.frequencies, num_subspaces=4, num_codewords=16, epochs=2)
    small = tfmec.mec.compress_embeddings(model, codes, bits=4)

    # 1. SavedModel for TF Serving: out/ctr/<version>/, written atomically
    path = export.saved_model(small, os.path.join(out, "ctr"), data.encoder)
    print("SavedModel:", path, f"{export.directory_bytes(path):,} bytes")
    # 2. ONNX (integer-id inputs) + out/ctr.vocabulary.json beside it
    onnx_path = export.onnx(small, os.path.join(out, "ctr.onnx"), data.encoder)
    print("ONNX:", onnx_path, f"{os.path.getsize(onnx_path):,} bytes")

    # 3. A TF Serving REST request in row form, answered by the SavedModel's serving_default
    chunk = next(reader.chunks(3))
    instances = []
    for i in range(3):
        row = {}
        for field in data.schema:
            value = chunk.features[field.source][i]
            row[field.name] = str(value) if field.kind == "categorical" else float(value)
        instances.append(row)
    body = json.dumps({"instances": instances})  # missing counts are NaN, which TF Serving's JSON accepts
    signatures = tf.saved_model.load(path).signatures
    print("REST response:", export.predict_request(signatures, body))

    # 4. Parity with Keras: raw rows through serving_default, encoded rows through ONNX Runtime
    ids = data.encoder.encode(chunk.features)
    p_keras = export.keras_probabilities(small, ids)
    p_sm = np.asarray(export.predict_request(signatures, body)["predictions"]).reshape(-1)
    p_onnx = export.predict_onnx(onnx_path, ids)
    print(f"max |SavedModel - Keras| = {export.max_abs_diff(p_sm, p_keras):.2e}, "
          f"max |ONNX - Keras| = {export.max_abs_diff(p_onnx, p_keras):.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
