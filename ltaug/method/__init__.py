"""The method: the IL networks, iterated learning and its checkpoints, CAM maps, pairing, fusion, generation."""
