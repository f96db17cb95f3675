"""The tests' tiny configurations (and a tiny flax network, Tiny), in one place: as Config keyword arguments and as the CLI flags that give the same
Config. Tests that share a configuration share its compiled programs through the session's compilation cache
(tests/conftest.py), so a new test should take one of these, with as few changes as it needs."""

import flax.linen as nn
import jax.numpy as jnp

from ppocma_jax import Config

# Pendulum, 2 iterations of 512 steps: what tests/test_train.py, test_sweep.py and test_library.py train.
TINY = dict(env="gymnax/Pendulum-v1", max_steps=1024, iter_steps=512, n_envs=8, n_updates=8, batch_size=64,
            hidden_units=16, pretrain_steps=20, history_buffer_size=3)

# Pendulum, 800-step iterations on 4 envs: the run that tests/test_faults.py interrupts, damages and resumes.
FAULTS = dict(env="gymnax/Pendulum-v1", iter_steps=800, n_envs=4, n_updates=5, hidden_units=16, pretrain_steps=20)


def tiny_config(base: dict = TINY, **changes) -> Config:
    """Config(**base) with `changes` applied."""
    return Config(**{**base, **changes})


def cli_flags(settings: dict) -> list[str]:
    """`--iter-steps 512 ...`: the CLI flags giving the same settings."""
    flags: list[str] = []
    for name, value in settings.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


class Tiny(nn.Module):
    """A small flax network: tanh hidden layer, linear output."""
    out: int

    @nn.compact
    def __call__(self, x):
        hidden = jnp.tanh(nn.Dense(8, name="hidden")(x))
        return nn.Dense(self.out, name="out")(hidden)
