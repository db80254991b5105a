"""The shared ground every stage stands on: errors, config, file I/O, image reading, Zarr shards, seeds, schedules, metrics."""
