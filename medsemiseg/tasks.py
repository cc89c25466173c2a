"""The two tasks the package ships a bundle and a synthetic data set for, in one place.

Each :class:`Task` holds the facts the package's layers need about a bundle without reading its configs: the image
channels, the default classes, the DICOM modalities its network was trained on, and how its images are named in
messages. The bundle layer (inference input checks), the cost benchmark (network shapes) and the built-in data sets
(which tasks have phantoms) read them from :data:`TASKS`; ``tests/test_tasks.py`` checks them against each bundle's
``configs/train.json`` and ``configs/metadata.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TASKS", "Task", "get_task", "task_for_channels"]


@dataclass(frozen=True)
class Task:
    """One bundle's task.

    Attributes:
        name: the bundle folder (``bundles/<name>``) and the ``task`` key of its configs.
        in_channels: image channels the network reads.
        classes: the default classes (``default_classes``), background first.
        images: what its images are, as messages name them (``"grey CT images"``).
        modalities: the DICOM modalities its network was trained on (empty: not checked).
        synthetic: whether :mod:`medsemiseg.data.builtin` generates a synthetic data set for it.
    """

    name: str
    in_channels: int
    classes: tuple[str, ...]
    images: str
    modalities: tuple[str, ...] = ()
    synthetic: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)


TASKS: dict[str, Task] = {
    "covid": Task("covid", 1, ("background", "ground-glass", "consolidation", "pleural effusion"),
                  "grey CT images", modalities=("CT",)),
    "chase": Task("chase", 3, ("background", "vessel"), "RGB fundus photographs"),
}


def get_task(name: str) -> Task:
    """The task named ``name``.

    Raises:
        ValueError: no such task; the message lists the tasks.
    """
    try:
        return TASKS[str(name)]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}.") from None


def task_for_channels(in_channels: int) -> Task | None:
    """The task whose network reads ``in_channels`` channels, else ``None``."""
    return next((t for t in TASKS.values() if t.in_channels == int(in_channels)), None)
