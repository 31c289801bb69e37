"""User-supplied arrays in a NumPy ``.npz`` file (the layout of the common ``mnist.npz``).

The file holds four arrays::

    x_train  uint8 or float [N, H, W] or [N, H, W, C]   (uint8 is divided by 255,
                                                         floats must lie in [0, 1])
    y_train  integer [N]
    x_test   same layout as x_train
    y_test   integer [M]

Anything else (a missing key, a wrong rank, counts that disagree, float labels, no such file)
is a one-line ValueError that names the problem.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from gru_jax.data.image_dataset import ImageDataset, make_image_dataset

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Loads an `ImageDataset` from an ``.npz`` file with keys x_train, y_train, x_test, y_test.

    Returns:
      The dataset named ``'npz:<path>'``; num_classes is max label + 1.
    """
    name = f"npz:{os.fspath(path)}"
    if not os.path.isfile(path):
        raise ValueError(f"{name}: file not found")
    try:
        # allow_pickle=False: an .npz of plain arrays never needs it, and a pickle can run code.
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{name}: not a readable .npz file ({_first_line(error)})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: expected an .npz archive of named arrays, got a single array")
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(
                f"{name}: missing key(s) {missing}; expected keys {list(NPZ_KEYS)}, "
                f"found {sorted(archive.files)}"
            )
        arrays = {}
        for key in NPZ_KEYS:
            try:
                arrays[key] = archive[key]
            except ValueError as error:  # object arrays need pickle
                raise ValueError(f"{name}: cannot read '{key}' ({_first_line(error)})") from error
    return make_image_dataset(**arrays, name=name)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
