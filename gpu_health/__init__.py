"""GPU health: NVML sampling agent (real and scripted fake backends) and the GPU health rules.

- ``gpu_health.backend``: the backend interface (one method per NVML field group).
- ``gpu_health.nvml``: the real backend on nvidia-ml-py; ``gpu_health.fake``: scenario-driven fake.
- ``gpu_health.sampler``: one sampling pass -> metric points (names in ``gpu_health.names``).
- ``gpu_health.agent``: ``mlvigil agent`` and the in-process agent component.
- ``gpu_health.health``: the server-side Detector running the rules in ``gpu_health.rules``.
- ``gpu_health.plugin``: the ``gpu`` section's plugin for ``mlvigil serve``.
"""
