"""The diffusion backbone: the model directory, the VAE latents, the pipeline, the demo model it trains."""
