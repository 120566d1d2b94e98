"""tfmec.backend: the Keras flavour follows TF_USE_LEGACY_KERAS, and a non-TensorFlow backend is refused."""
import os
import re
import subprocess
import sys

from tfmec.backend import IS_LEGACY_KERAS, KERAS_MODE, keras, legacy_keras_requested


def test_mode_follows_environment():
    assert IS_LEGACY_KERAS == legacy_keras_requested()
    if IS_LEGACY_KERAS:
        assert keras.__name__.startswith("tf_keras") and KERAS_MODE == "tf-keras"
    else:
        assert keras.__version__.startswith("3.") and KERAS_MODE == "keras3"


def test_only_backend_imports_keras():
    root = os.path.join(os.path.dirname(__file__), "..", "tfmec")
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "backend.py":
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                for line in text.splitlines():
                    s = line.strip()
                    # the keras / tf_keras packages themselves (not keras_tuner and the like)
                    if re.match(r"(import|from)\s+(keras|tf_keras)(\.|\s|,|$)", s):
                        offenders.append(f"{name}: {s}")
    assert offenders == []


def _import_in_subprocess(env_extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env_extra}
    code = "import tfmec.backend as b; print(b.KERAS_MODE)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_non_tensorflow_backend_is_a_clear_error():
    result = _import_in_subprocess({"KERAS_BACKEND": "jax", "TF_USE_LEGACY_KERAS": "0"})
    assert result.returncode != 0
    assert "tfmec needs Keras with the TensorFlow backend" in result.stderr


def test_legacy_switch_selects_tf_keras():
    result = _import_in_subprocess({"TF_USE_LEGACY_KERAS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tf-keras"
