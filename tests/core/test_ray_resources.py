"""What a ``--backend ray`` worker's actor asks the cluster for (no Ray needed)."""

from __future__ import annotations

import pytest
from mergestudio.search.ray_backend import RayBackendError, actor_resources, workers_that_fit

CPU_ONLY = {"CPU": 8.0}
FOUR_GPUS = {"CPU": 32.0, "GPU": 4.0}


@pytest.mark.parametrize(
    ("device", "gpus", "cluster", "expected"),
    [
        ("cpu", None, FOUR_GPUS, (2.0, 0.0, "cpu")),  # a CPU spec stays on CPUs, GPUs or not
        ("cuda", None, FOUR_GPUS, (2.0, 1.0, "cuda")),
        ("cuda:3", None, FOUR_GPUS, (2.0, 1.0, "cuda")),  # Ray shows the actor only its own GPU
        ("auto", None, FOUR_GPUS, (2.0, 1.0, "cuda")),
        ("auto", None, CPU_ONLY, (2.0, 0.0, "cpu")),
        ("cuda", 0.5, FOUR_GPUS, (2.0, 0.5, "cuda")),  # two candidates share a GPU
        ("cuda", 0.0, FOUR_GPUS, (2.0, 0.0, "cpu")),  # asked for none: CPU
    ],
)
def test_an_actor_asks_for_the_devices_its_spec_evaluates_on(
    device: str, gpus: float | None, cluster: dict[str, float], expected: tuple[float, float, str]
) -> None:
    assert actor_resources(device, 2, gpus, cluster) == expected


def test_a_gpu_spec_on_a_cluster_without_gpus_is_refused() -> None:
    with pytest.raises(RayBackendError, match=r"each worker needs 1 GPU\(s\) \(evaluation device 'cuda'\).*has 0"):
        actor_resources("cuda", 1, None, CPU_ONLY)
    with pytest.raises(RayBackendError, match="needs 2 GPU"):
        actor_resources("cpu", 1, 2.0, {"CPU": 4.0, "GPU": 1.0})


def test_as_many_workers_as_the_cluster_holds() -> None:
    assert workers_that_fit(2.0, 0.0, CPU_ONLY) == 4
    assert workers_that_fit(1.0, 1.0, FOUR_GPUS) == 4  # GPUs bound it
    assert workers_that_fit(1.0, 0.5, FOUR_GPUS) == 8
    assert workers_that_fit(16.0, 0.0, CPU_ONLY) == 1  # at least one, which waits for room
