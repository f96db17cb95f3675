"""ppocma_jax: PPO-CMA (Hämäläinen et al.) as one jit-compiled JAX program.

Public API:
    Config, HParams      static configuration and the dynamic hyperparameter pytree
    make_train           make_train(config) -> train(key, hparams=None) -> (TrainState, metrics)
    make_env, list_envs  environments behind one protocol
    wrap_env, EnvError   your own env object (our Env protocol, a gymnax Environment) -> Env; make_train(config, env=obj)
    Agent                act / memorize / update_with_memorized for any Python simulator (the same compiled update)
"""

from .agent import Agent
from .config import MODES, Config, ConfigError, HParams
from .envs import EnvError, list_envs, make_env, wrap_env
from .metrics import METRIC_NAMES
from .train import Trainer, TrainState, make_train

__all__ = ["Agent", "Config", "HParams", "ConfigError", "MODES", "make_train", "Trainer", "TrainState", "METRIC_NAMES",
           "make_env", "list_envs", "wrap_env", "EnvError"]
__version__ = "0.1.0"
