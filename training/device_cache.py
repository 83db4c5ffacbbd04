"""Training cells decoded once into device memory, so that an epoch moves indices instead of pixels.

A loader that decodes every epoch fed an H100 about 4,900 cells/s, below MobileNetV2's 5,900
(``benchmarks/results/``): the main process had to pass 39 MB of pixels a batch on to the GPU. Decoded, the 7,108
cells of C-NMC's two folds are 2.2 GB of uint8 at 320 px, which a GPU holds with room to spare; each batch is then
a gather on the device, and the augmentation (:class:`training.transforms.BatchAugment`) works on it as it would on
a decoded batch: the same pixels, in the same order.
"""

from __future__ import annotations

import datasets
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cnmc.preprocessing import CellNormalization
from training.evaluate import make_loader
from training.transforms import decoder

# A run keeps its cells on the GPU by default when they take at most this share of its free memory.
FREE_MEMORY_SHARE = 0.25


class DecodedCells:
    """Every cell of a dataset as uint8 at one size, and its label, in row order, on one device."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor):
        self.pixels = pixels  # (n, h, w, c): a gather of whole cells reads contiguous memory
        self.labels = labels

    @classmethod
    def decode(
        cls,
        dataset: datasets.Dataset,
        size: int,
        device: torch.device,
        *,
        num_workers: int,
        show_progress: bool = True,
        cell_normalization: CellNormalization | None = None,
    ) -> DecodedCells:
        pixels = torch.empty((len(dataset), size, size, 3), dtype=torch.uint8, device=device)
        loader = make_loader(dataset, decoder(size, cell_normalization), 256, shuffle=False, num_workers=num_workers)
        start = 0
        for batch in tqdm(loader, desc="Decoding the training cells once", disable=not show_progress, leave=False):
            decoded = batch["pixel_values"]  # (n, c, h, w) viewed over (n, h, w, c) memory
            pixels[start : start + len(decoded)] = decoded.permute(0, 2, 3, 1).to(device, non_blocking=True)
            start += len(decoded)
        return cls(pixels, torch.tensor(dataset["label"], device=device))

    def loader(self, batch_size: int, *, seed: int) -> DataLoader:
        """Batches of row indices, shuffled as ``make_loader(dataset, ..., shuffle=True, seed=seed)`` shuffles rows.

        Plain integers: fetching even two columns of 128 rows through ``datasets`` costs the host ten times as much,
        and for a small model on a GPU the host's time per step is the step's time.
        """
        return DataLoader(
            range(len(self.labels)),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=torch.cuda.is_available(),
        )

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cells at ``index``, (n, c, h, w) channels-last as the decoding loader lays them out, and their labels."""
        index = index.to(self.pixels.device, non_blocking=True)  # a blocking copy would wait for the GPU
        return self.pixels[index].permute(0, 3, 1, 2), self.labels[index]

    @staticmethod
    def fit_on(device: torch.device, cells: int, size: int) -> bool:
        """Whether ``cells`` decoded cells of ``size`` px belong in ``device``'s memory: GPUs only, with room to spare.

        On a CPU the decoding is a small part of a step, and the memory is the machine's.
        """
        if device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return cells * size * size * 3 <= FREE_MEMORY_SHARE * free
