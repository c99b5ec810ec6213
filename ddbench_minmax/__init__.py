"""Min-Max Diffusion generative dataset distillation (Fan et al.) as a ddbench plugin."""
