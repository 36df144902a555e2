"""Run in a subprocess by test_sampling_sharded.py with 8 fake CPU devices.

Samples one batch twice, sharded over a Mesh('data') and unsharded, for a
stochastic and a deterministic sampler; prints one JSON line with the largest
difference per sampler.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import diffjax as dj  # noqa: E402
import gaussians  # noqa: E402


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    data_sharding = NamedSharding(mesh, P("data"))
    sde = dj.VPSDE()
    data = gaussians.gaussian(dim=4, seed=0)
    x_init = sde.prior_sample(jax.random.key(0), (32, 4))
    key = jax.random.key(1)
    result = {}
    for name, sampler in [("euler_maruyama", dj.samplers.EulerMaruyama(20)), ("ddim", dj.samplers.DDIM(20))]:
        fn = functools.partial(dj.sample, data.score_fn(sde), sde, sampler=sampler)
        plain, _ = jax.jit(fn)(x_init, key=key)
        sharded, _ = jax.jit(fn, out_shardings=(data_sharding, None))(jax.device_put(x_init, data_sharding), key=key)
        assert len(sharded.sharding.device_set) == 8
        result[name] = float(np.max(np.abs(np.asarray(sharded) - np.asarray(plain))))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
