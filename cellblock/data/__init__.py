"""Training data: config, normalization, labels, splits, a torch Dataset, batch augmentation.

Typical use::

    packed = PackedDataset(path)
    config = DataConfig.from_dict(yaml_config["data"])
    labels = dataset_labels(packed, config)
    train_rows, val_rows = select_rows(packed.metadata, config, labels)
    dataset = SiteDataset(packed, train_rows, config, labels, normalize=False)  # uint8 items
    normalize = dataset.batch_normalizer().to(device)
    augment = BatchAugment(config.augment, config.crop, seed).to(device)
    for images, target, index in make_loader(dataset, 64, train=True, workers=4):
        images = augment(normalize(images.to(device, non_blocking=True), torch.from_numpy(index)))
"""

from cellblock.data.augment import BatchAugment, d4
from cellblock.data.config import AugmentConfig, DataConfig
from cellblock.data.dataset import SiteDataset, dataset_labels
from cellblock.data.labels import control_classes, make_labels, n_classes, read_pseudo_labels
from cellblock.data.loader import make_loader, read_batches
from cellblock.data.normalize import BatchNormalizer, Normalizer, pool_stats
from cellblock.data.splits import assign_folds, select_rows, validation_experiments

__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "BatchNormalizer",
    "DataConfig",
    "Normalizer",
    "SiteDataset",
    "assign_folds",
    "control_classes",
    "d4",
    "dataset_labels",
    "make_labels",
    "make_loader",
    "n_classes",
    "pool_stats",
    "read_batches",
    "read_pseudo_labels",
    "select_rows",
    "validation_experiments",
]
