"""Training: models, distributed backends (Horovod / torch.distributed / single), checkpoints,
the training loop and the `final` stage. See docs/training.md."""
from hpcaug.train.checkpoint import load_checkpoint, save_checkpoint
from hpcaug.train.dist import Dist, init_dist
from hpcaug.train.loop import TrainHooks, TrainResult, evaluate, train
from hpcaug.train.models import build_model

__all__ = ["Dist", "init_dist", "build_model", "save_checkpoint", "load_checkpoint", "train", "evaluate",
           "TrainHooks", "TrainResult"]
