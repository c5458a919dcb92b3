"""Training: SPIN-npz datasets, augmentation, losses, the HMR decoder loop, feature cache, DDP."""
