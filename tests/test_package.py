"""The library's promise to notebook users: importing memae never imports Ray or MLflow."""

import subprocess
import sys


def test_memae_imports_without_ray_or_mlflow():
    code = (
        "import pkgutil, sys, memae\n"
        "for m in pkgutil.walk_packages(memae.__path__, 'memae.'):\n"
        "    __import__(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dataset_readers_and_the_synthetic_writer_do_not_import_torch():
    for module in ("memae.datasets", "experiments.synthetic"):  # a fresh interpreter each: a failure names its module
        code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
        assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0, module


def test_lazy_exports_resolve():
    import memae

    assert memae.AutoEncoderCov3DMem.__name__ == "AutoEncoderCov3DMem"
    assert set(memae.__all__) <= set(dir(memae))
