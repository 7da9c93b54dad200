"""DiffIR: an efficient diffusion model for image restoration (Xia et al., ICCV 2023)."""
