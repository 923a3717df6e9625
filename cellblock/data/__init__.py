"""Training data: config, normalization, labels, splits, a torch Dataset, batch augmentation.

Modules: ``config`` (``DataConfig``, ``AugmentConfig``: light, no torch), ``labels``,
``splits``, ``normalize``, ``dataset`` (``SiteDataset``), ``loader``, ``augment``. Nothing
is imported here: import the submodules, so that reading a config costs no torch.

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
