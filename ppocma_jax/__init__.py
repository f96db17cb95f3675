"""ppocma_jax: PPO-CMA (Hämäläinen et al.) as one jit-compiled JAX program.

Public API:
    Config, HParams      static configuration and the dynamic hyperparameter pytree
    make_train           make_train(config) -> train(key, hparams=None) -> (TrainState, metrics)
    make_env, list_envs  environments behind one protocol
    Agent                act / memorize / update_with_memorized for any Python simulator (the same compiled update)
"""

from .agent import Agent
from .config import MODES, Config, ConfigError, HParams
from .envs import list_envs, make_env
from .train import METRIC_NAMES, Trainer, TrainState, make_train

__all__ = ["Agent", "Config", "HParams", "ConfigError", "MODES", "make_train", "Trainer", "TrainState", "METRIC_NAMES",
           "make_env", "list_envs"]
__version__ = "0.1.0"
