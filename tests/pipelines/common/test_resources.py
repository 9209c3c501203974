import pytest

from pipelines.common.naming import new_run_name
from pipelines.common.resources import cpu_share, torch_threads, wants_gpu


def test_cpu_share_rounds_down_to_exact_steps_within_bounds():
    assert cpu_share(1.0, 1, cap=1.0) == 1.0
    assert cpu_share(1.0, 3) == 0.3  # 0.333 -> 0.3, exactly
    assert cpu_share(0.95, 1) == 0.95 and cpu_share(0.9, 2) == 0.45
    assert cpu_share(7.0, 2, cap=1.0) == 1.0
    assert cpu_share(0.01, 4) == 0.1  # never below the minimum
    assert cpu_share(0.01, 4, minimum=0.0) == 0.0
    assert cpu_share(1.5, 1) == pytest.approx(1.5)


def test_gpus_are_asked_for_only_where_they_exist():
    assert wants_gpu(None, {"CPU": 2}) is False
    assert wants_gpu(None, {"CPU": 2, "GPU": 1}) is True
    assert wants_gpu(False, {"GPU": 4}) is False
    with pytest.raises(ValueError, match="no GPU"):
        wants_gpu(True, {"CPU": 2})


def test_threads_follow_whole_cpus():
    assert torch_threads(None, 0.45) == 1 and torch_threads(None, 1.5) == 2 and torch_threads(3, 0.5) == 3


def test_run_names_are_unique_and_sortable():
    a, b = new_run_name("score"), new_run_name("score")
    assert a != b and a.startswith("score-") and len(a.split("-")) == 4
