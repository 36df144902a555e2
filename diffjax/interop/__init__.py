"""Reading checkpoints published for other frameworks (PyTorch, diffusers, guided-diffusion)."""
