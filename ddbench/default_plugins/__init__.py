"""The host's own plugins, loaded through the `ddbench` entry-point group exactly as a third party's are.

One module per thing registered (as simonw/llm `llm/default_plugins/`): the kernel (`ddbench/*.py`) imports
none of them, so each can be read as an example plugin. A module that registers nothing is a helper of the
plugin module named beside it (it has no entry point).

- `datasets.py`              datasets: MNIST, Fashion-MNIST, CIFAR-10/100, Tiny-ImageNet, image folders
  (with `dataset_files.py`, what its readers share, and `tiny_imagenet.py`, the Tiny-ImageNet reader)
- `convnet_models.py`        models: the ConvNet of DC/DSA/DM and its width/depth/norm variants
- `crossarch_models.py`      models: MLP, LeNet, AlexNet, VGG-11, ResNet-18 (BN and AP) for cross-architecture tables
- `dsa_protocols.py`         protocols: `dsa` (1000 epochs, DSA) and `fast`
- `soft_label_protocol.py`   protocols: `soft` (a teacher relabels each augmented batch)
- `eccv2024.py`              protocols and the `challenge` command: the ECCV 2024 DD challenge's evaluation
- `launchers.py`             launchers: `local` (worker processes) and `slurm` (`slurm_launcher.py`)
- `full_data_method.py`      methods: `full` (the whole real training set, the HLR reference)
- `selectors.py`             selectors: `random`, `herding`, `k-center`, `k-means`, `confidence`
"""
