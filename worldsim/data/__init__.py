"""Training data (docs/design.md §3): the scripted explorer, datasets on disk, and the one loader."""

from worldsim.data.dataset import Dataset, DatasetWriter, load_dataset
from worldsim.data.explorer import Explorer
from worldsim.data.loader import GameClips, make_loader

__all__ = ["Dataset", "DatasetWriter", "Explorer", "GameClips", "load_dataset", "make_loader"]
