"""Samplers: small immutable objects passed to the one entry point :func:`sample`.

=====================  =========================================================
``EulerMaruyama``      reverse SDE, Euler-Maruyama (score_sde)
``ReverseDiffusion``   reverse SDE, discretised like the forward one (score_sde)
``PredictorCorrector`` reverse-diffusion predictor + Langevin corrector
``Ancestral``          DDPM ancestral sampling, any process
``DDIM``               DDIM with ``eta`` (0 = deterministic)
``Heun``               second-order probability-flow ODE, fixed steps
``DPMSolverPP``        multistep DPM-Solver++ (orders 1-3)
``UniPC``              DPM-Solver++ predictor + UniC corrector (orders 1-3)
``ProbabilityFlowODE`` adaptive embedded Runge-Kutta on the probability flow
=====================  =========================================================
"""

from diffjax.samplers.base import DISCRETE_SPACINGS, SPACINGS, Sampler, discrete_timesteps, sample, time_grid
from diffjax.samplers.pc import EulerMaruyama, PredictorCorrector, ReverseDiffusion
from diffjax.samplers.ancestral import DDIM, Ancestral
from diffjax.samplers.heun import Heun
from diffjax.samplers.dpm_solver import DPMSolverPP
from diffjax.samplers.unipc import UniPC
from diffjax.samplers.ode import ProbabilityFlowODE

__all__ = [
    "Sampler",
    "sample",
    "time_grid",
    "SPACINGS",
    "DISCRETE_SPACINGS",
    "discrete_timesteps",
    "EulerMaruyama",
    "ReverseDiffusion",
    "PredictorCorrector",
    "Ancestral",
    "DDIM",
    "Heun",
    "DPMSolverPP",
    "UniPC",
    "ProbabilityFlowODE",
]
